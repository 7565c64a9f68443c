"""The engine's scheduling on a plain-Python model (tests/support/fake_model.py): every test runs in milliseconds.

Joining a running batch, cancellation, the KV budget and the queue limit, out-of-memory preemption and resumption,
failures that stay with their requests, the probe after repeated failures, finish reasons, and stopping.
"""

import asyncio
import threading

import pytest
import pytest_asyncio

from server.engine import engine as engine_module
from server.engine import scheduler
from server.engine.engine import Engine, EngineConfig
from server.engine.request import (
    BatchLost,
    EngineError,
    OutOfMemory,
    QueueFullError,
    RequestTooLargeError,
    SamplingParams,
)
from server.metrics import Metrics
from tests.support.fake_model import END_OF_TEXT, EOS, GREEDY, LONG, answer, fake_model, prompt
from tests.support.faults import fails_once, replaced
from tests.support.waiting import eventually


async def started(model, metrics: Metrics | None = None, **config) -> Engine:
    engine = Engine(model, EngineConfig(**{"max_batch_size": 8, "batch_wait_s": 0.0, **config}), metrics or Metrics())
    await engine.start()
    return engine


@pytest.fixture
def model():
    return fake_model()


@pytest.fixture
def runner(model):
    return model.runner


@pytest.fixture
def metrics():
    return Metrics()


@pytest_asyncio.fixture
async def engine(model, metrics):
    engine = await started(model, metrics)
    yield engine
    await engine.stop()


async def run_to_end(stream) -> tuple[list[int], str, str]:
    tokens, text, finish = [], "", None
    async for event in stream:
        tokens += event.token_ids
        text += event.text
        finish = event.finish_reason
    return tokens, text, finish


async def test_a_late_request_joins_the_running_batch_at_the_next_step(engine, runner):
    gate = threading.Event()

    def paced(real):  # decode steps wait until the test lets them go: the long request is surely running
        gate.wait(10)
        return real()

    with replaced(runner, "decode", paced):
        long = engine.submit(prompt(5, 6, 7), SamplingParams(max_tokens=50, temperature=0))
        first = await long.__anext__()
        late = engine.submit(prompt(8, 9), SamplingParams(max_tokens=5, temperature=0))
        gate.set()
        late_tokens, _, _ = await run_to_end(late)
        long_tokens, _, _ = await run_to_end(long)
    assert late_tokens == answer(prompt(8, 9), 5)
    assert first.token_ids + long_tokens == answer(prompt(5, 6, 7), 50)
    [long_id], [late_id] = [rows for kind, rows in runner.steps if kind == "prefill"]
    joined = runner.steps.index(("prefill", [late_id]))
    assert ("decode", [long_id]) in runner.steps[:joined]  # it joined while the long one was decoding
    assert ("decode", [long_id, late_id]) in runner.steps[joined:]  # and then decoded beside it


async def test_cancelling_frees_the_row_at_once_and_a_queued_request_its_place(engine, runner):
    streams = [engine.submit(prompt(i + 1), LONG) for i in range(3)]
    for stream in streams:
        await stream.__anext__()
        stream.cancel()
    assert await eventually(lambda: engine.running == 0)
    assert runner.rows == {} and runner.kv_tokens == 0 and engine.queue_depth == 0


async def test_the_kv_budget_queues_requests_instead_of_failing_them():
    # each request may grow to 4 + 20 tokens: three rows fit 80 slots, four do not
    model = fake_model(kv_budget_tokens=80)
    engine, runner = await started(model), model.runner
    try:
        params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
        prompts = [prompt(i + 1, 2, 3, 4) for i in range(7)]
        results = await asyncio.gather(*(run_to_end(engine.submit(p, params)) for p in prompts))
        assert [tokens for tokens, _, _ in results] == [answer(p, 20) for p in prompts]
        assert max(len(rows) for _, rows in runner.steps) == 3 and max(runner.kv_seen) <= 80
        with pytest.raises(RequestTooLargeError, match="budget is 80"):
            engine.submit(prompt(*range(1, 70)), params)
    finally:
        await engine.stop()


async def test_a_full_queue_is_refused_at_once(model, runner):
    engine = await started(model, max_batch_size=1, max_queue=2)
    gate = threading.Event()
    try:
        with replaced(runner, "decode", lambda real: (gate.wait(10), real())[1]):
            running = engine.submit(prompt(1), GREEDY)
            await running.__anext__()
            waiting = [engine.submit(prompt(2), GREEDY), engine.submit(prompt(3), GREEDY)]
            with pytest.raises(QueueFullError):
                engine.submit(prompt(4), GREEDY)
            waiting[0].cancel()  # a client that gave up frees its place in the queue
            engine.submit(prompt(5), GREEDY).cancel()
            gate.set()
            assert (await run_to_end(waiting[1]))[0] == answer(prompt(3), 10)
    finally:
        await engine.stop()


