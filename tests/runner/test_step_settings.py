"""The CPU step settings are chosen by measurement: the decisions, driven by a fake clock (no timing thresholds).

A fake machine says how long each part of a step takes at each thread count; "running" a part advances the fake
clock by that much at the thread count torch was set to. The server's own code (StepThreads, ThreadChoice,
kernel_ratios) does the timing and deciding, as it does on a real CPU.
"""

import json
import logging

import pytest
import torch
from transformers import Qwen2AudioForConditionalGeneration

from server.runner import step_settings
from server.runner.cpu import kernel_ratios, pack_linears
from server.runner.step_settings import (
    SAMPLES,
    WARMUP,
    SettingsFile,
    ThreadChoice,
    fastest_runs,
    row_bucket,
    thread_candidates,
)
from server.runner.step_threads import StepSplit, StepThreads
from server.tiny_model import preset_config
from server.tiny_tokenizer import train_tokenizer


class FakeMachine:
    """Seconds of each part at each thread count (from the torch threads the code under test set)."""

    def __init__(self, costs: dict[str, dict[int, float]]) -> None:
        self.costs, self.now = costs, 0.0
        self.runs: dict[tuple[str, int], int] = {}

    def clock(self) -> float:
        return self.now

    def run(self, shape: str, extra: float = 0.0) -> None:
        threads = torch.get_num_threads()
        self.runs[shape, threads] = self.runs.get((shape, threads), 0) + 1
        self.now += self.costs[shape][threads] + extra


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def decode_step(threads: StepThreads, machine: FakeMachine, rows: int, handoff: float = 0.0) -> None:
    """A decode step as the model runner runs it: layers, projection, sampling, each a part at its own count."""
    bucket = row_bucket(rows)
    step = threads.decode(rows)
    with step.part("layers"):
        machine.run(f"layers@{bucket}")
    with step.part("projection"):
        machine.run(f"projection@{bucket}")
    with step.part("sampling"):
        machine.run(f"sampling@{bucket}")
    step.done()
    machine.now += handoff


def settle(threads: StepThreads, machine: FakeMachine, rows: int, limit: int = 200) -> int:
    """Decode steps of `rows` rows until every part of its bucket has settled; returns how many it took."""
    bucket = row_bucket(rows)
    for steps in range(1, limit + 1):
        decode_step(threads, machine, rows)
        if {f"{part}@{bucket}" for part in ("layers", "projection", "sampling")} <= threads.chosen().keys():
            return steps
    raise AssertionError(f"not settled after {limit} steps: {threads.chosen()}")


# the case: one row's layers run faster on one thread, the 156,032-row projection on two; sampling's
# small operations too, on a machine where another process often holds the second core
TWO_CORES = {"layers@1": {1: 0.004, 2: 0.005}, "projection@1": {1: 0.0202, 2: 0.0114},
             "sampling@1": {1: 0.0001, 2: 0.0003}, "layers@16": {1: 0.030, 2: 0.018},
             "projection@16": {1: 0.040, 2: 0.022}, "sampling@16": {1: 0.0009, 2: 0.0012},
             "prefill": {1: 0.0004, 2: 0.00022}}


def test_each_part_of_a_step_settles_on_the_count_that_runs_it_fastest(caplog):
    machine = FakeMachine(TWO_CORES)
    threads = StepThreads(torch.device("cpu"), 2, clock=machine.clock)
    caplog.set_level(logging.INFO, logger="server.runner.step_threads")
    steps = settle(threads, machine, rows=1)
    settle(threads, machine, rows=13)  # 13 rows run in the 16-row bucket
    assert threads.chosen() == {"layers@1": 1, "projection@1": 2, "sampling@1": 1, "layers@16": 2,
                                "projection@16": 2, "sampling@16": 1}
    # one part at a time, the others on every core meanwhile: the layers, each count once as a warm-up then
    # SAMPLES times; the projection, where one thread is so much slower (1.8x) that it drops out after 2; sampling,
    # where two threads (3x slower) drop out after 2
    assert steps == 2 * (WARMUP + SAMPLES) + 2 * (WARMUP + 2) + 2 * (WARMUP + 2)
    assert "CPU step settings: layers@1 on 1 thread(s) (median 1: 4 ms, 2: 5 ms)" in caplog.text
    assert "CPU step settings: projection@1 on 2 thread(s) (median 1: 20.2 ms, 2: 11.4 ms)" in caplog.text

    torch.set_num_threads(2)
    step = threads.decode(1)
    for part, count in (("layers", 1), ("projection", 2), ("sampling", 1)):
        with step.part(part):
            assert torch.get_num_threads() == count  # once settled, every step runs at the chosen counts


