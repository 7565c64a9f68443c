"""The engine: one worker that schedules requests onto the model, with iteration-level continuous batching.

What serving sees: `info` (the model's description), `prepare(conversation, clips) -> Prompt` (on the prep
thread), and `submit(prompt, params) -> RequestStream`, an async iterator of `RequestOutput` events with `cancel()`.
Inside, every iteration decodes one token for each running request, then admits waiting requests: their audio is
encoded and their prompts prefilled together, and they join the running batch for the next step. A finished or
cancelled request leaves the batch (and its cache) at once. The model is reached only through the three objects
of `server.engine.interface`, each on its own thread; this file is plain Python.
"""

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.engine import shedding
from server.engine.heap import HeapTrimmer
from server.engine.interface import LoadedModel, StepOutput
from server.engine.request import (
    BatchLost,
    EngineError,
    OutOfMemory,
    Prompt,
    QueueFullError,
    RequestTooLargeError,
    SamplingParams,
)
from server.engine.scheduler import Scheduler
from server.engine.sequence import RequestStream, Sequence
from server.metrics import Metrics

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # steps failing in a row mean the engine itself is broken, not one batch
IDLE_TRIM_S = 1.0  # idle this long after work, the engine gives freed heap memory back (server/engine/heap.py)


@dataclass(slots=True)
class EngineConfig:
    max_batch_size: int = 16
    batch_wait_s: float = 0.005
    max_queue: int = 256


