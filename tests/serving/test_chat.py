"""POST /v1/chat/completions with audio parts through the OpenAI SDK."""

import base64
import re

import openai
import pytest

from server.audio.chunking import contiguous_spans
from server.audio.decode import decode_audio
from server.engine.conversation import audio_question
from tests.support.app import MODEL
from tests.support.audio_samples import encode, tone, wav
from tests.support.chat_parts import audio_part, url_part
from tests.support.speech import requires_espeak, speech_track

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


async def test_audio_question_matches_generate(client, reference):
    audio = wav(3.0, seed=11)
    response = await client.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": [audio_part(audio), {"type": "text", "text": "What is this sound?"}]}],
    )
    conversation = audio_question("What is this sound?")
    expected, n_tokens = reference(conversation, [decode_audio(audio)], 24)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert response.usage.completion_tokens == n_tokens
    assert choice.finish_reason == ("length" if n_tokens == 24 else "stop")
    assert response.usage.prompt_tokens_details.audio_tokens == 75
    assert response.model == MODEL and response.id.startswith("chatcmpl-")


@pytest.mark.parametrize("penalty", [1.3, 0.8])
async def test_the_repetition_penalty_counts_the_prompt_as_generate_does(client, reference, penalty):
    audio = wav(2.0, seed=21)
    response = await client.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=0, extra_body={"repetition_penalty": penalty},
        messages=[{"role": "user", "content": [audio_part(audio), {"type": "text", "text": "Say it again."}]}],
    )
    expected, _ = reference(audio_question("Say it again."), [decode_audio(audio)], 24, repetition_penalty=penalty)
    assert response.choices[0].message.content == expected


async def test_several_clips_turns_and_a_system_prompt(client, reference):
    first, second = wav(1.0, seed=12), encode(tone(2.0, seed=13), "mp3")
    messages = [
        {"role": "system", "content": "You listen carefully."},
        {"role": "user", "content": [audio_part(first), url_part(second, "audio/mpeg"), {"type": "text", "text": "Compare them."}]},
        {"role": "assistant", "content": "The second is longer."},
        {"role": "user", "content": "Which one is louder?"},
    ]
    response = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    conversation = [
        {"role": "system", "content": "You listen carefully."},
        *audio_question("Compare them.", clips=2),
        {"role": "assistant", "content": "The second is longer."},
        {"role": "user", "content": "Which one is louder?"},
    ]
    expected, _ = reference(conversation, [decode_audio(first), decode_audio(second)], 16)
    assert response.choices[0].message.content == expected
    assert response.usage.prompt_tokens_details.audio_tokens == 25 + 50


async def test_text_only_chat(client, reference):
    response = await client.chat.completions.create(
        model=MODEL, max_completion_tokens=12, temperature=0, messages=[{"role": "user", "content": "Hello there"}]
    )
    expected, _ = reference([{"role": "user", "content": "Hello there"}], [], 12)
    assert response.choices[0].message.content == expected
    assert response.usage.prompt_tokens_details.audio_tokens == 0


@requires_espeak
async def test_long_audio_becomes_consecutive_clips_cut_at_pauses(client, reference, app):
    samples, _ = speech_track(70.0, seed=14)
    audio = encode(samples[None], "wav")
    question = [audio_part(audio), {"type": "text", "text": "Summarize."}]
    response = await client.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                                    messages=[{"role": "user", "content": question}])
    decoded = decode_audio(audio)
    clips = [decoded[s.start : s.end] for s in contiguous_spans(decoded, app.state.chat.detector)]
    assert len(clips) == 3 and sum(c.shape[0] for c in clips) == decoded.shape[0], "nothing dropped"
    conversation = audio_question("Summarize.", clips=3)
    expected, _ = reference(conversation, clips, 8)
    assert response.choices[0].message.content == expected


async def test_audio_beyond_the_context_says_how_much_fits(client):
    too_long = encode(tone(360.0, seed=15), "mp3")  # 9000 audio tokens; the tiny model's context is 8192
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, max_tokens=4, messages=[
            {"role": "user", "content": [audio_part(too_long, "mp3"), {"type": "text", "text": "Summarize."}]}])
    error = caught.value.body
    assert error["code"] == "context_length_exceeded"
    fits = int(re.search(r"about (\d+) s of audio fit", error["message"]).group(1))
    assert 310 <= fits <= 328  # (8192 - the text's tokens - 4) / ~25 audio tokens per second


