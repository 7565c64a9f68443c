"""Live transcription over GET /v1/realtime, driven by the unmodified OpenAI SDK's realtime client.

Speech (espeak-ng) is streamed as 24 kHz PCM in 100 ms appends, faster than real time. On the random-weight model a
manually committed turn must be transcribed exactly as /v1/audio/transcriptions transcribes the same audio; where
the words matter (turns found by server VAD), the model's answers are scripted (tests/scripted.py).
"""

import asyncio
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI
from transformers import AutoTokenizer

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL, metric
from tests.support.realtime_client import checked, chunks, listening, pcm24k, silence, wav24k
from tests.support.scripted import scripted
from tests.support.speech import SENTENCES, requires_espeak, speak, speech_track

pytestmark = requires_espeak


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture(scope="module")
async def live(app):
    async with listening(app) as base:
        yield base


def sdk(base: str, key: str = "-") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


async def until(connection, last: str, events: list[dict], count: int = 1) -> list[dict]:
    """Server events (checked against the SDK's types) until the `count`-th of type `last`."""
    while sum(e["type"] == last for e in events) < count:
        raw = await asyncio.wait_for(connection.recv_bytes(), 120)
        events.append(checked(raw))
        assert type(connection.parse_event(raw)).__name__ != "dict"
        assert events[-1]["type"] != "error", events[-1]
    return events


async def transcription_session(connection, **audio_input) -> list[dict]:
    events = await until(connection, "session.created", [])
    assert events[0]["session"]["type"] == "transcription"
    await connection.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
    return await until(connection, "session.updated", events)


@pytest.mark.parametrize("seconds", [3, 45], ids=["short", "over-30-s-cut-at-pauses"])
async def test_a_committed_turn_is_transcribed_as_the_transcriptions_endpoint_does(live, client, seconds):
    pcm = pcm24k(np.concatenate([silence(0.3), speech_track(seconds)[0], silence(0.3)]))
    expected = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav24k(pcm)))
    async with sdk(live).realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
        events = await transcription_session(connection, turn_detection=None,
                                             format={"type": "audio/pcm", "rate": 24000})
        assert events[-1]["session"]["audio"]["input"]["turn_detection"] is None
        for piece in chunks(pcm):
            await connection.input_audio_buffer.append(audio=piece)
        await connection.input_audio_buffer.commit()
        events = await until(connection, "conversation.item.done", events)
    kinds = [e["type"] for e in events[2:]]
    assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.added"]
    assert kinds[-2:] == ["conversation.item.input_audio_transcription.completed", "conversation.item.done"]
    completed = events[-2]
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("transcription.delta"))
    assert completed["transcript"] == deltas == expected.text
    assert completed["usage"]["type"] == "tokens" and completed["usage"]["input_token_details"]["audio_tokens"] > 0
    assert events[-1]["item"]["content"][0]["transcript"] == expected.text
    assert completed["item_id"] == events[2]["item_id"] == events[-1]["item"]["id"]


async def test_logprobs_come_when_include_asks_as_the_transcriptions_endpoint_gives_them(live, client):
    pcm = pcm24k(speak(SENTENCES[1]))
    expected = await client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav24k(pcm)), include=["logprobs"])
    async with sdk(live).realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
        events = await until(connection, "session.created", [])
        await connection.session.update(session={"type": "transcription", "include": [
            "item.input_audio_transcription.logprobs"], "audio": {"input": {"turn_detection": None}}})
        for piece in chunks(pcm):
            await connection.input_audio_buffer.append(audio=piece)
        await connection.input_audio_buffer.commit()
        events = await until(connection, "conversation.item.input_audio_transcription.completed", events)
    completed = events[-1]
    assert completed["logprobs"] and all(lp["logprob"] <= 0 for lp in completed["logprobs"])
    assert completed["logprobs"] == [lp.model_dump() for lp in expected.logprobs]


@pytest.fixture
def scripted_live(loaded, tiny_model_dir):
    """A server whose model answers `answer(prompt)`, listening on a port."""
    @asynccontextmanager
    async def serve(answer, **settings):
        model = scripted(loaded, tiny_model_dir, lambda prompt, n: answer(prompt))
        app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL, **settings), model)
        async with app.router.lifespan_context(app), listening(app) as base:
            yield base, app
    return serve


