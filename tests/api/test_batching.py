"""Requests that arrive together are decoded together, and each answer is exactly what it would be alone."""

import asyncio

from server.audio.decode import decode_audio
from tests.api.conftest import MODEL, metric
from tests.api.test_chat import audio_part
from tests.audio_samples import wav

# (clip seconds, prompt, max_tokens, arrival delay in seconds): different lengths, prompts, outputs and arrivals
WORKLOAD = [
    (1.0, "What is this?", 40, 0.0),
    (2.5, "Describe the sound in detail.", 12, 0.0),
    (5.0, "Is there speech?", 33, 0.005),
    (0.5, "Name the instrument.", 20, 0.01),
    (8.0, "Transcribe it.", 48, 0.01),
    (3.0, "How many sources are there?", 7, 0.02),
    (None, "Say something without audio.", 25, 0.02),
    (12.0, "What happens at the end?", 30, 0.03),
]


async def test_concurrent_greedy_requests_are_batched_and_token_identical(client, http, reference):
    clips = {i: wav(seconds, seed=100 + i) for i, (seconds, *_rest) in enumerate(WORKLOAD) if seconds}
    batches_before = await metric(http, "qwen2_audio_batch_size_count")
    rows_before = await metric(http, "qwen2_audio_batch_size_sum")

    async def one(i: int):
        seconds, prompt, max_tokens, delay = WORKLOAD[i]
        await asyncio.sleep(delay)
        content = [audio_part(clips[i]), {"type": "text", "text": prompt}] if seconds else prompt
        return await client.chat.completions.create(
            model=MODEL, max_tokens=max_tokens, temperature=0, messages=[{"role": "user", "content": content}]
        )

    responses = await asyncio.gather(*(one(i) for i in range(len(WORKLOAD))))

    batches = await metric(http, "qwen2_audio_batch_size_count") - batches_before
    rows = await metric(http, "qwen2_audio_batch_size_sum") - rows_before
    assert rows == len(WORKLOAD)
    assert batches < len(WORKLOAD), "no two requests shared a batch"

    for i, response in enumerate(responses):
        seconds, prompt, max_tokens, _ = WORKLOAD[i]
        if seconds:
            conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompt}]}]
            expected, n_tokens = reference(conversation, [decode_audio(clips[i])], max_tokens)
        else:
            expected, n_tokens = reference([{"role": "user", "content": prompt}], [], max_tokens)
        assert response.choices[0].message.content == expected, f"request {i} differs from generate() alone"
        assert response.usage.completion_tokens == n_tokens
    assert len({r.choices[0].message.content for r in responses}) == len(WORKLOAD)  # answers follow their inputs