async def test_out_of_memory_decoding_preempts_the_newest_half_which_resumes_where_it_was(model, runner, monkeypatch):
    engine = await started(model, batch_wait_s=0.05)  # the four arrive together
    sizes = []

    def tight(real):
        sizes.append(runner.batch_size)
        if runner.batch_size > 2:
            raise OutOfMemory("simulated: CUDA out of memory")
        return real()

    prompts = [prompt(i + 1, 9) for i in range(4)]
    params = SamplingParams(max_tokens=30, temperature=0, logprobs=0)
    try:
        with replaced(runner, "decode", tight):
            results = await asyncio.gather(*(run_to_end(engine.submit(p, params)) for p in prompts))
        assert [tokens for tokens, _, _ in results] == [answer(p, 30) for p in prompts]  # resumed exactly
        assert sizes.count(4) == 1  # it ran out once, then kept the batch within what fitted
        # the cap comes back a row per ROW_CAP_RECOVERY_STEPS good steps: later requests run together again
        monkeypatch.setattr(scheduler, "ROW_CAP_RECOVERY_STEPS", 1)
        later = [prompt(i + 1, 8) for i in range(4)]
        await asyncio.gather(*(run_to_end(engine.submit(p, params)) for p in later))
        assert max(len(rows) for kind, rows in runner.steps[-20:] if kind == "decode") >= 3
    finally:
        await engine.stop()


async def test_out_of_memory_on_a_request_alone_fails_only_that_request(engine, runner):

    def too_big(real):
        raise OutOfMemory("simulated")

    with replaced(runner, "decode", too_big):
        with pytest.raises(EngineError, match="out of memory"):
            await run_to_end(engine.submit(prompt(1, 2), GREEDY))
    assert engine.ready and await eventually(lambda: runner.rows == {})
    assert (await run_to_end(engine.submit(prompt(3), GREEDY)))[0] == answer(prompt(3), 10)


async def test_out_of_memory_prefilling_retries_smaller_groups(model, runner):
    engine = await started(model, batch_wait_s=0.05)

    def tight(real, requests):
        if len(requests) > 1:
            raise OutOfMemory("simulated")
        return real(requests)

    prompts = [prompt(i + 1) for i in range(4)]
    try:
        with replaced(runner, "prefill", tight):
            results = await asyncio.gather(*(run_to_end(engine.submit(p, GREEDY)) for p in prompts))
    finally:
        await engine.stop()
    assert [tokens for tokens, _, _ in results] == [answer(p, 10) for p in prompts]
    assert all(len(rows) == 1 for kind, rows in runner.steps if kind == "prefill")


async def test_a_failing_decode_step_fails_the_requests_it_carried_and_no_other(model, runner):
    engine = await started(model, max_batch_size=2, batch_wait_s=0.05)
    try:
        with replaced(runner, "decode", fails_once(RuntimeError("simulated device fault"))):
            carried = [engine.submit(prompt(i + 1), GREEDY) for i in range(2)]
            queued = engine.submit(prompt(7), GREEDY)  # no room in the batch yet
            outcomes = await asyncio.gather(*(run_to_end(s) for s in [*carried, queued]), return_exceptions=True)
    finally:
        await engine.stop()
    assert all(isinstance(o, EngineError) for o in outcomes[:2])
    assert outcomes[2][0] == answer(prompt(7), 10)


POISON = 666  # a seed the patched prefill cannot run: an input no validation foresaw


def poisoned(real, requests):
    if any(r.params.seed == POISON for r in requests):
        raise RuntimeError("simulated: this input breaks the model")
    return real(requests)


async def test_a_request_that_breaks_its_prefill_fails_alone(model, runner):
    engine = await started(model, batch_wait_s=0.05)  # all five arrive in one prefill
    prompts = [prompt(i + 1, 4) for i in range(4)]
    try:
        with replaced(runner, "prefill", poisoned):
            streams = [engine.submit(p, GREEDY) for p in prompts[:2]]
            doomed = engine.submit(prompt(9), SamplingParams(max_tokens=10, seed=POISON))
            streams += [engine.submit(p, GREEDY) for p in prompts[2:]]
            outcomes = await asyncio.gather(*(run_to_end(s) for s in [*streams, doomed]), return_exceptions=True)
    finally:
        await engine.stop()
    assert isinstance(outcomes[-1], EngineError)
    assert [tokens for tokens, _, _ in outcomes[:-1]] == [answer(p, 10) for p in prompts]  # as if it never came


async def test_after_repeated_failures_a_probe_decides_whether_the_engine_goes_on(engine, runner):
    probes = runner.probes
    with replaced(runner, "prefill", poisoned):
        for _ in range(engine_module.MAX_CONSECUTIVE_FAILURES + 2):
            with pytest.raises(EngineError):
                await run_to_end(engine.submit(prompt(1), SamplingParams(max_tokens=4, seed=POISON)))
    assert await eventually(lambda: runner.probes > probes) and engine.ready  # the failures were those requests'
    assert (await run_to_end(engine.submit(prompt(2), GREEDY)))[0] == answer(prompt(2), 10)


