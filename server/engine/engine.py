"""The engine: one worker that owns the model runner and runs iteration-level continuous batching.

Interface (what the API layer sees): `submit(prompt, params) -> RequestStream`, an async iterator of
`RequestOutput` events with `cancel()`. Inside, every iteration decodes one token for each running request,
then admits waiting requests: their audio is encoded and their prompts prefilled together, and they join the
running batch for the next step. A finished or cancelled request leaves the batch (and its cache) at once.
"""

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.heap import HeapTrimmer
from server.engine.model_runner import BatchState, ModelRunner, StepOutput
from server.engine.request import EngineError, OutOfMemory, Prompt, RequestOutput, SamplingParams
from server.engine.scheduler import Scheduler
from server.metrics import Metrics

logger = logging.getLogger(__name__)


class RequestTooLargeError(EngineError):
    """The request can never fit the KV-cache budget (a 400, not a wait)."""


class QueueFullError(EngineError):
    """Too many requests are waiting already (a 429: come back later)."""


MAX_CONSECUTIVE_FAILURES = 3  # steps failing in a row mean the engine itself is broken, not one batch
ROW_CAP_RECOVERY_STEPS = 100  # after running out of memory, the batch may grow by one row per this many good steps
IDLE_TRIM_S = 1.0  # idle this long after work, the engine gives freed heap memory back (server/engine/heap.py)


@dataclass(slots=True)
class EngineConfig:
    max_batch_size: int = 16
    batch_wait_s: float = 0.005
    kv_budget_tokens: int = 65_536
    max_queue: int = 256


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

    @property
    def max_total_tokens(self) -> int:
        return self.prompt.num_tokens + self.params.max_tokens

    def prefill_input(self) -> tuple[Prompt, SamplingParams]:
        """What to prefill: the prompt, plus the tokens already generated if the request was preempted."""
        if not self.output_ids:
            return self.prompt, self.params
        prompt = dataclasses.replace(self.prompt, token_ids=self.prompt.token_ids + self.output_ids)
        params = dataclasses.replace(self.params, min_tokens=max(0, self.params.min_tokens - len(self.output_ids)))
        return prompt, params

    def fail(self, error: Exception) -> None:
        if not self.finished:
            self.finished = True
            self.events.put_nowait(error)


