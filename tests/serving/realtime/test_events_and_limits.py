"""GET /v1/realtime with a raw WebSocket client, for what SDKs never send: broken events, binary frames, bad audio,
empty commits, wrong keys, a client that vanishes mid-turn, and every limit (an `error` event, then a close code
that says which)."""

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL, metric
from tests.support.realtime_client import checked, chunks, listening, pcm24k, silence
from tests.support.speech import SENTENCES, requires_espeak, speak
from tests.support.waiting import eventually

pytestmark = requires_espeak


@pytest.fixture(scope="module")
async def live(app):
    async with listening(app) as base:
        yield base.replace("http://", "ws://") + "/v1/realtime"


async def recv(ws) -> dict:
    return checked(await asyncio.wait_for(ws.recv(), 60))


async def next_of(ws, kind: str) -> dict:
    while (body := await recv(ws))["type"] != kind:
        pass
    return body


async def opened(url: str, **options):
    ws = await connect(url, **options)
    assert (await recv(ws))["type"] == "session.created"
    return ws


async def send(ws, **body) -> None:
    await ws.send(json.dumps(body))


async def test_broken_events_get_error_events_naming_them_and_the_session_goes_on(live):
    async with await opened(live + "?intent=transcription") as ws:
        await ws.send("{not json")
        error = (await recv(ws))["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
        await send(ws, type="no.such.event", event_id="evt_1")
        error = (await recv(ws))["error"]
        assert (error["code"], error["event_id"], error["param"]) == ("invalid_event", "evt_1", "type")
        await ws.send(b"\x00\x01binary")
        assert (await recv(ws))["error"]["code"] == "invalid_frame"
        await send(ws, type="input_audio_buffer.append", event_id="evt_2", audio="not base64!")
        error = (await recv(ws))["error"]
        assert (error["code"], error["event_id"], error["param"]) == ("invalid_value", "evt_2", "audio")
        await send(ws, type="input_audio_buffer.append", event_id="evt_3")
        assert (await recv(ws))["error"]["event_id"] == "evt_3"
        await send(ws, type="input_audio_buffer.commit", event_id="evt_4")
        error = (await recv(ws))["error"]
        assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "evt_4")
        await send(ws, type="session.update", event_id="evt_6", session={
            "type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
        assert (await recv(ws))["error"]["param"] == "session.audio.input.turn_detection.type"
        await send(ws, type="session.update", event_id="evt_7", session={
            "type": "transcription", "audio": {"input": {"transcription": {"language": "xx-nope"}}}})
        assert (await recv(ws))["error"]["param"] == "session.audio.input.transcription.language"
        await send(ws, type="response.create", event_id="evt_8")
        assert (await recv(ws))["error"]["code"] == "invalid_session_type"
        await send(ws, type="conversation.item.truncate", event_id="evt_9", item_id="x", content_index=0,
                   audio_end_ms=0)
        error = (await recv(ws))["error"]
        assert (error["code"], error["event_id"]) == ("unsupported_event", "evt_9") and "no audio" in error["message"]
        # still open, and still working
        await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
            "noise_reduction": {"type": "near_field"}, "format": {"type": "audio/pcmu"}}}})
        session = (await recv(ws))["session"]
        assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        await send(ws, type="input_audio_buffer.clear")
        assert (await recv(ws))["type"] == "input_audio_buffer.cleared"


async def test_a_client_that_vanishes_mid_turn_leaves_no_engine_work(live, http):
    pcm = pcm24k(np.concatenate([speak(s) for s in SENTENCES[:8]])[: 28 * 16_000])  # a long turn: hundreds of tokens
    ws = await opened(live + "?intent=transcription")
    await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
        "turn_detection": None}}})
    for piece in chunks(pcm):
        await send(ws, type="input_audio_buffer.append", audio=piece)
    await send(ws, type="input_audio_buffer.commit")
    await next_of(ws, "conversation.item.input_audio_transcription.delta")  # the engine is transcribing it
    assert await metric(http, "qwen2_audio_running_requests") + await metric(http, "qwen2_audio_queue_depth") > 0
    ws.transport.abort()  # no close frame: the client is simply gone
    async def idle() -> bool:  # the cancelled request leaves the batch at the engine's next step
        return await metric(http, "qwen2_audio_running_requests") + await metric(http, "qwen2_audio_queue_depth") == 0

    assert await eventually(lambda: _sessions_closed(http))
    assert await eventually(idle)


