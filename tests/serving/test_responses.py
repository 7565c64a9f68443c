"""POST /v1/responses (and its stored responses) through the OpenAI SDK: the same generation as chat, OpenAI's
event stream, audio parts, multi-turn through previous_response_id, and the refusals."""

import asyncio
import base64

import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL, sdk_for
from tests.support.audio_samples import wav
from tests.support.chat_parts import Sound, sound_question
from tests.support.faults import fails_once, replaced
from tests.support.scripted import scripted

EVENTS = TypeAdapter(ResponseStreamEvent)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_question(audio: bytes, question: str = "What is this sound?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64(audio), "format": "wav"}},
                                         {"type": "input_text", "text": question}]}]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture
def answering(loaded, tiny_model_dir):
    """A server whose model answers `answer(prompt, n)`, and the runner (its `prompts` are what was prefilled)."""
    def serve(answer):
        model = scripted(loaded, tiny_model_dir, answer)
        return sdk_for(tiny_model_dir, model), model.runner
    return serve


async def test_greedy_tokens_equal_chat_for_the_same_conversation(client):
    audio = wav(2.0, seed=31)
    response = await client.responses.create(model=MODEL, input=audio_question(audio), instructions="Be brief.",
                                             max_output_tokens=16, temperature=0)
    chat = await client.chat.completions.create(model=MODEL, max_tokens=16, temperature=0, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64(audio), "format": "wav"}},
                                     {"type": "text", "text": "What is this sound?"}]}])
    assert response.output_text == chat.choices[0].message.content
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.usage.total_tokens == chat.usage.total_tokens
    assert response.usage.input_tokens_details.audio_tokens == chat.usage.prompt_tokens_details.audio_tokens == 50
    length = chat.choices[0].finish_reason == "length"
    assert response.status == ("incomplete" if length else "completed")
    assert (response.incomplete_details is not None) == length
    assert response.output[0].type == "message" and response.output[0].role == "assistant"


async def test_a_string_input_is_one_user_message(client):
    response = await client.responses.create(model=MODEL, input="Hello there", max_output_tokens=8, temperature=0)
    chat = await client.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "Hello there"}])
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens_details.audio_tokens == 0


@pytest.mark.parametrize("as_file", [
    lambda audio: {"type": "input_file", "file_data": f"data:audio/wav;base64,{b64(audio)}", "filename": "a.wav"},
    lambda audio: {"type": "input_file", "file_data": b64(audio), "filename": "a.wav"},
])
async def test_an_input_file_is_heard_as_input_audio_is(client, as_file):
    audio = wav(1.5, seed=32)
    by_file = await client.responses.create(model=MODEL, max_output_tokens=12, temperature=0, input=[
        {"role": "user", "content": [as_file(audio), {"type": "input_text", "text": "What is this sound?"}]}])
    by_audio = await client.responses.create(model=MODEL, input=audio_question(audio), max_output_tokens=12,
                                             temperature=0)
    assert by_file.output_text == by_audio.output_text
    assert by_file.usage.input_tokens == by_audio.usage.input_tokens
    assert by_file.usage.input_tokens_details.audio_tokens == 37


async def test_long_audio_takes_the_chat_path(client):
    audio = wav(45.0, seed=33)  # past the encoder's 30 s window: more than one clip, as in chat
    response = await client.responses.create(model=MODEL, input=audio_question(audio), max_output_tokens=4,
                                             temperature=0)
    chat = await client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0, messages=[
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64(audio), "format": "wav"}},
                                     {"type": "text", "text": "What is this sound?"}]}])
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.input_tokens_details.audio_tokens == chat.usage.prompt_tokens_details.audio_tokens > 750
    assert response.output_text == chat.choices[0].message.content


async def test_the_stream_is_openai_event_sequence_and_adds_up(answering):
    words = "A dog barks twice, then a door closes."
    (server, _) = answering(lambda prompt, n: words)
    async with server as (client, _):
        stream = await client.responses.create(model=MODEL, input=audio_question(wav(1.0, seed=34)), stream=True)
        events = [EVENTS.validate_python(event.to_dict()) async for event in stream]
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert len(deltas) > 3 and "".join(deltas) == words
    assert events[-4].text == words and events[-3].part.text == words and events[-2].item.content[0].text == words
    final = events[-1].response
    assert final.status == "completed" and final.output_text == words and final.usage.output_tokens == len(deltas) + 1
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


async def test_a_stream_cut_by_max_output_tokens_ends_incomplete_and_is_stored(client):
    stream = await client.responses.create(model=MODEL, input="Count to a hundred.", max_output_tokens=3,
                                           temperature=0, stream=True)
    events = [EVENTS.validate_python(event.to_dict()) async for event in stream]
    final = events[-1]
    assert final.type == "response.incomplete" and final.response.incomplete_details.reason == "max_output_tokens"
    assert final.response.usage.output_tokens == 3 and events[-2].item.status == "incomplete"
    fetched = await client.responses.retrieve(final.response.id)
    assert fetched.model_dump() == final.response.model_dump()


async def test_a_failing_step_ends_the_stream_with_an_error_event(answering):
    (server, runner) = answering(lambda prompt, n: "one two three four five")
    async with server as (client, _):
        with replaced(runner, "decode", fails_once(RuntimeError("simulated device fault"))):
            stream = await client.responses.create(model=MODEL, input="go", stream=True)
            events = [EVENTS.validate_python(event.to_dict()) async for event in stream]
        after = await client.responses.create(model=MODEL, input="go")
    assert events[-1].type == "error" and events[-1].code == "server_error" and "simulated" not in events[-1].message
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert after.output_text == "one two three four five"  # the server goes on


