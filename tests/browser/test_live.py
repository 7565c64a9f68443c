"""The playground's Live mode in a real Chromium whose fake microphone plays espeak-ng speech (looped by Chromium):
the page streams it to /v1/realtime and shows what the server's realtime session sent, as it sends it."""

import base64
import wave

import numpy as np
import pytest

from tests.browser import playground as ui
from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, INSECURE_HOST, KEY, serving
from tests.browser.playground import expect
from tests.support.speech import SENTENCES, requires_espeak, speak

pytestmark = requires_espeak
LIVE_S = 120  # two CPU cores shared with the rest of the suite
# What the page receives and sends on its WebSocket, kept for the test: the page itself has no test hooks.
RECORD_SOCKET = """
window.live = {events: [], sent: [], protocols: null, closed: null};
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(url, protocols) {
    super(url, protocols);
    window.live.url = url;
    window.live.protocols = protocols;
    this.addEventListener("message", (e) => window.live.events.push(JSON.parse(e.data)));
    this.addEventListener("close", (e) => { window.live.closed = e.code; });
  }
  send(data) { window.live.sent.push({...JSON.parse(data), at: performance.now()}); super.send(data); }
};
"""


def speech_wav(path) -> None:
    """Two sentences with pauses, 48 kHz 16-bit mono: what Chromium's fake capture device reads."""
    gap = np.zeros(int(1.5 * 16_000), np.float32)
    samples = np.concatenate([gap[:8000], speak(SENTENCES[0]), gap, speak(SENTENCES[5]), gap])
    at48k = np.interp(np.arange(samples.shape[0] * 3) / 3, np.arange(samples.shape[0]), samples)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes((np.clip(at48k, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    wav = tmp_path_factory.mktemp("mic") / "speech.wav"
    speech_wav(wav)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_server(tiny_model_dir):
    # short answers, so that a voice-chat reply ends before the looped speech interrupts it
    with serving(tiny_model_dir, "--api-key", KEY, "--default-max-tokens", "24") as base:
        yield base


def start_live(page, base: str, mode: str) -> None:
    page.add_init_script(RECORD_SOCKET)
    page.goto(base + "/")
    ui.use_key(page, KEY)
    page.locator(f'label:has(input[name="live-mode"][value="{mode}"])').click()
    expect(page.locator("#live-language" if mode == "transcription" else "#live-instructions")).to_be_visible()
    ui.choose(page, "describe")  # the task picker above leaves the live fields alone
    field = page.locator("#live-language" if mode == "transcription" else "#live-instructions")
    field.fill("en" if mode == "transcription" else "Answer in one sentence.")
    page.click("#live-start")
    expect(page.locator("#live-stop")).to_be_visible()


def stop_live(page) -> None:
    page.click("#live-stop")
    expect(page.locator("#live-start")).to_be_visible(timeout=30_000)
    expect(page.locator("#live-status")).to_have_text("Stopped.")
    expect(page.locator("#live-error")).to_be_hidden()
    assert page.evaluate("window.live.closed") == 1000  # closed cleanly, by the page


def of(page, kind: str) -> list[dict]:
    return [e for e in page.evaluate("window.live.events") if e["type"] == kind]


def test_live_transcript_shows_what_the_server_transcribed(live_server, page):
    start_live(page, live_server, "transcription")
    expect(page.locator("#live-speech")).to_be_visible(timeout=LIVE_S * 1000)  # speech_started, shown as it comes
    done = page.locator("#live-items .turn.user.done")
    expect(done.nth(1)).to_be_visible(timeout=LIVE_S * 1000)  # both sentences of the file, in order
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground-live.png", full_page=True)
    stop_live(page)

    live = page.evaluate("window.live")
    assert live["url"].endswith("/v1/realtime?intent=transcription")
    assert live["protocols"] == ["realtime", f"openai-insecure-api-key.{KEY}"]
    update, *appends = live["sent"]
    assert update["type"] == "session.update" and update["session"]["type"] == "transcription"
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["session"]["audio"]["input"]["transcription"] == {"language": "en"}
    assert of(page, "session.updated")[0]["session"]["audio"]["input"]["transcription"]["language"] == "en"
    assert {a["type"] for a in appends} == {"input_audio_buffer.append"}
    sizes = [len(base64.b64decode(a["audio"])) for a in appends]
    assert sizes[:-1] == [4800] * (len(sizes) - 1)  # 100 ms of 24 kHz PCM16 each; Stop flushes the rest
    # ... and really 24 kHz: the microphone's seconds go out at one second of audio per second (a resampler
    # off by the usual 48/24 or 44.1/24 would send 2x or 0.5x); from 1 s in, past the pieces queued while connecting
    steady = [a for a in appends[:-1] if a["at"] >= appends[0]["at"] + 1000]
    assert len(steady) >= 20
    assert 0.8 < (len(steady) - 1) * 0.1 / ((steady[-1]["at"] - steady[0]["at"]) / 1000) < 1.25
    # the fake microphone's speech was heard: turns started and ended on the server's VAD
    assert of(page, "input_audio_buffer.speech_started") and of(page, "input_audio_buffer.speech_stopped")

    completed = {e["item_id"]: e["transcript"] for e in of(page, "conversation.item.input_audio_transcription.completed")}
    assert len(completed) >= 2
    added = [e["item"]["id"] for e in of(page, "conversation.item.added")]
    shown = page.eval_on_selector_all("#live-items .turn.user.done", "items => items.map(i => "
                                      "[i.dataset.itemId, i.querySelector('.text').textContent])")
    # every completed item, in the order the server added them, with the server's transcript
    assert [item for item, _ in shown] == [item for item in added if item in completed]
    for item, text in shown:
        assert text == (completed[item] or "(nothing was heard)")
    # the deltas streamed in before each item completed
    deltas = "".join(e["delta"] for e in of(page, "conversation.item.input_audio_transcription.delta")
                     if e["item_id"] == shown[0][0])
    assert deltas == completed[shown[0][0]]


def test_voice_chat_shows_the_turns_and_the_models_replies(live_server, page):
    start_live(page, live_server, "realtime")
    reply = page.locator("#live-items .turn.assistant.done")
    expect(reply.first).to_be_visible(timeout=LIVE_S * 1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground-voice-chat.png", full_page=True)
    stop_live(page)

    update = page.evaluate("window.live.sent[0]")
    assert update["session"]["type"] == "realtime" and update["session"]["output_modalities"] == ["text"]
    assert of(page, "session.updated")[0]["session"]["instructions"] == "Answer in one sentence."
    texts = {e["item_id"]: e["text"] for e in of(page, "response.output_text.done")}
    shown = page.eval_on_selector_all("#live-items .turn.assistant.done", "items => items.map(i => "
                                      "[i.dataset.itemId, i.querySelector('.text').textContent])")
    answered = [(item, text) for item, text in shown if item in texts]
    assert answered and all(text.strip() for _, text in answered)
    for item, text in answered:  # an answer the next turn cut short is marked so
        assert text in (texts[item], texts[item] + " [interrupted]")
    assert page.locator("#live-items .turn.user.done").count() >= 1  # the user's turn, transcribed for the page


def test_a_refused_live_session_is_explained(live_server, page):
    page.goto(live_server + "/")
    ui.use_key(page, "not-the-key")
    page.click("#live-start")
    error = page.locator("#live-error")
    expect(error).to_contain_text("is the API key right?", timeout=30_000)
    expect(page.locator("#live-start")).to_be_visible()
    expect(page.locator("#live-stop")).to_be_hidden()


def test_live_mode_needs_a_secure_page(live_server, page):
    port = live_server.rsplit(":", 1)[1]
    page.goto(f"http://{INSECURE_HOST}:{port}/")
    expect(page.locator("#live-start")).to_be_disabled()
    expect(page.locator("#live-note")).to_contain_text(f"open the playground at http://localhost:{port}/")


def test_a_session_the_server_ends_says_why(tiny_model_dir, page):
    with serving(tiny_model_dir, "--realtime-max-session-s", "3") as base:
        page.goto(base + "/")
        page.click("#live-start")
        error = page.locator("#live-error")
        expect(error).to_contain_text("The session reached the server's time limit.", timeout=30_000)
        expect(error).to_contain_text("Server said: the session reached the server's limit of 3 s")
        expect(error).to_contain_text("close code 4001")
        expect(page.locator("#live-start")).to_be_visible()
