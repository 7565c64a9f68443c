"""Every task of the playground in a real browser: upload, drop or record, watch the answer stream in."""

import base64
import io
import json
import re
from datetime import timedelta

import pytest
import srt
import webvtt

from tests.browser import playground as ui
from tests.browser.conftest import ARTIFACTS, INSECURE_HOST, KEY
from tests.browser.playground import expect
from tests.support.app import MODEL


def test_transcribe_streams_the_answer_with_timing_and_subtitles(server, page, tmp_path):
    ui.open_page(page, server)
    page.set_input_files("#file-input", ui.clip(tmp_path))
    expect(page.locator("#clip-name")).to_have_text("clip.wav")
    expect(page.locator("#clip-duration")).to_have_text("2.0 s")
    ui.count_output_changes(page)
    text = ui.run(page)
    assert text.strip() and page.evaluate("window.outputChanges") >= 3, "the answer did not arrive in pieces"
    ui.assert_timing(page, 2.0)

    name, txt = ui.download(page, "txt")
    assert (name, txt) == ("clip.txt", text)
    name, body = ui.download(page, "srt")
    cues = list(srt.parse(body))
    assert name == "clip.srt" and len(cues) == 1
    assert (cues[0].start, cues[0].end) == (timedelta(0), timedelta(seconds=2))
    assert ui.words(cues[0].content) == ui.words(text)  # greedy: the server transcribed the same again
    name, body = ui.download(page, "vtt")
    captions = webvtt.from_buffer(io.StringIO(body)).captions
    assert name == "clip.vtt" and len(captions) == 1
    assert (captions[0].start, captions[0].end) == ("00:00:00.000", "00:00:02.000")
    assert ui.words(captions[0].text) == ui.words(text)

    page.click("#code-toggle")
    expect(page.locator("#code-text")).to_contain_text(f"curl -sN {server}/v1/audio/transcriptions")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground.png", full_page=True)


@pytest.mark.parametrize("task", ["translate", "ask", "describe", "music", "emotion"])
def test_every_other_task_streams_an_answer(server, page, tmp_path, task):
    ui.open_page(page, server)
    clip = ui.clip(tmp_path, 1.5)
    ui.drop(page, clip)
    expect(page.locator("#clip-duration")).to_have_text("1.5 s")
    ui.choose(page, task)
    if task == "translate":
        page.fill("#target-language", "de")
    else:
        if task == "ask":
            page.fill("#prompt", "How many people are talking?")
        page.fill("#max-tokens", "24")
    ui.record_requests(page)
    assert ui.run(page).strip()
    ui.assert_timing(page, 1.5)
    if task == "translate":
        form = ui.sent(page, "/v1/audio/translations")
        assert form == {"file": "clip.wav", "model": MODEL, "target_language": "de", "stream": "true"}
        expect(page.locator("#downloads")).to_be_visible()
        return
    request = ui.sent(page, "/v1/chat/completions")
    audio, question = request["messages"][0]["content"]
    assert base64.b64decode(audio["input_audio"]["data"]) == clip.read_bytes() and audio["input_audio"]["format"] == "wav"
    assert question["text"].startswith(ui.PRESETS.get(task, "How many people are talking?"))
    assert request["max_tokens"] == 24 and request["stream"] is True and request["model"] == MODEL
    expect(page.locator("#downloads")).to_be_hidden()  # subtitles are for transcripts


def test_the_code_shown_makes_the_same_call(keyed_server, page, tmp_path):
    page.goto(keyed_server + "/")
    ui.use_key(page, KEY)
    expect(page.locator("#model-id")).to_have_text(MODEL)
    page.set_input_files("#file-input", ui.clip(tmp_path))
    text = ui.run(page)
    page.click("#code-toggle")
    env = {"OPENAI_API_KEY": KEY, "PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"}

    curl = page.inner_text("#code-text")
    assert f"{keyed_server}/v1/audio/transcriptions" in curl and "-F model=tiny" in curl and KEY not in curl
    events = [json.loads(line[6:]) for line in ui.run_shell(curl, tmp_path, env).splitlines() if line.startswith("data: {")]
    assert events[-1]["type"] == "transcript.text.done" and events[-1]["text"] == text
    page.click('#code [data-lang="python"]')
    python = page.inner_text("#code-text")
    assert f'base_url="{keyed_server}/v1"' in python and 'os.environ["OPENAI_API_KEY"]' in python
    assert ui.run_python(python, tmp_path, env) == text + "\n"  # greedy, so the same transcript

    ui.choose(page, "describe")
    page.fill("#max-tokens", "12")
    ui.run(page)
    assert "max_tokens=12" in page.inner_text("#code-text")  # the Python tab stays selected
    assert ui.run_python(page.inner_text("#code-text"), tmp_path, env).strip()
    page.click('#code [data-lang="curl"]')
    chunks = ui.run_shell(page.inner_text("#code-text"), tmp_path, env)
    assert "chat.completion.chunk" in chunks and chunks.rstrip().endswith("data: [DONE]")


def test_microphone_records_and_transcribes(server, page):
    ui.open_page(page, server)
    page.click("#record")
    expect(page.locator("#record-label")).to_have_text("Stop recording")
    expect(page.locator("#run")).to_be_disabled()  # not while recording
    expect(page.locator("#record-time")).to_have_text(re.compile(r"^[12]\.\d s$"), timeout=10_000)
    page.click("#record")
    expect(page.locator("#clip-name")).to_have_text(re.compile(r"^recording\.(webm|ogg)$"))
    expect(page.locator("#clip-duration")).to_have_text(re.compile(r"^\d+\.\d s$"))
    recorded = float(page.inner_text("#clip-duration").removesuffix(" s"))
    assert 0.8 <= recorded <= 5
    ui.record_requests(page)
    assert ui.run(page).strip()
    assert ui.sent(page, "/v1/audio/transcriptions")["file"] == page.inner_text("#clip-name")
    ui.assert_timing(page, recorded)


def test_microphone_needs_a_secure_page(server, page):
    port = server.rsplit(":", 1)[1]
    page.goto(f"http://{INSECURE_HOST}:{port}/")
    expect(page.locator("#model-id")).to_have_text(MODEL)  # the API works from any page
    expect(page.locator("#record")).to_be_disabled()
    note = page.locator("#mic-note")
    expect(note).to_contain_text("The microphone needs a secure page")
    expect(note).to_contain_text(f"http://localhost:{port}/")
