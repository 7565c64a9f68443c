"""The sampler's lean paths give exactly what the vocabulary-wide ones gave: the blocked argmax is torch.argmax, and
the repetition penalty over each row's own tokens is transformers' RepetitionPenaltyLogitsProcessor."""

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from server.engine.request import SamplingParams
from server.runner.sampler import BatchSampler, first_argmax

VOCAB = 156_032
EOS = (151643, 151645)


@pytest.mark.parametrize("vocab", [VOCAB, VOCAB + 77, 1000])
def test_the_blocked_argmax_is_torch_argmax_ties_and_nans_included(vocab):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(9, vocab, generator=generator)
    logits[1, [5, vocab // 3, vocab - 1]] = 50.0  # equal maxima in three blocks: the first wins
    logits[2, [vocab - 1, 0]] = 50.0  # the very last logit ties with the first
    logits[3, vocab - 1] = 60.0  # the last logit alone is the maximum
    logits[4, [700, 90]] = float("nan")  # NaN counts as the greatest, the first of them
    logits[5, vocab - 1] = float("nan")
    logits[6] = 0.0  # all equal
    logits[7, 200] = float("inf")
    logits[8] = float("-inf")
    assert torch.equal(first_argmax(logits), torch.argmax(logits, dim=-1))
    assert torch.equal(first_argmax(logits[4:5]), torch.argmax(logits[4:5], dim=-1))


def _sampler(params: list[SamplingParams], prompts: list[list[int]]) -> BatchSampler:
    return BatchSampler.create(params, prompts, [()] * len(params), VOCAB, EOS, torch.device("cpu"))


def _reference(logits: torch.Tensor, ids: list[int], penalty: float) -> torch.Tensor:
    """generate's processor on one row, over the row's own ids."""
    return RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([ids]), logits[None].clone())[0]


def test_the_repetition_penalty_over_each_rows_own_tokens_is_transformers_one():
    generator = torch.Generator().manual_seed(1)
    prompts = [[5, 9, 9, 151000, 17], [3, 4], [8, 8, 100, 2000, 7, 7, 6]]
    penalties = [1.1, 1.0, 0.5]  # below 1 rewards repeats, as transformers allows
    params = [SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=p) for p in penalties]
    sampler = _sampler(params, prompts)
    rows = [list(prompt) for prompt in prompts]
    for _ in range(3):
        logits = torch.randn(3, VOCAB, generator=generator) * 4
        logits[:, 17] = 30.0  # a token already in row 0's prompt leads: the penalty must apply to it
        expected = torch.stack([_reference(logits[i], rows[i], penalties[i]) for i in range(3)])
        token_ids, tokens, _ = sampler.sample(logits)  # logits: changed in place into what was drawn from
        assert torch.equal(logits, expected)
        assert tokens == torch.argmax(expected, dim=-1).tolist()
        for row, token in zip(rows, tokens):
            row.append(token)

    # rows leave and rows without a penalty join: every row still sees exactly its own tokens
    kept = sampler.selected([2, 0])
    joining = _sampler([SamplingParams(max_tokens=8, temperature=0.0)], [[1, 2, 3]])
    assert joining.history is None
    merged = kept.extended(joining)
    logits = torch.randn(3, VOCAB, generator=generator)
    expected = torch.stack([_reference(logits[0], rows[2], 0.5), _reference(logits[1], rows[0], 1.1), logits[2]])
    merged.sample(logits)
    assert torch.equal(logits, expected)


def test_logprobs_are_the_log_softmax_of_what_was_drawn_from():
    generator = torch.Generator().manual_seed(2)
    params = [SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=1.1, logprobs=3),
              SamplingParams(max_tokens=8, temperature=0.0),
              SamplingParams(max_tokens=8, temperature=0.0, min_tokens=4, logprobs=0)]
    sampler = _sampler(params, [[1, 2], [3], [4, 5, 6]])
    logits = torch.randn(3, VOCAB, generator=generator)
    drawn = torch.stack([_reference(logits[0], [1, 2], 1.1), logits[1], logits[2]])
    drawn[2, list(EOS)] = float("-inf")  # min_tokens holds the end back
    reference = torch.log_softmax(drawn, dim=-1)
    _, tokens, logprobs = sampler.sample(logits)
    assert logprobs[1] is None
    for i in (0, 2):
        assert logprobs[i].token_id == tokens[i]
        assert logprobs[i].logprob == pytest.approx(float(reference[i, tokens[i]]), abs=1e-6)
    top = torch.topk(reference[0], 3)
    assert [t for t, _ in logprobs[0].top] == top.indices.tolist() and logprobs[2].top == []
