"""`n` > 1 through the OpenAI SDK: n choices from one prefill, seeded per sample, streamed with their indices."""

import openai
import pytest

from server.audio.decode import decode_audio
from server.engine.conversation import audio_question
from tests.support.app import MODEL, metric
from tests.support.audio_samples import wav
from tests.support.chat_parts import Sound, audio_part

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

CLIP = wav(2.0, seed=60)
SAMPLING = dict(temperature=1.0, top_p=1.0, extra_body={"top_k": 0}, max_tokens=16)


def _messages(question: str = "What is this sound?") -> list[dict]:
    return [{"role": "user", "content": [audio_part(CLIP), {"type": "text", "text": question}]}]


async def test_n_samples_share_one_prefill_and_seed_plus_i_reproduces_each(client, http):
    prefills = await metric(http, "qwen2_audio_prefill_seconds_count")
    encodings = await metric(http, "qwen2_audio_encoder_seconds_count")
    prompt_tokens = await metric(http, "qwen2_audio_prompt_tokens_total")
    response = await client.chat.completions.create(model=MODEL, messages=_messages(), n=3, seed=77, **SAMPLING)
    assert await metric(http, "qwen2_audio_prefill_seconds_count") - prefills == 1  # one prefill for the three
    assert await metric(http, "qwen2_audio_encoder_seconds_count") - encodings == 1  # the audio encoded once

    assert [choice.index for choice in response.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in response.choices]
    assert len(set(texts)) == 3  # three samples, not one answer thrice
    usage = response.usage
    assert usage.prompt_tokens == await metric(http, "qwen2_audio_prompt_tokens_total") - prompt_tokens  # counted once
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    again = await client.chat.completions.create(model=MODEL, messages=_messages(), n=3, seed=77, **SAMPLING)
    assert [choice.message.content for choice in again.choices] == texts
    for i, text in enumerate(texts):  # sample i is the request alone with seed 77 + i
        alone = await client.chat.completions.create(model=MODEL, messages=_messages(), seed=77 + i, **SAMPLING)
        assert alone.choices[0].message.content == text


async def test_usage_counts_the_prompt_once_and_every_completion(client):
    response = await client.chat.completions.create(model=MODEL, messages=_messages(), n=3, seed=5, **SAMPLING)
    single = await client.chat.completions.create(model=MODEL, messages=_messages(), seed=5, **SAMPLING)
    assert response.usage.prompt_tokens == single.usage.prompt_tokens
    assert response.usage.prompt_tokens_details.audio_tokens == single.usage.prompt_tokens_details.audio_tokens
    lengths = []
    for choice in response.choices:  # each sample's length, read from its own request alone
        alone = await client.chat.completions.create(model=MODEL, messages=_messages(), seed=5 + choice.index,
                                                     **SAMPLING)
        lengths.append(alone.usage.completion_tokens)
    assert response.usage.completion_tokens == sum(lengths)


async def test_greedy_n_gives_n_identical_answers_equal_to_generate(client, reference):
    response = await client.chat.completions.create(model=MODEL, messages=_messages("Describe it."), n=3,
                                                    temperature=0, max_tokens=20)
    expected, n_tokens = reference(audio_question("Describe it."), [decode_audio(CLIP)], 20)
    assert [choice.message.content for choice in response.choices] == [expected] * 3
    assert response.usage.completion_tokens == 3 * n_tokens


async def test_streaming_n_chunks_carry_their_choice_index(client):
    kwargs = dict(model=MODEL, messages=_messages(), n=2, seed=31, **SAMPLING)
    whole = await client.chat.completions.create(**kwargs)
    stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    texts, roles, finishes = ["", ""], [], {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        if choice.delta.role:
            roles.append(choice.index)
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert roles == [0, 1]  # each choice opens with its role
    assert texts == [choice.message.content for choice in whole.choices]
    assert finishes == {choice.index: choice.finish_reason for choice in whole.choices}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


async def test_n_beyond_the_batch_is_a_400_naming_n(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=_messages(), n=9, max_tokens=4)
    assert caught.value.body["param"] == "n" and "at most 8" in caught.value.body["message"]


async def test_every_sample_follows_the_response_format(client):
    response = await client.chat.completions.parse(model=MODEL, messages=_messages(), response_format=Sound, n=4,
                                                   seed=8, temperature=1.0, max_tokens=160)
    assert [choice.index for choice in response.choices] == [0, 1, 2, 3]
    assert all(isinstance(choice.message.parsed, Sound) for choice in response.choices)
    assert len({choice.message.content for choice in response.choices}) > 1