async def test_a_model_that_keeps_failing_stops_the_engine_and_fails_what_waits(model, runner):
    engine = await started(model, max_batch_size=1)

    def dead(real, *args):
        raise RuntimeError("simulated: device lost")

    try:
        with replaced(runner, "decode", dead), replaced(runner, "run_probe", dead):
            streams = [engine.submit(prompt(i + 1), GREEDY) for i in range(5)]
            outcomes = await asyncio.gather(*(run_to_end(s) for s in streams), return_exceptions=True)
            assert all(isinstance(o, EngineError) for o in outcomes)
            assert await eventually(lambda: not engine.ready)
            with pytest.raises(EngineError, match="not running"):
                engine.submit(prompt(9), GREEDY)
        assert "stopped after repeated model failures" in str(outcomes[-1])
        assert await eventually(lambda: runner.rows == {})
    finally:
        await engine.stop()


async def test_a_bug_that_ends_the_loop_fails_its_requests_and_readiness_instead_of_hanging(model, runner):
    engine = await started(model, max_batch_size=1)
    running = engine.submit(prompt(1), LONG)
    await running.__anext__()
    waiting = engine.submit(prompt(2), GREEDY)

    def broken() -> None:  # outside the per-step guard: a bug there would otherwise end the loop silently
        raise RuntimeError("simulated: a bug in the loop's own bookkeeping")

    try:
        with replaced(engine._heap, "worked", lambda real: broken()):
            for stream in (running, waiting):
                with pytest.raises(EngineError, match="internal error"):
                    await asyncio.wait_for(run_to_end(stream), 10)
        assert not engine.ready
        with pytest.raises(EngineError, match="not running"):
            engine.submit(prompt(3), GREEDY)
    finally:
        await engine.stop()


async def test_a_batch_lost_while_rows_join_fails_every_request_in_it(engine, runner):
    running = engine.submit(prompt(1), LONG)
    await running.__anext__()
    with replaced(runner, "prefill", fails_once(BatchLost("simulated: out of memory stacking the caches"))):
        joining = engine.submit(prompt(2), GREEDY)
        outcomes = await asyncio.gather(run_to_end(running), run_to_end(joining), return_exceptions=True)
    assert all(isinstance(o, EngineError) for o in outcomes)
    assert await eventually(lambda: runner.rows == {})
    assert (await run_to_end(engine.submit(prompt(3), GREEDY)))[0] == answer(prompt(3), 10)


async def test_finish_reasons_eos_length_and_stop_strings(engine, runner):
    runner.scripts[(4, 4)] = [1, 2, EOS, 3, 4]
    assert await run_to_end(engine.submit(prompt(4, 4), GREEDY)) == ([1, 2, EOS], "bc", "stop")
    ignoring = await run_to_end(engine.submit(prompt(4, 4), SamplingParams(max_tokens=5, ignore_eos=True)))
    assert ignoring == ([1, 2, EOS, 3, 4], "bcde", "length")
    stopped = await run_to_end(engine.submit(prompt(4, 4), SamplingParams(max_tokens=5, ignore_eos=True, stop=["cd"])))
    assert stopped[1:] == ("b", "stop")  # the stop string and what follows never show
    runner.scripts[(4, 5)] = [1, END_OF_TEXT, 3]  # the model's other end id ends an answer just as well
    assert await run_to_end(engine.submit(prompt(4, 5), GREEDY)) == ([1, END_OF_TEXT], "b", "stop")


async def test_logprobs_carry_each_tokens_own_text(engine, runner):
    runner.scripts[(5,)] = [1, EOS]
    events = [event async for event in engine.submit(prompt(5), SamplingParams(max_tokens=5, logprobs=2))]
    assert [(lp.token, lp.logprob, lp.top) for e in events for lp in e.logprobs] == [
        ("b", -0.5, [("b", -0.5), ("<eos>", -2.0)]), ("<eos>", -0.5, [("<eos>", -0.5), ("<eos>", -2.0)])]


async def test_stopping_fails_what_runs_and_waits_and_leaves_the_model_no_rows(model, runner):
    engine = await started(model, max_batch_size=1)
    running = engine.submit(prompt(1), LONG)
    waiting = engine.submit(prompt(2), GREEDY)
    await running.__anext__()
    await engine.stop()
    for stream in (running, waiting):
        with pytest.raises(EngineError, match="shutting down"):
            await run_to_end(stream)
    assert runner.rows == {}


async def test_the_metrics_follow_the_engine(engine, metrics):
    gauge = lambda name: metrics.registry.get_sample_value(name)  # noqa: E731
    assert gauge("qwen2_audio_kv_cache_budget_tokens") == 100_000
    stream = engine.submit(prompt(1, 2), LONG)
    await stream.__anext__()
    assert gauge("qwen2_audio_running_requests") == 1 and gauge("qwen2_audio_kv_cache_tokens") > 0
    stream.cancel()
    assert await eventually(lambda: gauge("qwen2_audio_running_requests") == 0)
    assert gauge("qwen2_audio_kv_cache_tokens") == 0 and gauge("qwen2_audio_queue_depth") == 0
