"""The sampler draws from the distribution transformers' generate draws from, however it narrows the candidates."""

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from server.engine.request import SamplingParams
from server.runner.sampler import BatchSampler, _candidates

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

VOCAB = 156_032  # the published vocabulary: the size the narrowing is for


def reference(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """What model.generate samples from: its warpers in its order, then a softmax over the whole vocabulary."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(p.temperature)])
    if p.top_k > 0:
        warpers.append(TopKLogitsWarper(p.top_k))
    if p.top_p < 1.0:
        warpers.append(TopPLogitsWarper(p.top_p))
    if p.min_p > 0.0:
        warpers.append(MinPLogitsWarper(p.min_p))
    return torch.softmax(warpers(None, logits[None].clone())[0], dim=-1)


def ours(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    probs, ids = _candidates(logits, p)
    probs = probs / probs.sum()
    return probs if ids is None else torch.zeros(VOCAB).index_put_((ids,), probs)


@pytest.mark.parametrize("settings", [
    {"temperature": 0.7, "top_k": 20, "top_p": 0.5},  # Qwen2-Audio-7B-Instruct's generation config
    {"temperature": 1.0}, {"temperature": 0.3, "top_p": 0.9}, {"temperature": 1.5, "top_k": 50},
    {"temperature": 1.0, "top_k": 1000, "min_p": 0.05}, {"temperature": 1.0, "top_k": VOCAB, "top_p": 0.95},
    {"temperature": 2.0, "top_p": 1e-9}, {"temperature": 1.0, "min_p": 1.0},
])
def test_the_distribution_is_the_one_generate_samples_from(settings):
    torch.manual_seed(0)
    logits = torch.randn(VOCAB) * 4
    logits[:5] = logits[5:10]  # equal logits, at and around any k-th place
    p = SamplingParams(max_tokens=1, **settings)
    # Total variation distance: float rounding may move top_p's edge by one token of negligible mass, no more
    assert (ours(logits, p) - reference(logits, p)).abs().sum() / 2 < 1e-3


def test_a_tie_at_the_kth_place_keeps_every_tied_token_as_generate_does():
    logits = torch.full((VOCAB,), -5.0)
    logits[[7, 70, 700, 7000]] = 3.0  # four tokens tie for the 2 best places
    probs, ids = _candidates(logits, SamplingParams(max_tokens=1, temperature=1.0, top_k=2))
    assert sorted(ids.tolist()) == [7, 70, 700, 7000] and torch.allclose(probs, torch.full((4,), 0.25))


def test_draws_land_on_the_kept_tokens_in_their_proportions():
    logits = torch.full((VOCAB,), -30.0)
    logits[[3, 151_000, 42]] = torch.tensor([2.0, 1.0, 0.0])  # 0.665, 0.245, 0.090 at temperature 1
    generator = torch.Generator().manual_seed(1)
    p = SamplingParams(max_tokens=1, temperature=1.0, top_k=20, top_p=0.8)  # top_p keeps the first two
    draws = [BatchSampler._sample_row(logits, p, generator) for _ in range(2000)]
    assert set(draws) == {3, 151_000}
    assert 0.68 < draws.count(3) / len(draws) < 0.78  # 0.665 / (0.665 + 0.245) = 0.73
