"""CPU step settings chosen by measurement: how many torch threads each part of a step gets, per shape.

No one thread count suits every part of a step. A decode step's layers are hundreds of small operations, each
split across the threads and waiting for the slowest, so a few rows may run faster on fewer threads; its output
projection reads the whole vocabulary matrix (320 MB for the small preset's 156,032 rows, 2.5 GB for the 7B's in
float32), which one thread cannot pull through memory fast enough. Which count wins depends on the CPU, its
memory, the model and what else runs beside the model (the event loop streaming tokens, other processes). So it is
measured, not assumed: each shape settles on its own count from timings of the server's own steps.

Shapes: the prefill (threads for the encoder and the prompt, timed per computed position), and per row bucket of a
decode step (1, 2, 4, 8, 16, 32; more rows take 32's): its layers, its output projection and its sampling. Until a
shape has settled, its runs take the candidate counts in turn; a decode step measures one part at a time (the
layers first, then the projection, then sampling; the parts not yet measured run on every core). The first run of
each candidate is a warm-up; after WARMUP + 2 runs of each, a candidate whose fastest run is DROP_OUT times slower
than the best median drops out (so a poor one costs few steps), and after SAMPLES timed runs of each the fastest
median wins. A count within TIE of the fastest with fewer threads wins instead: fewer threads leave more room for
the rest of the server. Medians, not minima: the count that is fastest while the rest of the server runs beside
it is the one wanted.

This file also keeps what the CPU path measures (SettingsFile): a JSON file per model shape, CPU model, core count
and torch version, under the user's cache folder.
"""

import hashlib
import json
import logging
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ROW_BUCKETS = (1, 2, 4, 8, 16, 32)
WARMUP = 1  # runs of each candidate not counted: the first wakes its threads and fills its caches
SAMPLES = 6  # timed runs of each candidate before a shape settles
DROP_OUT = 1.5  # a candidate this many times slower than the best stops being tried
TIE = 0.03  # fewer threads win when no more than this much slower than the fastest


def row_bucket(rows: int) -> int:
    """The decode bucket of a step of `rows` rows: the smallest bucket that holds them, or the largest."""
    return next((bucket for bucket in ROW_BUCKETS if rows <= bucket), ROW_BUCKETS[-1])


def thread_candidates(cores: int) -> tuple[int, ...]:
    """Every count up to 4 cores; above, the powers of two below `cores`, one fewer than all, and all."""
    if cores <= 4:
        return tuple(range(1, cores + 1))
    powers = [1 << i for i in range(cores.bit_length()) if 1 << i < cores]
    return tuple(sorted({*powers, cores - 1, cores}))


class ThreadChoice:
    """One shape's thread count: fixed, or measured over its own runs until it settles."""

    def __init__(self, candidates: Sequence[int], chosen: int | None = None) -> None:
        self.live = list(candidates)
        self.runs: dict[int, list[float]] = {c: [] for c in candidates}
        self.chosen = chosen if chosen is not None else (candidates[0] if len(candidates) == 1 else None)
        self._turn = 0

    @property
    def settled(self) -> bool:
        return self.chosen is not None

    def threads(self) -> int:
        """The count the next run of this shape takes."""
        return self.chosen if self.chosen is not None else self.live[self._turn % len(self.live)]

    def record(self, threads: int, seconds: float) -> bool:
        """A run at `threads` took `seconds`; True when this settles the choice."""
        if self.chosen is not None or threads not in self.live:
            return False
        self.runs[threads].append(seconds)
        self._turn += 1
        done = min(len(self.runs[c]) for c in self.live) - WARMUP
        if done >= 2 and len(self.live) > 1:  # noise only adds time: a count drops out on its fastest run
            best = min(self.median(c) for c in self.live)
            self.live = [c for c in self.live if min(self.runs[c][WARMUP:]) <= DROP_OUT * best]
        if done >= SAMPLES or len(self.live) == 1 and done >= 2:
            fastest = min(self.median(c) for c in self.live)
            self.chosen = min(c for c in self.live if self.median(c) <= (1 + TIE) * fastest)
            return True
        return False

    def median(self, threads: int) -> float:
        return statistics.median(self.runs[threads][WARMUP:])

    def medians(self) -> dict[int, float]:
        """Median seconds of every candidate measured past its warm-up."""
        return {c: self.median(c) for c, runs in self.runs.items() if len(runs) > WARMUP}


def fastest_runs(runs: dict[str, Callable[[], object]], reps: int, clock: Callable[[], float]) -> dict[str, float]:
    """Seconds of each callable's fastest call of `reps` (after one warm-up), taken in turn, rep by rep: other
    work on the machine only ever adds time, so the fastest call is the kernel's own cost."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps + 1):
        for name, run in runs.items():
            started = clock()
            run()
            if rep:
                times[name].append(clock() - started)
    return {name: min(t) for name, t in times.items()}


class SettingsFile:
    """The measured settings of one model shape on one machine, as JSON: {"packed_over_plain": {...},
    "threads": {...}}, under the key they were measured for."""

    def __init__(self, folder: Path | None, key: dict) -> None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = folder / f"{digest}.json" if folder is not None else None
        self.key = key
        self.values: dict = self._read()

    def _read(self) -> dict:
        if self.path is None or not self.path.exists():
            return {}
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring the unreadable step settings in %s: %s", self.path, exc)
            return {}
        return saved.get("settings", {}) if saved.get("key") == self.key else {}

    def save(self) -> None:
        """Written to a temporary file and renamed, so a reader never sees half a file."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps({"key": self.key, "settings": self.values}, indent=1, sort_keys=True))
            partial.replace(self.path)
        except OSError as exc:  # a read-only home must not stop the server: it measures again next time
            logger.warning("could not keep the step settings in %s: %s", self.path, exc)


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it, with its family and model numbers (a virtual machine may
    name only the maker: "AMD EPYC (family 25, model 17)")."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if not name.strip():
                break  # the first processor's block is enough
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
