"""torch's CPU threads for each part of a step, as step_settings measures them; and, when asked, where each
decode step's time goes.

The model runner wraps a prefill in `prefill(tokens)`, and each part of a decode step in `decode(rows).part(name)`:
"layers" (the language model), "projection" (the output projection) and "sampling". Each part runs at its shape's
count and is timed; the timings of a step that ends (`done()`) settle the shapes' choices, and a settled choice is
logged and recorded. On a GPU the threads only launch kernels: nothing to set, nothing to time.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from server.runner.step_settings import ROW_BUCKETS, SettingsFile, ThreadChoice, row_bucket, thread_candidates

logger = logging.getLogger(__name__)
PARTS = ("layers", "projection", "sampling")


@dataclass
class BucketSplit:
    """Seconds of each part of the decode steps of one row bucket, step by step (lists of equal length)."""

    layers: list[float] = field(default_factory=list)
    projection: list[float] = field(default_factory=list)
    sampling: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)  # from the step's end to the next step's start


class StepSplit:
    """Where decode steps' time goes, per row bucket (the bench's --step-split sets one on the runner). A step is
    recorded once the next one starts with nothing else run on the model thread between them (no prefill, no rows
    leaving): "rest" is then what passed between the two, the engine's hand-off through the event loop and its
    bookkeeping."""

    def __init__(self) -> None:
        self.buckets: dict[int, BucketSplit] = {}
        self._previous: tuple[int, float, dict[str, float]] | None = None  # bucket, start and parts of the last step

    def step(self, bucket: int, started: float, parts: dict[str, float]) -> None:
        if self._previous is not None:
            previous_bucket, previous_start, previous_parts = self._previous
            split = self.buckets.setdefault(previous_bucket, BucketSplit())
            for part in PARTS:
                getattr(split, part).append(previous_parts[part])
            split.rest.append(started - previous_start - sum(previous_parts.values()))
        self._previous = (bucket, started, parts)

    def interrupt(self) -> None:
        """Something other than a decode step ran (a prefill, rows leaving): the last step's rest is unknown."""
        self._previous = None


class StepThreads:
    """The thread count of every shape of a step on the CPU: `fixed` (--cpu-threads), or measured over the
    server's own first steps of that shape (step_settings) and written to `settings` as it settles, a record of
    what this start chose."""

    def __init__(self, device: torch.device, cores: int, settings: SettingsFile | None = None,
                 fixed: int | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.enabled = device.type == "cpu"
        self.clock = clock
        self._settings = settings if settings is not None else SettingsFile(None, {})
        self._settings.values["threads"] = {}
        candidates = (fixed,) if fixed else thread_candidates(cores)
        self.most = max(candidates)
        shapes = ["prefill", *(f"{part}@{b}" for part in PARTS for b in ROW_BUCKETS)]
        self.choices = {shape: ThreadChoice(candidates) for shape in shapes}
        self.split: StepSplit | None = None

    def measuring(self, *shapes: str) -> bool:
        """Whether any of these shapes ("prefill", "layers@1", ...) is still being measured."""
        return self.enabled and any(not self.choices[shape].settled for shape in shapes)

    def chosen(self) -> dict[str, int]:
        """Every settled shape's count, by shape name ("prefill", "layers@1", "projection@16", ...)."""
        return {shape: choice.chosen for shape, choice in self.choices.items() if choice.settled}

    @contextmanager
    def prefill(self, tokens: int) -> Iterator[None]:
        """A prefill of `tokens` computed positions, timed per position."""
        if not self.enabled:
            yield
            return
        self.interrupt()
        choice = self.choices["prefill"]
        threads = _set_threads(choice.threads())
        started = self.clock()
        yield
        self.record("prefill", threads, (self.clock() - started) / max(1, tokens))

    def decode(self, rows: int) -> "DecodeStep":
        return DecodeStep(self, row_bucket(rows)) if self.enabled else _INERT

    def interrupt(self) -> None:
        """Rows joined or left between two decode steps: the split's next interval is not a plain hand-off."""
        if self.split is not None:
            self.split.interrupt()

    def record(self, shape: str, threads: int, seconds: float) -> None:
        choice = self.choices[shape]
        if choice.record(threads, seconds):
            timings = ", ".join(f"{n}: {1000 * s:.3g} ms" for n, s in sorted(choice.medians().items()))
            logger.info("CPU step settings: %s on %d thread(s) (median %s%s)", shape, choice.chosen, timings,
                        " per token" if shape == "prefill" else "")
            self._settings.values["threads"][shape] = choice.chosen
            self._settings.save()


class DecodeStep:
    """One decode step's parts: each at its count, timed; `done()` once the step succeeded. A step measures one
    part at most: the first of its parts not yet settled (so the layers settle first, then the projection, then
    sampling); the parts after it run on every core meanwhile."""

    def __init__(self, threads: StepThreads, bucket: int) -> None:
        self._threads, self.bucket = threads, bucket
        self._started = threads.clock()
        self._seconds: dict[str, float] = {}
        self._measured: tuple[str, int] | None = None  # the part this step measures, and its count

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        _set_threads(self._count(name))
        started = self._threads.clock()
        yield
        self._seconds[name] = self._threads.clock() - started

    def done(self) -> None:
        threads = self._threads
        if self._measured is not None:
            name, count = self._measured
            threads.record(f"{name}@{self.bucket}", count, self._seconds[name])
        if threads.split is not None and len(self._seconds) == len(PARTS):
            threads.split.step(self.bucket, self._started, self._seconds)

    def _count(self, name: str) -> int:
        choice = self._threads.choices[f"{name}@{self.bucket}"]
        if choice.settled:
            return choice.chosen
        if self._measured is not None:
            return self._threads.most
        self._measured = (name, choice.threads())
        return self._measured[1]


class _InertStep:
    """A GPU's decode step: nothing to set or time."""

    def part(self, name: str):
        return nullcontext()

    def done(self) -> None:
        pass


_INERT = _InertStep()


def _set_threads(threads: int) -> int:
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