async def _sessions_closed(http) -> bool:
    return await metric(http, "qwen2_audio_realtime_sessions") == 0


async def test_g711_audio_is_decoded(live):
    """audio/pcmu and audio/pcma at 8 kHz: the speech is found by server VAD as in audio/pcm."""
    speech = np.concatenate([silence(0.5), speak(SENTENCES[0]), silence(1.0)])
    samples = (np.clip(speech[::2], -1, 1) * 32767).astype(np.int16)  # 16 kHz -> 8 kHz (speech is band-limited)
    for kind in ("audio/pcmu", "audio/pcma"):
        async with await opened(live + "?intent=transcription") as ws:
            await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
                "format": {"type": kind}}}})
            await next_of(ws, "session.updated")
            encoded = _g711(samples, kind)
            for piece in chunks(encoded, 800):
                await send(ws, type="input_audio_buffer.append", audio=piece)
            started = await next_of(ws, "input_audio_buffer.speech_started")
            stopped = await next_of(ws, "input_audio_buffer.speech_stopped")
            assert started["audio_start_ms"] <= 500 < stopped["audio_end_ms"]
            await next_of(ws, "conversation.item.input_audio_transcription.completed")


def _g711(samples: np.ndarray, kind: str) -> bytes:
    """Encode by nearest code in the decoder's own table (ITU-T G.711 is a 256-entry code book)."""
    from server.serving.realtime.audio_decoder import G711

    table = G711[kind].astype(np.int32)
    return np.abs(samples.astype(np.int32)[:, None] - table[None, :]).argmin(axis=1).astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture
def limited(loaded, tiny_model_dir):
    """A server with the given settings (small limits), listening: its ws:// URL and its http client."""
    @asynccontextmanager
    async def serve(**settings):
        app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL, **settings), loaded)
        async with app.router.lifespan_context(app), listening(app) as base:
            async with httpx.AsyncClient(base_url=base) as http:
                yield base.replace("http://", "ws://") + "/v1/realtime", http
    return serve


async def closed_with(ws) -> tuple[dict, int]:
    """The error event a closing session sends, and the close code that follows it."""
    error = await next_of(ws, "error")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    return error["error"], closed.value.rcvd.code


async def test_api_keys_by_header_or_browser_subprotocol(limited):
    async with limited(api_key=["sekret"]) as (url, _):
        for wrong in ({}, {"additional_headers": {"Authorization": "Bearer nope"}},
                      {"subprotocols": ["realtime", "openai-insecure-api-key.nope"]}):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, **wrong)
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
        async with await opened(url, additional_headers={"Authorization": "Bearer sekret"}):
            pass
        async with await opened(url, subprotocols=["realtime", "openai-insecure-api-key.sekret"]) as ws:
            assert ws.subprotocol == "realtime"


