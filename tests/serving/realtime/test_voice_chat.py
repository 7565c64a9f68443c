"""Voice chat with text answers over GET /v1/realtime (session type `realtime`), driven by the unmodified OpenAI
SDK's realtime client. The model's answers are scripted (tests/scripted.py), so the text can be checked; the
prompts it was given show what the conversation held."""

import asyncio
from contextlib import asynccontextmanager

import numpy as np
import pytest
from openai import AsyncOpenAI

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL
from tests.support.realtime_client import checked, chunks, listening, pcm24k, silence
from tests.support.scripted import scripted
from tests.support.speech import SENTENCES, requires_espeak, speak

pytestmark = requires_espeak
ANSWER = "Hello there, how can I help?"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture
def chat(loaded, tiny_model_dir, tokenizer):
    """An SDK realtime connection to a server whose model answers `answer`, and the prompts that model was given."""
    @asynccontextmanager
    async def serve(answer: str = ANSWER, **settings):
        model = scripted(loaded, tiny_model_dir, lambda prompt, n: answer)
        app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL, **settings), model)
        async with app.router.lifespan_context(app), listening(app) as base:
            client = AsyncOpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0)
            async with client.realtime.connect(model=MODEL) as connection:
                events = await until(connection, "session.created", [])
                assert events[0]["session"]["type"] == "realtime"
                yield connection, model.runner.prompts, lambda p: tokenizer.decode(p.token_ids)
    return serve


async def until(connection, last: str, events: list[dict], count: int = 1) -> list[dict]:
    while sum(e["type"] == last for e in events) < count:
        events.append(checked(await asyncio.wait_for(connection.recv_bytes(), 120)))
    return events


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


async def test_a_text_turn_is_answered_in_text_with_the_response_events(chat):
    async with chat() as (connection, prompts, text):
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                                 "instructions": "Be brief.", "audio": {"input": {"turn_detection": None}}})
        events = await until(connection, "session.updated", [])
        await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is the capital of France?"}]})
        await connection.response.create(response={"instructions": "Answer in one word."})
        events = await until(connection, "response.done", events)
    kinds = [e["type"] for e in events[1:]]
    assert kinds[:2] == ["conversation.item.added", "conversation.item.done"]
    assert kinds[2:7] == ["response.created", "response.output_item.added", "conversation.item.added",
                          "response.content_part.added", "response.output_text.delta"]
    assert kinds[-5:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "conversation.item.done", "response.done"]
    assert "".join(e["delta"] for e in of(events, "response.output_text.delta")) == ANSWER
    assert of(events, "response.output_text.done")[0]["text"] == ANSWER
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == ANSWER
    assert done["usage"]["output_tokens"] > 0 and done["usage"]["input_tokens"] == prompts[-1].num_tokens
    prompt = text(prompts[-1])
    assert "Answer in one word." in prompt and "Be brief." not in prompt and "capital of France" in prompt


async def test_a_spoken_turn_found_by_server_vad_gets_an_answer_by_itself(chat):
    track = np.concatenate([silence(0.5), speak(SENTENCES[0]), silence(1.5)])
    async with chat() as (connection, prompts, text):
        for piece in chunks(pcm24k(track)):
            await connection.input_audio_buffer.append(audio=piece)
        events = await until(connection, "response.done", [])
        await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "And again?"}]})
        await connection.response.create()
        events = await until(connection, "response.done", events, count=2)
    kinds = [e["type"] for e in events]
    assert kinds[:5] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert [e["response"]["status"] for e in of(events, "response.done")] == ["completed", "completed"]
    added = of(events, "conversation.item.added")  # user audio, answer, user text, answer: each after the last
    assert [e["item"]["role"] for e in added] == ["user", "assistant", "user", "assistant"]
    assert [e["previous_item_id"] for e in added] == [None] + [e["item"]["id"] for e in added[:-1]]
    assert prompts[0].audio_tokens > 0
    assert prompts[1].audio_tokens == prompts[0].audio_tokens  # the spoken turn stays in the conversation
    assert ANSWER in text(prompts[1]) and "And again?" in text(prompts[1])