class RequestStream:
    """The events of one request, ending with the one that carries `finish_reason`."""

    def __init__(self, sequence: Sequence) -> None:
        self._seq = sequence
        self._done = False

    @property
    def request_id(self) -> str:
        return self._seq.request_id

    def cancel(self) -> None:
        """Stop generating for this request; its batch slot and cache are freed at the next step."""
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
        self.scheduler = Scheduler(config.max_batch_size, config.kv_budget_tokens)
        self._waiting: deque[Sequence] = deque()
        self._arrived = asyncio.Event()
        self._running: list[Sequence] = []
        self._joining: list[Sequence] = []  # being admitted this iteration: popped from the queue, not yet running
        self._state: BatchState | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Tokenizing and feature extraction run beside the model thread, one at a time (the tokenizer is not
        # safe to share between threads), so they overlap with decoding instead of stalling it.
        self._prep_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prep")
        self._ids = itertools.count()
        self._loop_task: asyncio.Task | None = None
        self._failures = 0
        self._row_cap = config.max_batch_size  # lowered when decoding runs out of memory, regained slowly
        self._good_steps = 0
        self._heap = HeapTrimmer()
        self.ready = False
        metrics.kv_budget.set(config.kv_budget_tokens)

    async def start(self) -> None:
        await self._run(self.runner.warmup)
        self._loop_task = asyncio.create_task(self._loop(), name="engine-loop")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for seq in [*self._running, *self._waiting]:
            seq.fail(EngineError("the server is shutting down"))
        self._executor.shutdown(wait=True)
        self._prep_executor.shutdown(wait=True)

    async def prepare(self, conversation: list[dict], clips: list) -> Prompt:
        """Tokenize a chat conversation and extract features for its clips (in order), off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prep_executor, self.runner.prepare, conversation, clips)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> RequestStream:
        if not self.ready:
            raise EngineError("the engine is not running")
        detokenizer = IncrementalDetokenizer(self.runner.decode_tokens, params.stop)
        seq = Sequence(request_id or f"req-{next(self._ids)}", prompt, params, detokenizer)
        self._drop_cancelled_waiting()
        if len(self._waiting) >= self.config.max_queue:
            raise QueueFullError(f"{len(self._waiting)} requests are already waiting; retry shortly")
        if not self.scheduler.fits_alone(seq):
            raise RequestTooLargeError(
                f"the request needs {seq.max_total_tokens} tokens of KV cache (prompt plus max_tokens); this server's "
                f"budget is {self.config.kv_budget_tokens}: lower max_tokens or send shorter audio"
            )
        self._waiting.append(seq)
        self._arrived.set()
        self.metrics.queue_depth.set(self.queue_depth)
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
                self._fail_step([*self._running, *self._joining], exc)
                self._running, self._joining, self._state = [], [], None
            self._publish_load()
            self._heap.worked()
            if self._heap.due():
                await self._run(self._heap.trim)  # on the model thread, between steps
        logger.critical("%d model steps failed in a row, and so did a probe request: the engine stops and readiness "
                        "turns false", self._failures)
        self.ready = False
        for seq in self._waiting:
            seq.fail(EngineError("the engine has stopped after repeated model failures"))
        self._waiting.clear()

    def _fail_step(self, carried: list[Sequence], exc: Exception) -> None:
        self._failures += 1
        logger.error("a model step failed; failing its requests: %s", ", ".join(seq.request_id for seq in carried),
                     exc_info=exc)
        for seq in carried:
            seq.fail(EngineError(f"the model failed on this batch ({type(exc).__name__})"))

    async def _still_works(self) -> bool:
        """After failures in a row: whether a known-good request still runs. If it does, the failures were those
        requests' own (inputs no check foresaw), and a few such requests must not be able to stop the server."""
        try:
            prompt = await asyncio.get_running_loop().run_in_executor(self._prep_executor, self.runner.probe_prompt)
            await self._run(self.runner.run_probe, prompt)
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
        self.metrics.batch_size.observe(len(self._running))
        try:
            step = await self._run(self.runner.decode, self._state)
        except OutOfMemory as exc:
            await self._preempt(exc)
            return False
        self.metrics.decode_step_seconds.observe(step.seconds)
        self._running = await self._advance(self._running, step, self._state)
        if not self._running:
            self._state = None
        self._regain_rows()
        return True

    def _regain_rows(self) -> None:
        if self._row_cap < self.config.max_batch_size:
            self._good_steps += 1
            if self._good_steps >= ROW_CAP_RECOVERY_STEPS:
                self._row_cap, self._good_steps = self._row_cap + 1, 0

    async def _admit(self) -> None:
        admitted = self.scheduler.admit(self._running, self._waiting, self._row_cap)
        self._joining = [seq for seq in admitted if not seq.cancelled]
        while self._joining:
            joining = self._joining
            prompts, params = zip(*(seq.prefill_input() for seq in joining), strict=True)
            try:
                state, step = await self._run(self.runner.prefill, list(prompts), list(params))
            except Exception as exc:
                if len(joining) == 1 and not isinstance(exc, OutOfMemory):
                    self._fail_step(joining, exc)  # its own input, or a broken device: _still_works tells which
                    self._joining = []
                    break
                self._joining = self._shed(joining, exc)
                continue
            self.metrics.prefill_seconds.observe(step.seconds)
            if step.encoder_seconds:
                self.metrics.encoder_seconds.observe(step.encoder_seconds)
            joining = await self._advance(joining, step, state)
            if joining:
                self._state = state if self._state is None else await self._run(self.runner.merge, self._state, state)
                self._running += joining
            self._joining = []

    async def _preempt(self, exc: OutOfMemory) -> None:
        """Out of memory while decoding: the newest half of the batch goes back to the head of the queue.

        Their streams stay open; when they are admitted again, their prompt and the tokens they already produced
        are prefilled anew and decoding goes on from there (vLLM's preemption by recomputation).
        """
        if len(self._running) == 1:
            logger.error("out of memory decoding request %s alone: %s", self._running[0].request_id, exc)
            self._running[0].fail(EngineError("out of memory: this request does not fit on the device"))
            self._running, self._state = [], None
            return
        half = len(self._running) // 2
        back = self._running[half:]
        self._row_cap, self._good_steps = half, 0
        logger.warning("out of memory decoding %d requests; %d go back to the queue, batches capped at %d rows",
                       len(self._running), len(back), half)
        await self._run(self.runner.filter, self._state, list(range(half)))
        self._running = self._running[:half]
        self._waiting.extendleft(reversed(back))

    def _shed(self, joining: list[Sequence], exc: Exception) -> list[Sequence]:
        """A prefill failed: retry with half, the other half back at the head of the queue.

        Out of memory, a smaller group may fit; any other failure is halved down to the one request that causes
        it, so the others in its group are served as if it had never come.
        """
        oom = isinstance(exc, OutOfMemory)
        if len(joining) == 1:  # only out of memory gets here alone
            logger.error("out of memory prefilling request %s alone: %s", joining[0].request_id, exc)
            joining[0].fail(EngineError("out of memory: this request does not fit next to the running batch"))
            return []
        keep, back = joining[: len(joining) // 2], joining[len(joining) // 2 :]
        logger.warning("%s prefilling %d requests; retrying %d, requeueing %d",
                       "out of memory" if oom else f"{type(exc).__name__} ({exc})", len(joining), len(keep), len(back))
        self._waiting.extendleft(reversed(back))
        return keep

    async def _advance(self, rows: list[Sequence], step: StepOutput, state: BatchState) -> list[Sequence]:
        """Hand each row its token; drop the rows that ended from the batch; return those that go on."""
        keep = [i for i, seq in enumerate(rows) if not self._take(seq, step, i)]
        if keep and len(keep) < len(rows):
            await self._run(self.runner.filter, state, keep)
        return [rows[i] for i in keep]

    def _take(self, seq: Sequence, step: StepOutput, row: int) -> bool:
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

    def _drop_cancelled_waiting(self) -> None:
        """Requests whose clients gave up while queued stop holding queue places."""
        if any(seq.cancelled for seq in self._waiting):
            self._waiting = deque(seq for seq in self._waiting if not seq.cancelled)

    def _publish_load(self) -> None:
        self._drop_cancelled_waiting()
        self.metrics.running.set(len(self._running))
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.kv_tokens.set(self._state.kv_tokens if self._state is not None else 0)

    async def _run(self, fn, *args):
        """Run a model call on the model thread, so the event loop keeps serving HTTP meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