async def test_each_limit_is_an_error_event_and_its_own_close_code(limited):
    async with limited(realtime_max_sessions=1, realtime_max_message_mb=0.01, realtime_max_buffer_s=1.0,
                       realtime_max_session_s=3.0) as (url, http):
        async with await opened(url + "?intent=transcription") as first:
            second = await connect(url)
            error, code = await closed_with(second)
            assert (error["type"], error["code"], code) == ("rate_limit_error", "too_many_sessions", 1013)
            await send(first, type="input_audio_buffer.append", audio="A" * 20_000)
            assert await _code(first) == ("message_too_large", 1009)
        assert await eventually(lambda: _sessions_closed(http))
        async with await opened(url + "?intent=transcription") as ws:
            await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
                "turn_detection": None}}})
            for piece in chunks(bytes(24_000 * 2 * 2), 4800):  # 2 s of audio, never committed
                await send(ws, type="input_audio_buffer.append", audio=piece)
            assert await _code(ws) == ("input_audio_buffer_full", 4002)
        async with await opened(url + "?intent=transcription") as ws:
            assert await _code(ws) == ("session_expired", 4001)
        ws = await connect(url + "?model=gpt-nonexistent")
        assert await _code(ws) == ("model_not_found", 1008)


async def _code(ws) -> tuple[str, int]:
    error, code = await closed_with(ws)
    return error["code"], code


async def test_a_client_that_stops_reading_is_disconnected_not_waited_for(limited):
    """Events for a client that reads nothing pile up in its bounded queue; past it the session closes (4003)."""
    async with limited(realtime_send_queue=16) as (url, http):
        ws = await connect(url + "?intent=transcription", max_queue=1)
        wordy = json.dumps({"type": "x" * 2000})  # each is refused with an error event that repeats its type
        try:
            for _ in range(20_000):
                await ws.send(wordy)
        except ConnectionClosed:
            pass
        code = None
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        assert code == 4003
        assert await eventually(lambda: _sessions_closed(http))


async def test_an_idle_timeout_commits_the_quiet_audio(live):
    async with await opened(live + "?intent=transcription") as ws:
        await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}})
        await next_of(ws, "session.updated")
        quiet = pcm24k(silence(6.0))
        [whole] = chunks(quiet, len(quiet))  # one append of 6 s: decoded and scored off the event loop
        await send(ws, type="input_audio_buffer.append", audio=whole)
        timeout = await next_of(ws, "input_audio_buffer.timeout_triggered")
        assert timeout["audio_start_ms"] == 0 and 5000 <= timeout["audio_end_ms"] <= 6000
        committed = await recv(ws)
        assert (committed["type"], committed["item_id"]) == ("input_audio_buffer.committed", timeout["item_id"])
        completed = await next_of(ws, "conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == timeout["item_id"]


async def test_a_turn_that_fails_gets_a_failed_event_and_the_item_still_completes(limited):
    async with limited(request_timeout_s=0.001) as (url, _):  # no turn can be transcribed within 1 ms
        async with await opened(url + "?intent=transcription") as ws:
            await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
                "turn_detection": None}}})
            for piece in chunks(pcm24k(speak(SENTENCES[0]))):
                await send(ws, type="input_audio_buffer.append", audio=piece)
            await send(ws, type="input_audio_buffer.commit")
            failed = await next_of(ws, "conversation.item.input_audio_transcription.failed")
            assert (failed["error"]["type"], failed["error"]["code"]) == ("invalid_request_error", "timeout")
            done = await recv(ws)
            assert done["type"] == "conversation.item.done" and done["item"]["id"] == failed["item_id"]
            await send(ws, type="input_audio_buffer.clear")  # the session goes on
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"


async def test_a_session_becomes_a_transcription_session_by_session_update_until_it_has_items(live):
    async with await opened(live) as ws:  # no intent: a voice chat
        await send(ws, type="session.update", session={"type": "transcription", "audio": {"input": {
            "turn_detection": None}}})
        assert (await recv(ws))["session"]["type"] == "transcription"
        for piece in chunks(pcm24k(speak(SENTENCES[0]))):
            await send(ws, type="input_audio_buffer.append", audio=piece)
        await send(ws, type="input_audio_buffer.commit")
        await next_of(ws, "conversation.item.input_audio_transcription.completed")  # transcribed, not answered
        await send(ws, type="session.update", event_id="evt_back", session={"type": "realtime"})
        error = (await next_of(ws, "error"))["error"]
        assert (error["param"], error["event_id"]) == ("session.type", "evt_back")
