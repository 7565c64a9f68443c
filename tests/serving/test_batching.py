"""Requests join the running batch as they arrive, and each answer is exactly what it would be alone."""

import asyncio

import pytest

from server.audio.decode import decode_audio
from server.engine.conversation import audio_question
from tests.support.app import MODEL, metric
from tests.support.audio_samples import wav
from tests.support.chat_parts import audio_part

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

# (clip seconds, prompt, max_tokens, arrival delay in seconds): different lengths, prompts, outputs and arrivals,
# the later ones while the first are still decoding
WORKLOAD = [
    (1.0, "What is this?", 60, 0.0),
    (2.5, "Describe the sound in detail.", 12, 0.0),
    (5.0, "Is there speech?", 33, 0.005),
    (0.5, "Name the instrument.", 20, 0.05),
    (8.0, "Transcribe it.", 48, 0.08),
    (3.0, "How many sources are there?", 7, 0.1),
    (None, "Say something without audio.", 25, 0.12),
    (12.0, "What happens at the end?", 30, 0.15),
]


async def test_concurrent_greedy_requests_join_the_batch_and_stay_token_identical(client, http, reference):
    clips = {i: wav(seconds, seed=100 + i) for i, (seconds, *_rest) in enumerate(WORKLOAD) if seconds}
    steps_before = await metric(http, "qwen2_audio_batch_size_count")
    rows_before = await metric(http, "qwen2_audio_batch_size_sum")
    prefills_before = await metric(http, "qwen2_audio_prefill_seconds_count")

    async def one(i: int):
        seconds, prompt, max_tokens, delay = WORKLOAD[i]
        await asyncio.sleep(delay)
        content = [audio_part(clips[i]), {"type": "text", "text": prompt}] if seconds else prompt
        return await client.chat.completions.create(
            model=MODEL, max_tokens=max_tokens, temperature=0, messages=[{"role": "user", "content": content}]
        )

    responses = await asyncio.gather(*(one(i) for i in range(len(WORKLOAD))))

    steps = await metric(http, "qwen2_audio_batch_size_count") - steps_before
    rows = await metric(http, "qwen2_audio_batch_size_sum") - rows_before
    prefills = await metric(http, "qwen2_audio_prefill_seconds_count") - prefills_before
    assert prefills > 1, "the staggered requests should have been admitted at different steps"
    assert rows / steps > 1.5, "requests were not decoded together"

    for i, response in enumerate(responses):
        seconds, prompt, max_tokens, _ = WORKLOAD[i]
        if seconds:
            conversation = audio_question(prompt)
            expected, n_tokens = reference(conversation, [decode_audio(clips[i])], max_tokens)
        else:
            expected, n_tokens = reference([{"role": "user", "content": prompt}], [], max_tokens)
        assert response.choices[0].message.content == expected, f"request {i} differs from generate() alone"
        assert response.usage.completion_tokens == n_tokens
    assert len({r.choices[0].message.content for r in responses}) == len(WORKLOAD)  # answers follow their inputs
