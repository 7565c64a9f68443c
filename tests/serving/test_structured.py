"""Structured outputs (response_format json_object / json_schema) through the OpenAI SDK, on the random-weight model:
its tokens are noise, so every answer that parses does so because decoding was constrained."""

import asyncio
import json

import openai
import pytest

from server.audio.decode import decode_audio
from server.engine.conversation import audio_question
from tests.support.app import MODEL, metric
from tests.support.audio_samples import wav
from tests.support.chat_parts import Sound, audio_part, sound_question


async def test_parse_with_a_pydantic_model_gives_a_valid_answer_for_every_seed(client):
    async def one(seed: int):
        return await client.chat.completions.parse(model=MODEL, messages=sound_question(seed), response_format=Sound,
                                                   seed=seed, temperature=1.0, max_tokens=160)

    responses = await asyncio.gather(*(one(seed) for seed in range(24)))
    for response in responses:
        choice = response.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(choice.message.parsed, Sound)
        assert Sound.model_validate_json(choice.message.content) == choice.message.parsed
    assert len({r.choices[0].message.content for r in responses}) > 12  # sampled, not one fixed answer


async def test_json_object_answers_are_json_objects(client):
    """Any object: its keys and strings are unbounded, and the random model's run to hundreds of tokens (up to 1003
    with these seeds), hence the room; an answer cut by max_tokens would say "length", as OpenAI's does."""

    async def one(seed: int):
        return await client.chat.completions.create(model=MODEL, messages=sound_question(seed, "Answer in JSON."),
                                                    response_format={"type": "json_object"}, seed=seed,
                                                    max_tokens=1500)

    for response in await asyncio.gather(*(one(seed) for seed in range(8))):
        assert response.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(response.choices[0].message.content), dict)


async def test_a_streamed_structured_answer_adds_up_to_the_whole_one(client):
    kwargs = dict(model=MODEL, messages=sound_question(3), seed=3, temperature=1.0, max_tokens=160,
                  response_format={"type": "json_schema", "json_schema": {
                      "name": "sound", "strict": True, "schema": openai.pydantic_function_tool(Sound)["function"][
                          "parameters"]}})
    whole = await client.chat.completions.create(**kwargs)
    stream = await client.chat.completions.create(**kwargs, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == whole.choices[0].message.content
    Sound.model_validate_json(text)


async def test_constrained_and_free_rows_share_a_batch_and_the_free_rows_stay_token_identical(client, http, reference):
    free = [(wav(2.0, seed=40 + i), f"Describe sound {i}.", 24 + 6 * i) for i in range(3)]
    steps_before = await metric(http, "qwen2_audio_batch_size_count")
    rows_before = await metric(http, "qwen2_audio_batch_size_sum")

    async def constrained(seed: int):
        return await client.chat.completions.parse(model=MODEL, messages=sound_question(seed), response_format=Sound,
                                                   seed=seed, temperature=1.0, max_tokens=160)

    async def unconstrained(clip: bytes, prompt: str, max_tokens: int):
        content = [audio_part(clip), {"type": "text", "text": prompt}]
        return await client.chat.completions.create(model=MODEL, max_tokens=max_tokens, temperature=0,
                                                    messages=[{"role": "user", "content": content}])

    results = await asyncio.gather(*(constrained(seed) for seed in (101, 102, 103)),
                                   *(unconstrained(*request) for request in free))
    steps = await metric(http, "qwen2_audio_batch_size_count") - steps_before
    rows = await metric(http, "qwen2_audio_batch_size_sum") - rows_before
    assert rows / steps > 3, "the constrained and free requests were not decoded together"
    for response in results[:3]:
        assert isinstance(response.choices[0].message.parsed, Sound)
    for response, (clip, prompt, max_tokens) in zip(results[3:], free):
        expected, n_tokens = reference(audio_question(prompt), [decode_audio(clip)], max_tokens)
        assert response.choices[0].message.content == expected
        assert response.usage.completion_tokens == n_tokens


@pytest.mark.parametrize(("schema", "words"), [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)a"}}}, "look-around"),
    ({"type": "wavelet"}, "wavelet"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "missing"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),  # not enforceable
])
async def test_a_schema_the_library_cannot_compile_is_a_400_naming_the_problem(client, schema, words):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=sound_question(1), max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "broken", "schema": schema}})
    error = caught.value.body
    assert error["param"] == "response_format" and error["code"] == "invalid_json_schema"
    assert "'broken'" in error["message"] and words in error["message"], error["message"]


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema"}, {"type": "xml"}, {"type": "json_schema", "json_schema": {"name": "no spaces allowed"}},
])
async def test_a_malformed_response_format_is_a_400(http, response_format):
    response = await http.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
        "response_format": response_format})
    assert response.status_code == 400
    assert "response_format" in response.json()["error"]["message"]