def by_length(prompt) -> str:
    """The scripted transcript of a turn: which sentence it is, told by its length in audio tokens."""
    return "The long sentence." if prompt.audio_tokens > 40 else "Short one."


async def test_server_vad_finds_each_turn_and_items_complete_in_speech_order(scripted_live):
    long, short = speak(SENTENCES[1]), speak("Yes.")
    track = np.concatenate([silence(0.5), long, silence(1.5), short, silence(1.5), long, silence(1.5)])
    async with scripted_live(by_length) as (base, app):
        async with sdk(base).realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
            events = await transcription_session(connection, turn_detection={
                "type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300, "threshold": 0.5})
            for piece in chunks(pcm24k(track)):
                await connection.input_audio_buffer.append(audio=piece)
            events = await until(connection, "conversation.item.done", events, count=3)
        async with httpx.AsyncClient(base_url=base) as http:
            assert await metric(http, "qwen2_audio_realtime_utterances_total") == 3
            heard = await metric(http, 'qwen2_audio_audio_seconds_total{endpoint="realtime"}')
            assert abs(heard - track.shape[0] / 16_000) < 0.05  # all of it, counted once (resampler's delay aside)
    starts = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [e["item_id"] for e in starts] == [e["item_id"] for e in stops] == committed
    assert [e["item_id"] for e in completed] == committed  # in the order spoken
    assert [e["transcript"] for e in completed] == ["The long sentence.", "Short one.", "The long sentence."]
    # each turn is where the speech is: it starts before the speech (its padding) and stops after it
    assert starts[0]["audio_start_ms"] <= 500 < stops[0]["audio_end_ms"]
    assert stops[0]["audio_end_ms"] < starts[1]["audio_start_ms"] < stops[1]["audio_end_ms"] < starts[2]["audio_start_ms"]



async def test_speech_that_runs_on_past_30_s_is_cut_into_turns_the_encoder_takes_whole(live):
    talk = np.concatenate([speak(SENTENCES[i % len(SENTENCES)]) for i in range(14)])  # no pause of 2 s in it
    assert talk.shape[0] > 35 * 16_000
    async with sdk(live).realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
        events = await transcription_session(connection, turn_detection={
            "type": "server_vad", "silence_duration_ms": 2000})
        for piece in chunks(pcm24k(np.concatenate([silence(0.5), talk, silence(2.5)]))):
            await connection.input_audio_buffer.append(audio=piece)
        events = await until(connection, "conversation.item.done", events, count=2)
    starts = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(starts) == len(stops) == 2
    assert stops[0] - starts[0] <= 30_000 and stops[0] == starts[1]  # cut, nothing lost at the cut
    assert stops[1] > (0.5 + talk.shape[0] / 16_000) * 1000


async def test_keywords_and_languages_of_the_session_are_hints_to_the_model(loaded, tiny_model_dir):
    """OpenAI's realtime transcription settings carry `keywords` and `languages` too: each turn's instruction holds
    them, as /v1/audio/transcriptions puts them; an unknown language is refused naming its index."""
    model = scripted(loaded, tiny_model_dir, lambda prompt, n: "Short one.")
    app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL), model)
    pcm = pcm24k(np.concatenate([silence(0.3), speak("Yes."), silence(0.3)]))
    async with app.router.lifespan_context(app), listening(app) as base:
        async with sdk(base).realtime.connect(model=MODEL, extra_query={"intent": "transcription"}) as connection:
            events = await transcription_session(connection, turn_detection=None, transcription={
                "keywords": ["Qwen2-Audio"], "languages": ["sv", "no"]})
            assert events[-1]["session"]["audio"]["input"]["transcription"]["languages"] == ["sv", "no"]
            for piece in chunks(pcm):
                await connection.input_audio_buffer.append(audio=piece)
            await connection.input_audio_buffer.commit()
            await until(connection, "conversation.item.done", events)
            await connection.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"languages": ["sv", "xx"]}}}})
            refused = checked(await asyncio.wait_for(connection.recv_bytes(), 60))
    text = AutoTokenizer.from_pretrained(tiny_model_dir).decode(model.runner.prompts[-1].token_ids)
    assert "The speech is in Swedish or Norwegian. Words and phrases that may occur in it: Qwen2-Audio." in text
    assert refused["type"] == "error" and refused["error"]["param"] == "session.audio.input.transcription.languages[1]"