async def test_previous_response_id_carries_the_conversation(answering, tokenizer):
    (server, runner) = answering(lambda prompt, n: ["It is a bell.", "Yes, twice."][n])
    async with server as (client, _):
        first = await client.responses.create(model=MODEL, input=audio_question(wav(1.0, seed=35), "What rings?"),
                                              instructions="Answer in one sentence.")
        second = await client.responses.create(model=MODEL, input="Does it ring again?",
                                               previous_response_id=first.id)
        fetched = await client.responses.retrieve(second.id)
    assert (first.output_text, second.output_text) == ("It is a bell.", "Yes, twice.")
    prompt = tokenizer.decode(runner.prompts[1].token_ids)
    order = ["What rings?", "It is a bell.", "Does it ring again?"]
    assert [prompt.index(text) for text in order] == sorted(prompt.index(text) for text in order)
    assert "Answer in one sentence." not in prompt  # instructions belong to their own request, as OpenAI has it
    assert runner.prompts[1].audio_tokens == runner.prompts[0].audio_tokens == 25  # the first turn's audio is heard
    assert second.usage.input_tokens > first.usage.input_tokens
    assert fetched.previous_response_id == first.id and fetched.output_text == "Yes, twice."


async def test_retrieve_list_input_items_and_delete(client):
    created = await client.responses.create(model=MODEL, max_output_tokens=4, input=[
        {"role": "developer", "content": "Be brief."}, *audio_question(wav(1.0, seed=36))])
    fetched = await client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    items = [item async for item in client.responses.input_items.list(created.id, order="asc")]
    assert [item.role for item in items] == ["developer", "user"]
    assert items[0].content[0].text == "Be brief." and items[1].content[0].type == "input_audio"
    newest = await client.responses.input_items.list(created.id, limit=1)
    assert [item.id for item in newest.data] == [items[1].id] and newest.has_more
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(created.id)


async def test_store_false_is_not_kept(client):
    created = await client.responses.create(model=MODEL, input="hi", max_output_tokens=2, store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.retrieve(created.id)
    assert "store=false" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:  # OpenAI answers an unknown previous response 400
        await client.responses.create(model=MODEL, input="and?", previous_response_id=created.id)
    assert caught.value.body["param"] == "previous_response_id"
    assert caught.value.body["code"] == "previous_response_not_found"


async def test_the_store_is_bounded(tiny_model_dir, loaded):
    async with sdk_for(tiny_model_dir, loaded, responses_store_entries=2) as (client, _):
        ids = [(await client.responses.create(model=MODEL, input=f"n{i}", max_output_tokens=1)).id for i in range(3)]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(ids[0])  # the oldest went first
        assert [(await client.responses.retrieve(i)).id for i in ids[1:]] == ids[1:]


REFUSALS = [
    (dict(background=True), "background", "background responses are not supported"),
    (dict(tools=[{"type": "web_search"}]), "tools", "tool calling is not supported"),
    (dict(input=[{"type": "function_call_output", "call_id": "c", "output": "x"}]), "input[0].type", "'message'"),
    (dict(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]), "input[0].content[0]",
     "unknown content part type 'input_image'; expected one of input_text, output_text, input_audio, input_file"),
    (dict(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]), "input[0].content[0]",
     "file_id is not accepted"),
    (dict(input=[{"role": "user", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,AA=="}]}]),
     "input[0].content[0]", "this model hears audio; a application/pdf file cannot be read"),
    (dict(input=[{"role": "assistant", "content": [{"type": "input_audio", "input_audio": {"data": "AA==",
                                                                                           "format": "wav"}}]}]),
     "input[0].content[0]", "audio is accepted in user messages only"),
    (dict(temperature=5), "temperature", "less than or equal to 2"),
    (dict(max_output_tokens=100_000), "max_output_tokens", "passes the model's context"),
]


@pytest.mark.parametrize(("change", "param", "words"), REFUSALS)
async def test_each_refusal_names_the_field(client, change, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(**{"model": MODEL, "input": "hi", **change})
    error = caught.value.body
    assert error["param"] == param and words in error["message"]
    assert error["message"].startswith(f"{param}: ") or param == "max_output_tokens"


@pytest.mark.parametrize("fmt", [{"type": "json_object"},
                                 {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}])
async def test_text_format_is_chat_response_format(client, http, fmt):
    """text.format is chat's response_format: the two endpoints accept or refuse each format alike."""
    nested = {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    chat = await http.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
        "response_format": nested if fmt["type"] == "json_schema" else fmt})
    response = await http.post("/v1/responses", json={"model": MODEL, "input": "hi", "max_output_tokens": 4,
                                                      "text": {"format": fmt}})
    assert response.status_code == chat.status_code
    if chat.status_code == 400:
        error, chat_error = response.json()["error"], chat.json()["error"]
        assert error["param"] == "text.format" and error["message"] == chat_error["message"].replace(
            "response_format", "text.format")
    else:
        assert response.json()["text"]["format"] == fmt


async def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="gpt-4o", input="hi")


async def test_responses_parse_with_a_pydantic_model_gives_a_valid_answer(client):
    """text.format json_schema is enforced while decoding, as chat's response_format is: the SDK's
    responses.parse validates every sampled answer of the random-weight model."""
    async def one(seed: int):
        return await client.responses.parse(
            model=MODEL, text_format=Sound, temperature=1.0, max_output_tokens=160,
            input=[{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": part["input_audio"]["data"], "format": "wav"}}
                if part["type"] == "input_audio" else {"type": "input_text", "text": part["text"]}
                for part in sound_question(seed)[0]["content"]]}])

    for response in await asyncio.gather(*(one(seed) for seed in range(6))):
        assert response.status == "completed"
        assert isinstance(response.output_parsed, Sound)
        assert Sound.model_validate_json(response.output_text) == response.output_parsed