def test_a_step_without_a_projection_of_its_own_settles_its_other_parts():
    """The static-shape step (--no-enforce-eager) projects inside its layers' part: no projection part runs."""
    machine = FakeMachine(TWO_CORES)
    threads = StepThreads(torch.device("cpu"), 2, clock=machine.clock)
    for _ in range(100):
        step = threads.decode(1)
        with step.part("layers"):
            machine.run("layers@1")
        with step.part("sampling"):
            machine.run("sampling@1")
        step.done()
    assert threads.chosen() == {"layers@1": 1, "sampling@1": 1}


def test_the_prefill_is_timed_per_position_it_computes():
    machine = FakeMachine(TWO_CORES)
    threads = StepThreads(torch.device("cpu"), 2, clock=machine.clock)
    for tokens in [200, 10, 200, 10] * (WARMUP + SAMPLES):  # the long prefills fall on both counts alike
        with threads.prefill(tokens):
            machine.now += tokens * TWO_CORES["prefill"][torch.get_num_threads()]
    assert threads.chosen() == {"prefill": 2}


def test_a_near_tie_goes_to_fewer_threads_and_a_much_slower_count_drops_out_early():
    choice = ThreadChoice((1, 2, 3, 4))
    costs = {1: 0.0101, 2: 0.0100, 3: 0.0120, 4: 0.0400}  # 2 is 1% faster than 1; 4 is four times slower
    runs = {c: 0 for c in costs}
    while not choice.settled:
        threads = choice.threads()
        runs[threads] += 1
        choice.record(threads, costs[threads])
    assert choice.chosen == 1  # within step_settings.TIE of the fastest, with fewer threads
    assert runs[4] == WARMUP + 2 and runs[1] == WARMUP + SAMPLES  # 4 stopped being tried once it was clear


def test_the_median_decides_so_a_few_disturbed_runs_do_not():
    choice = ThreadChoice((1, 2))
    run = 0
    while not choice.settled:
        threads = choice.threads()
        run += 1
        disturbed = threads == 1 and run % 5 == 0  # another process took the core now and then
        choice.record(threads, {1: 0.010, 2: 0.012}[threads] * (8 if disturbed else 1))
    assert choice.chosen == 1


def test_cpu_threads_fixes_every_part_and_measures_nothing():
    machine = FakeMachine({shape: {3: cost[2]} for shape, cost in TWO_CORES.items()})
    threads = StepThreads(torch.device("cpu"), 3, fixed=3, clock=machine.clock)
    assert set(threads.chosen().values()) == {3} and "layers@32" in threads.chosen()
    decode_step(threads, machine, rows=1)
    with threads.prefill(5):
        assert torch.get_num_threads() == 3
    assert set(machine.runs) == {("layers@1", 3), ("projection@1", 3), ("sampling@1", 3)}


def test_on_a_gpu_nothing_is_set_or_timed():
    threads = StepThreads(torch.device("cuda"), 8)
    torch.set_num_threads(1)
    step = threads.decode(4)
    with step.part("layers"), threads.prefill(100):
        assert torch.get_num_threads() == 1
    step.done()
    assert threads.chosen() == {}


def test_settled_counts_are_recorded_in_the_settings_file(tmp_path):
    key = {"text": [512], "cpu": "Fake CPU", "cores": 2, "torch": torch.__version__}
    machine = FakeMachine(TWO_CORES)
    settings = SettingsFile(tmp_path, key)
    settings.values["packed_over_plain"] = {"layers": 0.7}
    threads = StepThreads(torch.device("cpu"), 2, settings, clock=machine.clock)
    settle(threads, machine, rows=1)
    saved = json.loads(settings.path.read_text())
    assert saved["key"] == key
    assert saved["settings"] == {"packed_over_plain": {"layers": 0.7},
                                 "threads": {"layers@1": 1, "projection@1": 2, "sampling@1": 1}}
    # the kernels' timings are read back; thread counts are measured anew at each start (the load may differ)
    assert SettingsFile(tmp_path, key).values["packed_over_plain"] == {"layers": 0.7}
    assert StepThreads(torch.device("cpu"), 2, SettingsFile(tmp_path, key)).chosen() == {}
    assert SettingsFile(tmp_path, {**key, "cpu": "Another CPU"}).values == {}  # another machine measures its own
    settings.path.write_text("{half a file")
    assert SettingsFile(tmp_path, key).values == {}


