"""A step that fails at any point leaves the running batch exactly as it was (issue 17: GPU-safe memory).

The failure is injected at every tensor operation of the step in turn (a TorchDispatchMode that raises torch's
out-of-memory error at its n-th call), which covers every allocation a GPU could refuse: after each, the batch's
whole state (cache contents and views, masks, positions, sampler tables and seeded generators) must be what it was,
and the next clean step must produce the tokens a run that never failed produced.
"""

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from server.engine.request import OutOfMemory
from server.runner.model_runner import Qwen2AudioRunner
from tests.support.runners import make_runner, requests

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


class FailAt(TorchDispatchMode):
    """Raises torch's out-of-memory error at the n-th tensor operation that can allocate (counting from 1; views
    cannot, and are not counted); counts them all."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.count = n, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.is_view:
            return func(*args, **(kwargs or {}))
        self.count += 1
        if self.count == self.n:
            raise torch.OutOfMemoryError(f"injected at operation {self.n} ({func})")
        return func(*args, **(kwargs or {}))


def state(runner: Qwen2AudioRunner) -> dict:
    """Everything a step may change that the next steps see, copied (where in its buffers a layer keeps its rows,
    and how large the buffers are, may differ after a merge rolled back: its contents may not)."""
    batch = runner._batch
    layers = [(layer.rows, layer.length, layer.keys.clone(), layer.values.clone())
              for layer in batch.cache.layers]
    sampler = batch.sampler
    return {
        "seq_ids": list(batch.seq_ids), "mask": batch.attention_mask.clone(), "positions": batch.positions.clone(),
        "last": batch.last_tokens.clone(), "generated": list(sampler.generated), "layers": layers,
        "history": None if sampler.history is None else sampler.history.clone(),
        "counts": None if sampler.counts is None else sampler.counts.clone(),
        "generators": [g.get_state() for g in sampler.generators if g is not None],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        if key == "layers":
            for (*ints_a, keys_a, values_a), (*ints_b, keys_b, values_b) in zip(before[key], after[key]):
                assert ints_a == ints_b
                assert torch.equal(keys_a, keys_b) and torch.equal(values_a, values_b)
        elif key == "generators":
            assert all(torch.equal(a, b) for a, b in zip(before[key], after[key]))
        elif isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key


def operations(fn) -> int:
    counter = FailAt(0)
    with counter:
        fn()
    return counter.count


def fail_at_every_operation(runner: Qwen2AudioRunner, fn, first: int = 1):
    """Runs `fn` failing at its first operation, then its second, ... until it runs through; after every failure
    the state must be as before. Returns what the run that went through returned."""
    for n in itertools.count(first):
        before, mode = state(runner), FailAt(n)
        try:
            with mode:
                result = fn()
        except OutOfMemory:
            assert_same(before, state(runner))
            continue
        assert mode.count < n and n > first  # it went through, having failed at every operation before
        return result


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_a_decode_step_failing_at_any_operation_changes_nothing(model, static):
    reference, runner = make_runner(model, static), make_runner(model, static)
    for r in (reference, runner):
        r.prefill(requests(model, 0, 1.0, 2.5, 0.5))
    for _ in range(3):
        step = fail_at_every_operation(runner, runner.decode)
        assert step.tokens == reference.decode().tokens  # as if no step had ever failed


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_rows_failing_to_join_at_any_operation_leave_the_running_batch_as_it_was(model, static):
    """The merge of a prefilled group into the running batch fails at each of its operations: only the joining
    requests fail, and the running rows decode on as if they had never been tried."""
    alone, runner, counter = make_runner(model, static), make_runner(model, static), make_runner(model, static)
    for r in (alone, runner, counter):
        r.prefill(requests(model, 0, 1.0, 2.0))
    joining = requests(model, 10, 3.0, 0.5)  # wider than the running rows: every row moves in the new buffers
    before_merge = operations(lambda: counter._prefill(joining))
    assert operations(lambda: counter.prefill(joining)) > before_merge
    step = fail_at_every_operation(runner, lambda: runner.prefill(joining), first=before_merge - 3)
    assert set(step.tokens) == {10, 11} and runner.batch_size == 4
    runner.release([10, 11])
    assert [runner.decode().tokens for _ in range(2)] == [alone.decode().tokens for _ in range(2)]