async def test_cancel_delete_and_audio_output_refused(chat):
    async with chat(answer="word " * 900) as (connection, prompts, text):
        await connection.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        events = await until(connection, "error", [])
        assert events[-1]["error"]["code"] == "unsupported_modality"
        await connection.conversation.item.create(item={"id": "item_1", "type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": "Talk a lot."}]})
        await connection.response.create()
        events = await until(connection, "response.output_text.delta", events)
        await connection.response.cancel()
        events = await until(connection, "response.done", events)
        done = events[-1]["response"]
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        await connection.conversation.item.delete(item_id="item_1")
        events = await until(connection, "conversation.item.deleted", events)
        await connection.conversation.item.delete(item_id="item_1", event_id="evt_gone")
        events = await until(connection, "error", events, count=2)
        assert (events[-1]["error"]["code"], events[-1]["error"]["event_id"]) == ("item_not_found", "evt_gone")
        await connection.response.create(response={"output_modalities": ["audio"]})
        events = await until(connection, "error", events, count=3)
        assert events[-1]["error"]["code"] == "unsupported_modality"


async def test_the_oldest_turns_leave_the_prompt_when_the_context_is_full(chat):
    async with chat() as (connection, prompts, text):
        for turn in range(10):  # about 1,000 tokens each: more than the model's context of 8,192
            await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": f"turn{turn} " + "apple " * 1000}]})
        await connection.response.create()
        events = await until(connection, "response.done", [])
    assert events[-1]["response"]["status"] == "completed"
    prompt = text(prompts[-1])
    assert "turn0 " not in prompt and "turn9 " in prompt and "left out to fit" in prompt


async def test_input_transcription_in_a_voice_chat_is_for_the_client_and_the_model_hears_the_audio(chat):
    track = np.concatenate([silence(0.5), speak(SENTENCES[2]), silence(1.5)])
    async with chat() as (connection, prompts, text):
        await connection.session.update(session={"type": "realtime", "audio": {"input": {"transcription": {}}}})
        events = await until(connection, "session.updated", [])
        for piece in chunks(pcm24k(track)):
            await connection.input_audio_buffer.append(audio=piece)
        events = await until(connection, "response.done", events)
        events = await until(connection, "conversation.item.input_audio_transcription.completed", events)
        await connection.response.create()
        events = await until(connection, "response.done", events, count=2)
    user_item = of(events, "input_audio_buffer.committed")[0]["item_id"]
    completed = of(events, "conversation.item.input_audio_transcription.completed")[0]
    assert completed["item_id"] == user_item and completed["transcript"] == ANSWER  # the scripted model's words
    done = [e["item"] for e in of(events, "conversation.item.done") if e["item"]["id"] == user_item]
    assert done[0]["content"][0]["transcript"] == ANSWER
    assert all(p.audio_tokens > 0 for p in prompts)  # the answers' prompts hold the audio, not the transcript


async def test_speaking_again_interrupts_the_answer(chat):
    turn = np.concatenate([silence(0.5), speak(SENTENCES[3]), silence(1.5)])
    async with chat(answer="word " * 900) as (connection, prompts, text):
        for piece in chunks(pcm24k(turn)):
            await connection.input_audio_buffer.append(audio=piece)
        events = await until(connection, "response.output_text.delta", [])
        for piece in chunks(pcm24k(turn)):  # the user speaks again while the long answer streams
            await connection.input_audio_buffer.append(audio=piece)
        events = await until(connection, "response.done", events)
        first = events[-1]["response"]
        assert first["status"] == "cancelled" and first["status_details"]["reason"] == "turn_detected"
        events = await until(connection, "response.done", events, count=2)  # the new turn's own answer
    assert [e["type"] for e in events].count("input_audio_buffer.speech_started") == 2
    answered = [e["response"]["output"][0]["content"][0]["text"] for e in of(events, "response.done")]
    assert answered[0] and len(answered[0]) < len(answered[1])  # what was said before the cut stays, cut short


async def test_an_answer_outside_the_conversation_stays_out_of_it(chat):
    async with chat() as (connection, prompts, text):
        await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Rate this chat."}]})
        await connection.response.create(response={"conversation": "none"})
        events = await until(connection, "response.done", [])
        await connection.response.create()
        events = await until(connection, "response.done", events, count=2)
    first, second = of(events, "response.done")
    assert first["response"]["conversation_id"] is None and second["response"]["conversation_id"]
    added = [e["item"]["id"] for e in of(events, "conversation.item.added")]
    assert first["response"]["output"][0]["id"] not in added and second["response"]["output"][0]["id"] in added
    assert prompts[0].token_ids == prompts[1].token_ids  # the second answer did not hear the first
