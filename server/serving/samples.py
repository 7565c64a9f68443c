"""`n` > 1: several samples of one request, each a sequence of its own in the engine, run and read together.

The samples share one Prompt object: submitted back to back, they join the batch in one prefill, which the model
side computes once and copies into n rows (audio encoded once). Each has its own generator: sample i is seeded
with `seed + i` (wrapped into the 64-bit range), so a seeded request gives the same n answers again; without a seed
each draws from the process's generator. Greedy samples are identical, as OpenAI's are.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from server.engine.engine import Engine
from server.engine.request import Prompt, RequestOutput, SamplingParams
from server.engine.sequence import RequestStream
from server.metrics import Metrics
from server.serving.generation import Completion, collect, events, submit

_SEED_RANGE = 2**64  # torch's generators take seeds in [-2**63, 2**64)


def sample_seed(seed: int | None, index: int) -> int | None:
    if seed is None:
        return None
    seed += index
    return seed - _SEED_RANGE if seed >= _SEED_RANGE else seed


def submit_samples(engine: Engine, metrics: Metrics, prompt: Prompt, params: SamplingParams,
                   n: int) -> list[RequestStream]:
    """n sequences of one prompt, queued together (all or none: a full queue cancels those already in)."""
    streams: list[RequestStream] = []
    try:
        for index in range(n):
            streams.append(submit(engine, metrics, prompt, replace(params, seed=sample_seed(params.seed, index)),
                                  count_prompt=index == 0))
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise
    return streams


async def collect_samples(streams: list[RequestStream], timeout_s: float) -> list[Completion]:
    """Every sample to its end; if one fails, the others stop too (a cancelled sequence sends no more events, so
    their readers are cancelled, not left waiting)."""
    tasks = [asyncio.create_task(collect(stream, timeout_s)) for stream in streams]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def merged_events(streams: list[RequestStream], timeout_s: float) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The samples' events as they come, each with its sample's index; the first error ends them all. Closing the
    generator (a client gone) cancels every sample."""
    queue: asyncio.Queue[tuple[int, RequestOutput | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for event in events(stream, timeout_s):
                queue.put_nowait((index, event))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                running -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.cancel()
