"""The playground's "Who spoke" view in a real browser: a conversation of two espeak-ng voices uploaded, its
transcript shown a line per segment coloured by speaker, a known speaker's reference uploaded from the page, and the
code shown run as it is gives the same segments."""

import json
import re

import httpx
import numpy as np
import pytest

from server.bench.conversation import HELD_OUT_VOICES, Scene
from tests.browser import playground as ui
from tests.browser.conftest import ARTIFACTS
from tests.browser.playground import expect
from tests.support.app import MODEL
from tests.support.audio_samples import encode
from tests.support.speech import requires_espeak

pytestmark = requires_espeak

SCENE = Scene(HELD_OUT_VOICES[:2], 9041, 30.0)  # a seed no other test or bench uses


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The conversation as FLAC, and the first voice's reference as WAV."""
    folder = tmp_path_factory.mktemp("who")
    conversation = SCENE.render()
    (name, reference), = SCENE.references(1)
    (folder / "talk.flac").write_bytes(encode(conversation.samples[None], "flac"))
    (folder / "ann.wav").write_bytes(encode(reference[None], "wav"))
    return folder, name


def shown(page) -> list[dict]:
    return page.eval_on_selector_all("#output .turn", """lines => lines.map(line => ({
        speaker: line.dataset.speaker, id: line.dataset.id, text: line.querySelector(".said").textContent,
        colour: getComputedStyle(line).borderLeftColor}))""")


def served(base: str, path, **fields) -> list[dict]:
    """The same request straight to the API, not streamed: what the page must show."""
    data = {"model": MODEL, "response_format": "diarized_json", "chunking_strategy": "auto", **fields}
    response = httpx.post(f"{base}/v1/audio/transcriptions", data=data, files={"file": (path.name, path.read_bytes())},
                          timeout=ui.RUN_S)
    return response.raise_for_status().json()["segments"]


def test_who_spoke_colours_each_speakers_lines(server, page, files):
    folder, _ = files
    ui.open_page(page, server)
    page.set_input_files("#file-input", folder / "talk.flac")
    ui.choose(page, "diarize")
    expect(page.locator("#known-add")).to_be_visible()
    ui.record_requests(page)
    ui.run(page)
    form = ui.sent(page, "/v1/audio/transcriptions")
    assert form == {"file": "talk.flac", "model": MODEL, "response_format": "diarized_json",
                    "chunking_strategy": "auto", "stream": "true"}
    lines, expected = shown(page), served(server, folder / "talk.flac")
    assert [(x["id"], x["speaker"], x["text"]) for x in lines] == [(s["id"], s["speaker"], s["text"].strip())
                                                                  for s in expected]
    assert {x["speaker"] for x in lines} == {"A", "B"}
    colours = {x["speaker"]: x["colour"] for x in lines}
    assert colours["A"] != colours["B"] and all(colours[x["speaker"]] == x["colour"] for x in lines)
    legend = page.eval_on_selector_all("#speakers li", "items => items.map(item => item.dataset.speaker)")
    assert legend == ["A", "B"]  # in order of first speech
    expect(page.locator("#downloads")).to_be_hidden()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground-who-spoke.png", full_page=True)


def test_a_known_speaker_uploaded_on_the_page_names_their_lines(server, page, files, tmp_path):
    folder, _ = files
    ui.open_page(page, server)
    page.set_input_files("#file-input", folder / "talk.flac")
    ui.choose(page, "diarize")
    page.click("#known-add")
    page.fill("#known-rows .known-name", "Ann")
    page.set_input_files("#known-rows .known-file", folder / "ann.wav")
    ui.run(page)
    lines = shown(page)
    assert {x["speaker"] for x in lines} == {"Ann", "A"}
    expect(page.locator('#speakers li[data-speaker="Ann"]')).to_be_visible()

    page.click("#code-toggle")
    env = {"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"}
    for path in (folder / "talk.flac", folder / "ann.wav"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    curl = page.inner_text("#code-text")
    assert "known_speaker_references[]=<ann.wav.dataurl" in curl and "response_format=diarized_json" in curl
    events = [json.loads(line[6:]) for line in ui.run_shell(curl, tmp_path, env).splitlines()
              if line.startswith("data: {")]
    segments = [e for e in events if e["type"] == "transcript.text.segment"]
    assert [(s["speaker"], s["text"].strip()) for s in segments] == [(x["speaker"], x["text"]) for x in lines]
    page.click('#code [data-lang="python"]')
    printed = ui.run_python(page.inner_text("#code-text"), tmp_path, env)
    # a line per segment, "speaker [start-end] text" (the random model's text may hold line breaks of its own)
    heads = re.findall(r"^(\S+) \[\d+\.\d-\d+\.\d\] ", printed, flags=re.M)
    assert heads == [x["speaker"] for x in lines]


def test_a_known_speaker_without_a_reference_is_explained_before_anything_is_sent(server, page, files):
    folder, _ = files
    ui.open_page(page, server)
    page.set_input_files("#file-input", folder / "talk.flac")
    ui.choose(page, "diarize")
    for _ in range(5):
        if page.locator("#known-add").is_enabled():
            page.click("#known-add")
    assert page.locator("#known-rows .known-row").count() == 4  # OpenAI's limit
    expect(page.locator("#known-add")).to_be_disabled()
    page.fill("#known-rows .known-name >> nth=0", "Bob")
    page.click("#run")
    expect(page.locator("#error")).to_contain_text("both a name and a reference clip")


def test_audio_with_no_one_speaking_says_so(server, page, tmp_path):
    quiet = tmp_path / "quiet.wav"
    quiet.write_bytes(encode(np.random.default_rng(2).normal(0, 0.001, (1, 5 * 16_000)).astype(np.float32), "wav"))
    ui.open_page(page, server)
    page.set_input_files("#file-input", quiet)
    ui.choose(page, "diarize")
    ui.run(page)
    expect(page.locator("#output")).to_have_text("(no one speaks in this audio)")