async def test_streaming_with_usage(client):
    kwargs = dict(model=MODEL, max_tokens=40, temperature=0,
                  messages=[{"role": "user", "content": [audio_part(wav(2.0, seed=15)), {"type": "text", "text": "Describe."}]}])
    full = await client.chat.completions.create(**kwargs)
    stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == full.choices[0].message.content  # no broken character, nothing lost
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_streaming_without_usage_has_no_usage_chunk(client):
    stream = await client.chat.completions.create(model=MODEL, max_tokens=5, stream=True, temperature=0,
                                                  messages=[{"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason is not None


async def test_seed_makes_sampling_reproducible(client):
    kwargs = dict(model=MODEL, max_tokens=24, temperature=1.0, top_p=0.95, extra_body={"top_k": 50},
                  messages=[{"role": "user", "content": [audio_part(wav(1.5, seed=16)), {"type": "text", "text": "Go."}]}])
    first = await client.chat.completions.create(**kwargs, seed=1234)
    again = await client.chat.completions.create(**kwargs, seed=1234)
    other = await client.chat.completions.create(**kwargs, seed=4321)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


async def test_stop_sequence_cuts_the_answer(client):
    kwargs = dict(model=MODEL, max_tokens=30, temperature=0, messages=[{"role": "user", "content": "Tell me more"}])
    full = (await client.chat.completions.create(**kwargs)).choices[0].message.content
    stop = full[5:8]
    assert len(stop) == 3
    cut = await client.chat.completions.create(**kwargs, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(**kwargs, stop=stop, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert streamed == cut.choices[0].message.content


async def test_min_tokens_and_ignore_eos_force_the_length(client):
    response = await client.chat.completions.create(
        model=MODEL, max_tokens=48, temperature=0, messages=[{"role": "user", "content": "x"}],
        extra_body={"min_tokens": 48, "ignore_eos": True},
    )
    assert response.usage.completion_tokens == 48 and response.choices[0].finish_reason == "length"


async def test_logprobs(client):
    response = await client.chat.completions.create(
        model=MODEL, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
        messages=[{"role": "user", "content": "x"}],
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-5  # greedy picks the most likely


async def test_unset_sampling_fields_follow_the_models_generation_config(client, reference):
    """The tiny model's generation_config.json is the Instruct checkpoint's: it samples at temperature 0.7 with
    top_k 20, top_p 0.5 and repetition penalty 1.1. A request that leaves them out gets exactly those."""
    messages = [{"role": "user", "content": [audio_part(wav(1.0, seed=17)), {"type": "text", "text": "defaults"}]}]
    unset = await client.chat.completions.create(model=MODEL, max_tokens=20, seed=7, messages=messages)
    spelled = await client.chat.completions.create(
        model=MODEL, max_tokens=20, seed=7, messages=messages, temperature=0.7, top_p=0.5,
        extra_body={"top_k": 20, "repetition_penalty": 1.1})
    assert unset.choices[0].message.content == spelled.choices[0].message.content
    other = await client.chat.completions.create(model=MODEL, max_tokens=20, seed=7, messages=messages,
                                                 temperature=1.0, top_p=1.0)
    assert other.choices[0].message.content != unset.choices[0].message.content
    # greedy (temperature 0) still takes the checkpoint's repetition penalty, as generate(do_sample=False) does
    greedy = await client.chat.completions.create(model=MODEL, max_tokens=20, temperature=0, messages=messages)
    expected, _ = reference(audio_question("defaults"), [decode_audio(wav(1.0, seed=17))], 20)
    assert greedy.choices[0].message.content == expected

@pytest.mark.parametrize("file_data", [lambda audio: f"data:audio/wav;base64,{base64.b64encode(audio).decode()}",
                                       lambda audio: base64.b64encode(audio).decode()])
async def test_audio_in_a_file_part_is_heard_as_input_audio(client, file_data):
    audio = wav(1.5, seed=41)
    question = {"type": "text", "text": "What is this sound?"}
    file_part = {"type": "file", "file": {"file_data": file_data(audio), "filename": "clip.wav"}}
    by_file, by_audio = [await client.chat.completions.create(
        model=MODEL, max_tokens=12, temperature=0, messages=[{"role": "user", "content": [part, question]}])
        for part in (file_part, audio_part(audio))]
    assert by_file.choices[0].message.content == by_audio.choices[0].message.content
    assert by_file.usage.prompt_tokens == by_audio.usage.prompt_tokens
    assert by_file.usage.prompt_tokens_details.audio_tokens == 37


@pytest.mark.parametrize(("file", "words"), [
    ({"file_id": "file-abc"}, "file_id is not accepted"),
    ({"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}, "a application/pdf file cannot be read"),
])
async def test_a_file_part_that_is_not_audio_data_is_refused(client, file, words):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": [{"type": "file", "file": file}, {"type": "text", "text": "?"}]}])
    assert caught.value.body["param"] == "messages[0].content[0]" and words in caught.value.body["message"]