class Engine:
    def __init__(self, model: LoadedModel, config: EngineConfig, metrics: Metrics) -> None:
        self.info = model.info
        self.config = config
        self._runner, self._processor, self._detokenizer = model.runner, model.processor, model.detokenizer
        self._metrics = metrics
        self._eos = frozenset(model.info.eos_token_ids)
        self.scheduler = Scheduler(config.max_batch_size, *model.info.kv_layout)
        self._waiting: deque[Sequence] = deque()
        self._arrived = asyncio.Event()
        self._running: dict[int, Sequence] = {}  # by sequence id, in order of admission; the runner holds their rows
        self._joining: list[Sequence] = []  # being admitted this iteration: popped from the queue, not yet running
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # tokenizing and log-mels run beside the model thread, so they overlap with decoding instead of stalling it
        self._prep_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prep")
        self._ids = itertools.count()
        self._loop_task: asyncio.Task | None = None
        self._failures = 0
        self._heap = HeapTrimmer()
        self.ready = False
        metrics.kv_budget.set(model.info.kv_budget_tokens)
        metrics.weights_bytes.set(model.info.weights_bytes)
        metrics.queue_depth.set_function(lambda: self.queue_depth)
        metrics.running.set_function(lambda: self.running)
        metrics.kv_tokens.set_function(lambda: self._runner.kv_tokens)
        metrics.gpu_memory_peak.set_function(self._runner.peak_memory_bytes)

    async def start(self) -> None:
        """Warm up (one short request through every path, so the first real one pays no lazy init), then serve."""
        await self._run(self._runner.run_probe, await self._prep(self._processor.probe_prompt))
        self._loop_task = asyncio.create_task(self._loop(), name="engine-loop")
        self._loop_task.add_done_callback(self._loop_ended)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for seq in [*self._running.values(), *self._joining, *self._waiting]:
            seq.fail(EngineError("the server is shutting down"))
        try:  # the model may serve another engine after this one: leave it no rows (a prefill cut short adds some)
            await self._leave([*self._running.values(), *self._joining])
        except Exception:
            logger.exception("releasing the model's rows at shutdown failed")
        self._model_thread.shutdown(wait=True)
        self._prep_thread.shutdown(wait=True)

    async def prepare(self, conversation: list[dict], clips: list) -> Prompt:
        """Tokenize a conversation (server.engine.conversation) and extract its clips' features, on the prep thread."""
        return await self._prep(self._processor.prepare, conversation, clips)

    async def compile_grammar(self, response_format: dict) -> object:
        """A response_format -> SamplingParams.grammar, compiled on the prep thread; ValueError if it cannot be."""
        return await self._prep(self._processor.compile_grammar, response_format)

    @property
    def queue_depth(self) -> int:
        return sum(not seq.cancelled for seq in self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> RequestStream:
        if not self.ready:
            raise EngineError("the engine is not running")
        seq_id = next(self._ids)
        seq = Sequence(seq_id, request_id or f"req-{seq_id}", prompt, params, self._detokenizer)
        self._drop_cancelled_waiting()
        if len(self._waiting) >= self.config.max_queue:
            raise QueueFullError(f"{len(self._waiting)} requests are already waiting; retry shortly")
        if (too_large := self.scheduler.refusal(seq)) is not None:
            raise RequestTooLargeError(too_large)
        self._waiting.append(seq)
        self._arrived.set()
        return RequestStream(seq)

    # ---- the worker loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while self._failures < MAX_CONSECUTIVE_FAILURES or await self._still_works():
            if not self._running:
                await self._wait_for_requests()
            try:
                if self._running and await self._decode():
                    self._failures = 0  # a decode step worked: whatever failed before was that batch's trouble
                await self._admit()
            except Exception as exc:  # a failing step fails the requests it carried, never the engine
                await self._fail([*self._running.values(), *self._joining], exc)
                self._joining = []
            self._drop_cancelled_waiting()
            self._heap.worked()
            if self._heap.due():
                await self._run(self._heap.trim)  # on the model thread, between steps
        logger.critical("%d model steps failed in a row, then a probe request: the engine stops", self._failures)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """Unless stop() ended the loop: readiness turns false, and what it held is answered rather than left waiting."""
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            logger.critical("the engine loop stopped on an unexpected error; readiness turns false", exc_info=exc)
        self.ready = False
        for seq in [*self._running.values(), *self._joining, *self._waiting]:  # those that ended ignore it
            seq.fail(EngineError(f"the engine stopped on an internal error ({type(exc).__name__})" if exc else
                                 "the engine has stopped after repeated model failures"))
        self._waiting.clear()

    async def _fail(self, carried: list[Sequence], exc: Exception) -> None:
        """A step failed: its requests fail and leave the batch; the others and the engine go on."""
        self._failures += 1
        logger.error("a model step failed; failing its requests: %s", ", ".join(seq.request_id for seq in carried),
                     exc_info=exc)
        for seq in carried:
            seq.fail(EngineError(f"the model failed on this batch ({type(exc).__name__})"))
        try:
            await self._leave(carried)
        except Exception:  # the loop must go on; the probe tells whether the model still works
            logger.exception("releasing the failed requests' rows failed too")
            for seq in carried:
                self._running.pop(seq.id, None)

    async def _still_works(self) -> bool:
        """After failures in a row: whether a known-good request still runs. If it does, the failures were those
        requests' own (inputs no check foresaw), and a few such requests must not be able to stop the server."""
        try:
            await self._run(self._runner.run_probe, await self._prep(self._processor.probe_prompt))
        except Exception:
            logger.exception("the probe request failed too")
            return False
        logger.warning("%d model steps failed in a row, but a probe request ran: the engine goes on", self._failures)
        self._failures = 0
        return True

    async def _wait_for_requests(self) -> None:
        """Idle until a request arrives, then give its burst batch_wait_s to arrive too, so they prefill together.
        Idle for IDLE_TRIM_S after some work, the heap's free memory goes back to the system."""
        while not self._waiting:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), IDLE_TRIM_S if self._heap.dirty else None)
            except TimeoutError:
                await self._run(self._heap.trim)
        if self.config.batch_wait_s > 0 and len(self._waiting) < self.config.max_batch_size:
            await asyncio.sleep(self.config.batch_wait_s)

    async def _decode(self) -> bool:
        """One decode step for the running batch; False when it ran out of memory and was cut down instead."""
        self._metrics.batch_size.observe(len(self._running))
        try:
            step = await self._run(self._runner.decode)
        except OutOfMemory as exc:
            await self._preempt(exc)
            return False
        self._metrics.decode_step_seconds.observe(step.seconds)
        await self._advance(step)
        self.scheduler.step_succeeded()
        return True

    async def _admit(self) -> None:
        admitted = self.scheduler.admit(list(self._running.values()), self._waiting)
        self._joining = [seq for seq in admitted if not seq.cancelled]
        while self._joining:
            joining = self._joining
            try:
                step = await self._run(self._runner.prefill, [seq.prefill_input() for seq in joining])
            except BatchLost:
                raise  # the running requests are gone too: the loop fails them all
            except Exception as exc:
                if len(joining) == 1 and not isinstance(exc, OutOfMemory):
                    self._joining = []
                    await self._fail(joining, exc)  # its own input, or a broken device: _still_works tells which
                    break
                self._joining = self._shed(joining, exc)
                continue
            self._metrics.prefill_seconds.observe(step.seconds)
            if step.encoder_seconds:
                self._metrics.encoder_seconds.observe(step.encoder_seconds)
            self._running.update((seq.id, seq) for seq in joining)
            self._joining = []
            await self._advance(step)

    async def _preempt(self, exc: OutOfMemory) -> None:
        """Out of memory while decoding: the newest half of the batch goes back to the head of the queue.

        Their streams stay open; when they are admitted again, their prompt and the tokens they already produced
        are prefilled anew and decoding goes on from there (vLLM's preemption by recomputation).
        """
        rows = list(self._running.values())
        if len(rows) == 1:
            logger.error("out of memory decoding request %s alone: %s", rows[0].request_id, exc)
            rows[0].fail(EngineError("out of memory: this request does not fit on the device"))
            back, requeue = rows, False
        else:
            back, requeue = rows[len(rows) // 2 :], True
            self.scheduler.ran_out_of_memory(len(rows) - len(back))
            logger.warning("out of memory decoding %d requests; %d go back to the queue, batches capped at %d rows",
                           len(rows), len(back), self.scheduler.row_cap)
        await self._leave(back)
        if requeue:
            self._waiting.extendleft(reversed(back))

    def _shed(self, joining: list[Sequence], exc: Exception) -> list[Sequence]:
        """A prefill failed: retry with half (server/engine/shedding.py), the other half back at the queue's head."""
        keep, back = shedding.halve(joining, exc)
        self._waiting.extendleft(reversed(back))
        return keep

    async def _advance(self, step: StepOutput) -> None:
        """Hand each row of the step its token; the requests that ended leave the batch."""
        ended = []
        for seq_id, token in step.tokens.items():
            seq = self._running[seq_id]
            if seq.cancelled:
                seq.finished = True
            else:
                if not seq.output_ids:
                    self._metrics.time_to_first_token.observe(time.perf_counter() - seq.submitted_at)
                self._metrics.tokens_generated.inc()
                seq.take(token, step.logprobs.get(seq_id), self._eos)
            if seq.finished:
                ended.append(seq)
        await self._leave(ended)

    def _drop_cancelled_waiting(self) -> None:
        """Requests whose clients gave up while queued stop holding queue places."""
        if any(seq.cancelled for seq in self._waiting):
            self._waiting = deque(seq for seq in self._waiting if not seq.cancelled)

    async def _leave(self, seqs: list[Sequence]) -> None:
        """These sequences leave the batch. Their rows are released first, so that a stop meanwhile, which
        releases every row still running, leaves none behind."""
        if seqs:
            await self._run(self._runner.release, [seq.id for seq in seqs])
        for seq in seqs:
            self._running.pop(seq.id, None)

    async def _run(self, fn: Callable, *args):
        """Run a model call on the model thread, so the event loop keeps serving HTTP meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)

    async def _prep(self, fn: Callable, *args):
        """Run a processor call on the prep thread."""
        return await asyncio.get_running_loop().run_in_executor(self._prep_thread, fn, *args)