def test_the_step_split_counts_the_hand_off_between_steps():
    machine = FakeMachine(TWO_CORES)
    threads = StepThreads(torch.device("cpu"), 2, fixed=2, clock=machine.clock)
    threads.split = StepSplit()
    for _ in range(3):
        decode_step(threads, machine, rows=1, handoff=0.003)
    machine.now += 0.5
    threads.interrupt()  # rows left after the third step: its rest is not a hand-off, and it is not recorded
    decode_step(threads, machine, rows=1, handoff=0.050)  # a slow hand-off
    decode_step(threads, machine, rows=1)  # still under way: its rest is not known yet
    split = threads.split.buckets[1]
    assert len(split.rest) == len(split.layers) == len(split.sampling) == 3
    assert split.rest == pytest.approx([0.003, 0.003, 0.050])
    assert split.layers == pytest.approx([0.005] * 3) and split.projection == pytest.approx([0.0114] * 3)
    assert split.sampling == pytest.approx([0.0003] * 3)


def test_packing_is_chosen_per_group_by_the_geometric_mean_of_its_timings():
    now = [0.0]
    costs = {("layers", "plain"): {1: 1.0, 16: 4.0, 256: 64.0}, ("layers", "packed"): {1: 1.5, 16: 2.0, 256: 32.0},
             ("projection", "plain"): {1: 10.0, 16: 20.0}, ("projection", "packed"): {1: 12.0, 16: 21.0}}

    def kernel(group: str, kind: str):
        def run(rows: int) -> None:
            now[0] += costs[group, kind][rows]
        return run

    ratios = kernel_ratios({group: (kernel(group, "plain"), kernel(group, "packed"), tuple(costs[group, "plain"]))
                            for group in ("layers", "projection")}, clock=lambda: now[0])
    assert ratios["layers"] == pytest.approx((1.5 * 0.5 * 0.5) ** (1 / 3))  # 0.72: packed, though slower at 1 row
    assert ratios["projection"] == pytest.approx((1.2 * 1.05) ** 0.5)  # 1.12: stays plain

    model = Qwen2AudioForConditionalGeneration(preset_config(train_tokenizer(300), "tiny")).eval()
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert pack_linears(model, layers=True, projection=False) == linears - 1
    assert type(model.lm_head) is torch.nn.Linear


def test_the_fastest_run_counts_for_kernels_each_taken_in_turn():
    now, order = [0.0], []
    durations = {"a": iter([5.0, 1.0, 9.0, 2.0]), "b": iter([5.0, 3.0, 3.0, 3.0])}

    def run(name: str):
        def go() -> None:
            order.append(name)
            now[0] += next(durations[name])
        return go

    assert fastest_runs({"a": run("a"), "b": run("b")}, reps=3, clock=lambda: now[0]) == {"a": 1.0, "b": 3.0}
    assert order == ["a", "b"] * 4  # one warm-up each, then rep by rep


def test_thread_candidates_and_row_buckets():
    assert thread_candidates(1) == (1,) and thread_candidates(2) == (1, 2) and thread_candidates(4) == (1, 2, 3, 4)
    assert thread_candidates(16) == (1, 2, 4, 8, 15, 16) and thread_candidates(6) == (1, 2, 4, 5, 6)
    assert [row_bucket(r) for r in (1, 2, 3, 5, 8, 9, 16, 17, 32, 64)] == [1, 2, 4, 8, 8, 16, 16, 32, 32, 32]
    assert step_settings.cpu_name()


def test_the_kernel_timings_are_kept_per_model_and_machine_and_packing_follows_them(tmp_path, monkeypatch):
    from server.runner import cpu

    config = preset_config(train_tokenizer(300), "tiny")
    model = Qwen2AudioForConditionalGeneration(config).eval()
    threads = cpu.prepare_cpu(model, torch.float32, None, 16, 0, tmp_path)
    (kept,) = tmp_path.glob("*.json")
    ratios = json.loads(kept.read_text())["settings"]["packed_over_plain"]
    assert set(ratios) == {"layers", "projection"} and all(r > 0 for r in ratios.values())
    assert (type(model.lm_head) is cpu.OneDnnLinear) == (ratios["projection"] <= 1.0)
    assert threads.enabled and threads.chosen() == {}  # thread counts: measured over the steps to come
    fixed = cpu.prepare_cpu(Qwen2AudioForConditionalGeneration(config).eval(), torch.float32, None, 16, 1, None)
    assert set(fixed.chosen().values()) == {1}  # --cpu-threads 1: every part, nothing to measure

    # the next start on this machine reads them back and measures nothing: here, as if only the projection won
    saved = json.loads(kept.read_text())
    saved["settings"]["packed_over_plain"] = {"layers": 1.3, "projection": 0.5}
    kept.write_text(json.dumps(saved))
    monkeypatch.setattr(cpu, "measure_packing", lambda *args: pytest.fail("measured again"))
    again = Qwen2AudioForConditionalGeneration(config).eval()
    cpu.prepare_cpu(again, torch.float32, None, 16, 0, tmp_path)
    assert type(again.lm_head) is cpu.OneDnnLinear
    assert not any(type(m) is cpu.OneDnnLinear for m in again.model.modules())
