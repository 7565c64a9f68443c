"""The static-shape decode step (what --no-enforce-eager captures in CUDA graphs on a GPU) runs eagerly on the CPU
here: its tokens must be the dynamic step's, through rows joining, leaving, and outgrowing the cache's room."""

import pytest

from server.engine.request import SamplingParams
from server.runner import kv_cache
from server.runner.static_decode import row_bucket
from tests.support.runners import make_runner, requests

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

GREEDY = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=400, temperature=0.8, top_k=20, top_p=0.9, seed=3, repetition_penalty=1.1,
                        ignore_eos=True)


def test_row_buckets_are_few_and_cover_every_size():
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 63, 64)] == [1, 2, 4, 4, 8, 8, 16, 16, 24, 64, 64]
    assert all(row_bucket(n) >= n for n in range(1, 300))
    assert len({row_bucket(n) for n in range(1, 65)}) == 11


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_the_static_step_gives_the_dynamic_steps_tokens(model, params):
    runners = {"dynamic": make_runner(model, False), "static": make_runner(model, True)}
    tokens = {name: [] for name in runners}
    for name, runner in runners.items():
        tokens[name].append(runner.prefill(requests(model, 0, 1.0, 2.5, 0.5, params=params)).tokens)
        tokens[name] += [runner.decode().tokens for _ in range(5)]
        runner.release([1])  # the widest row leaves: rows compact in place and the padding is dropped
        tokens[name] += [runner.decode().tokens for _ in range(3)]
        tokens[name].append(runner.prefill(requests(model, 10, 4.0, 0.5, params=params)).tokens)  # wider rows join
        tokens[name] += [runner.decode().tokens for _ in range(300)]  # past the spare columns: the buffers grow
    assert tokens["static"] == tokens["dynamic"]
    rows, _ = kv_cache.capacity(runners["static"]._batch.cache)
    assert runners["static"].batch_size == 4 and rows == row_bucket(4)
