"""The engine: one worker that owns the model runner, fed by a queue, decoding waiting requests together.

Interface (what the API layer sees): `submit(prompt, params) -> RequestStream`, an async iterator of
`RequestOutput` events with `cancel()`. The inside (static batches that shrink as requests finish) is free
to change without touching the API layer.
"""

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.model_runner import ModelRunner, StepOutput
from server.engine.request import EngineError, Prompt, RequestOutput, SamplingParams
from server.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineConfig:
    max_batch_size: int = 16
    batch_wait_s: float = 0.005


class Sequence:
    """A request's state inside the engine."""

    def __init__(self, request_id: str, prompt: Prompt, params: SamplingParams, detokenizer: IncrementalDetokenizer):
        self.request_id = request_id
        self.prompt = prompt
        self.params = params
        self.detokenizer = detokenizer
        self.output_ids: list[int] = []
        self.events: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self.cancelled = False
        self.finished = False
        self.submitted_at = time.perf_counter()


class RequestStream:
    """The events of one request, ending with the one that carries `finish_reason`."""

    def __init__(self, sequence: Sequence) -> None:
        self._seq = sequence
        self._done = False

    @property
    def request_id(self) -> str:
        return self._seq.request_id

    def cancel(self) -> None:
        """Stop generating for this request; its batch slot is freed at the next step."""
        self._seq.cancelled = True

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        item = await self._seq.events.get()
        if isinstance(item, Exception):
            self._done = True
            raise item
        self._done = item.finished
        return item


class Engine:
    def __init__(self, runner: ModelRunner, config: EngineConfig, metrics: Metrics) -> None:
        self.runner = runner
        self.config = config
        self.metrics = metrics
        self._waiting: asyncio.Queue[Sequence] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Tokenizing and feature extraction run beside the model thread, one at a time (the tokenizer is not
        # safe to share between threads), so they overlap with decoding instead of stalling it.
        self._prep_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prep")
        self._ids = itertools.count()
        self._loop_task: asyncio.Task | None = None
        self.ready = False

    async def start(self) -> None:
        await self._run(self.runner.warmup)
        self._loop_task = asyncio.create_task(self._loop(), name="engine-loop")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        while not self._waiting.empty():
            self._waiting.get_nowait().events.put_nowait(EngineError("the server is shutting down"))
        self._executor.shutdown(wait=True)
        self._prep_executor.shutdown(wait=True)

    async def prepare(self, conversation: list[dict], clips: list) -> Prompt:
        """Tokenize a chat conversation and extract features for its clips (in order), off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prep_executor, self.runner.prepare, conversation, clips)

    @property
    def queue_depth(self) -> int:
        return self._waiting.qsize()

    def submit(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> RequestStream:
        if not self.ready:
            raise EngineError("the engine is not running")
        detokenizer = IncrementalDetokenizer(self.runner.decode_tokens, params.stop)
        seq = Sequence(request_id or f"req-{next(self._ids)}", prompt, params, detokenizer)
        self._waiting.put_nowait(seq)
        self.metrics.queue_depth.set(self.queue_depth)
        return RequestStream(seq)

    # ---- the worker loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                await self._run_batch(batch)
            except Exception as exc:  # a failing batch fails its requests, never the engine
                logger.exception("batch of %d requests failed", len(batch))
                for seq in batch:
                    if not seq.finished:
                        seq.finished = True
                        seq.events.put_nowait(EngineError(f"the model failed on this batch: {type(exc).__name__}"))
            finally:
                self.metrics.running.set(0)

    async def _next_batch(self) -> list[Sequence]:
        """Wait for one request, then gather whoever else arrives within batch_wait_s, up to max_batch_size."""
        batch = [await self._waiting.get()]
        deadline = time.perf_counter() + self.config.batch_wait_s
        while len(batch) < self.config.max_batch_size:
            if self._waiting.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._waiting.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._waiting.get_nowait())
        self.metrics.queue_depth.set(self.queue_depth)
        return [seq for seq in batch if not seq.cancelled]

    async def _run_batch(self, batch: list[Sequence]) -> None:
        self.metrics.batch_size.observe(len(batch))
        self.metrics.running.set(len(batch))
        state, step = await self._run(self.runner.prefill, [s.prompt for s in batch], [s.params for s in batch])
        while True:
            keep = [i for i, seq in enumerate(batch) if not self._advance(seq, step, i)]
            if not keep:
                return
            if len(keep) < len(batch):
                batch = [batch[i] for i in keep]
                self.metrics.running.set(len(batch))
                step = await self._run(self.runner.decode, state, keep)
            else:
                step = await self._run(self.runner.decode, state)

    def _advance(self, seq: Sequence, step: StepOutput, row: int) -> bool:
        """Take this step's token for `seq`, send its event; True when the request has ended."""
        if seq.cancelled:
            seq.finished = True
            return True
        token = step.tokens[row]
        seq.output_ids.append(token)
        if len(seq.output_ids) == 1:
            self.metrics.time_to_first_token.observe(time.perf_counter() - seq.submitted_at)
        self.metrics.tokens_generated.inc()
        finish = self._finish_reason(seq, token)
        text = seq.detokenizer.push(token)  # special tokens such as EOS decode to ""
        if seq.detokenizer.stopped:
            finish = "stop"
        if finish is not None:
            text += seq.detokenizer.flush()
            seq.finished = True
        logprob = step.logprobs[row]
        seq.events.put_nowait(RequestOutput(text, [token], [logprob] if logprob else None, finish))
        return seq.finished

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        if token in self.runner.eos_token_ids and not seq.params.ignore_eos:
            return "stop"
        if len(seq.output_ids) >= seq.params.max_tokens:
            return "length"
        return None

    async def _run(self, fn, *args):
        """Run a model call on the model thread, so the event loop keeps serving HTTP meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
