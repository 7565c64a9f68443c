"""The model runner on the real (tiny) model: its batch keyed by sequence id, and steps that fail part-way."""

import pytest
import torch

from server.engine.conversation import audio_question
from server.engine.interface import PrefillInput
from server.engine.request import OutOfMemory, SamplingParams
from server.runner import kv_cache
from server.runner.loader import LoadConfig, load_model
from tests.support.audio_samples import tone

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

GREEDY = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture
def runner(model):
    yield model.runner
    model.runner.release(list(range(100)))  # whatever a test left


def requests(model, *seconds: float) -> list[PrefillInput]:
    return [PrefillInput(i, model.processor.prepare(audio_question(f"q{s}"), [tone(s, seed=i)[0]]), GREEDY)
            for i, s in enumerate(seconds)]


def tokens_of(runner, steps: int) -> list[dict[int, int]]:
    return [runner.decode().tokens for _ in range(steps)]


def test_rows_are_keyed_by_sequence_id_whatever_leaves(model, runner):
    first = runner.prefill(requests(model, 1.0, 2.0, 3.0))
    together = tokens_of(runner, 3)
    runner.release([0, 1, 2])
    assert runner.batch_size == 0 and runner.kv_tokens == 0

    assert runner.prefill(requests(model, 1.0, 2.0, 3.0)).tokens == first.tokens
    runner.release([1])  # the middle row leaves: the others keep their own tokens
    after = tokens_of(runner, 3)
    assert after == [{0: step[0], 2: step[2]} for step in together]
    runner.release([7])  # unknown ids are no-ops
    assert runner.batch_size == 2


class _FailOnce(torch.nn.Module):
    """Wraps a decoder layer: raises torch's out-of-memory error the next time it runs, then runs normally."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer, self.armed = layer, True
        self.attention_type = getattr(layer, "attention_type", "full_attention")

    def forward(self, *args, **kwargs):
        if self.armed:
            self.armed = False
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return self.layer(*args, **kwargs)


def test_out_of_memory_inside_a_decode_step_leaves_the_batch_as_it_was(model, runner):
    runner.prefill(requests(model, 1.0, 2.5))
    expected = tokens_of(runner, 4)
    runner.release([0, 1])

    runner.prefill(requests(model, 1.0, 2.5))
    layers = runner.model.model.language_model.layers
    last = len(layers) - 1
    real = layers[last]
    layers[last] = _FailOnce(real)  # the layers before it have already written this step's keys and values
    try:
        lengths, kv = kv_cache.lengths(runner._batch.cache), runner._batch.kv_tokens
        with pytest.raises(OutOfMemory):
            runner.decode()
        assert kv_cache.lengths(runner._batch.cache) == lengths and runner._batch.kv_tokens == kv
    finally:
        layers[last] = real
    assert tokens_of(runner, 4) == expected  # as if the failed step had never run


def test_a_resumed_request_samples_as_if_it_had_never_stopped(model, runner):
    """Preemption prefills the prompt and the tokens generated so far again: the repetition penalty still counts
    those tokens, and min_tokens what is left of it."""
    params = SamplingParams(max_tokens=64, temperature=0.0, repetition_penalty=1.5, min_tokens=8)
    request = PrefillInput(0, requests(model, 2.0)[0].prompt, params)
    uninterrupted = [runner.prefill([request]).tokens[0], *(step[0] for step in tokens_of(runner, 7))]
    runner.release([0])
    resumed = runner.prefill([PrefillInput(0, request.prompt, params, tuple(uninterrupted[:4]))])
    assert [resumed.tokens[0], *(step[0] for step in tokens_of(runner, 3))] == uninterrupted[4:]
