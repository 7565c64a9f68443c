"""The sampler's grammar mask: a constrained row draws only what its grammar allows, ends when it is complete, resumes
after preemption where it was, and leaves the free rows of its batch exactly as they would be alone."""

import json

import pytest
import torch

from server.engine.request import SamplingParams
from server.runner.grammar import GrammarCompiler
from server.runner.sampler import BatchSampler

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

VOCAB = 156_032  # the model's logits (the tokenizer's 151,649 tokens padded)
EOS = (151643, 151645)
SCHEMA = {"type": "object", "properties": {"kind": {"enum": ["bark", "meow"]}, "n": {"type": "integer", "minimum": 0,
          "maximum": 99}}, "required": ["kind", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer)


def _sampler(params: list[SamplingParams], outputs=None) -> BatchSampler:
    outputs = outputs or [()] * len(params)
    return BatchSampler.create(params, [[1, 2, 3]] * len(params), outputs, VOCAB, EOS, torch.device("cpu"))


def _run(sampler: BatchSampler, steps: int, seed: int = 0) -> list[list[int]]:
    """Tokens per row over `steps` steps of random logits (the same logits whatever the batch holds)."""
    rows = len(sampler.params)
    generator = torch.Generator().manual_seed(seed)
    out: list[list[int]] = [[] for _ in range(rows)]
    for _ in range(steps):
        logits = torch.randn(VOCAB, generator=generator) * 3
        _, tokens, _ = sampler.sample(logits.expand(rows, VOCAB).clone())
        for row, token in enumerate(tokens):
            out[row].append(token)
    return out


def _text(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode([t for t in tokens if t not in EOS])


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
def test_a_constrained_row_follows_its_schema_and_ends_there(compiler, tokenizer, temperature):
    grammar = compiler.compile({"type": "json_schema", "schema": SCHEMA})
    for seed in range(2):
        params = SamplingParams(max_tokens=64, temperature=temperature, seed=seed, grammar=grammar)
        tokens = _run(_sampler([params]), 30, seed)[0]
        end = next(i for i, t in enumerate(tokens) if t in EOS)  # the grammar's end forces an end id
        answer = json.loads(_text(tokenizer, tokens[:end]))
        assert answer["kind"] in ("bark", "meow") and 0 <= answer["n"] <= 99 and set(answer) == {"kind", "n"}
        assert all(t in EOS for t in tokens[end:])  # ignore_eos or not, a complete grammar allows only the end


def test_free_rows_draw_the_same_tokens_beside_constrained_rows(compiler):
    grammar = compiler.compile({"type": "json_object"})
    free = [SamplingParams(max_tokens=64, temperature=0.9, top_k=50, seed=7),
            SamplingParams(max_tokens=64, temperature=0.0, repetition_penalty=1.3)]
    alone = _run(_sampler(free), 30, seed=3)
    mixed = _run(_sampler([SamplingParams(max_tokens=64, temperature=0.8, seed=1, grammar=grammar), free[0],
                           SamplingParams(max_tokens=64, temperature=0.0, grammar=grammar), free[1]]), 30, seed=3)
    assert [mixed[1], mixed[3]] == alone


def test_rows_leaving_and_joining_keep_their_own_matchers(compiler, tokenizer):
    grammar = compiler.compile({"type": "json_schema", "schema": SCHEMA})
    params = [SamplingParams(max_tokens=64, temperature=1.0, seed=s, grammar=grammar) for s in (11, 12)]
    whole = _run(_sampler(params[:1]), 40, seed=5)[0]
    sampler = _sampler([SamplingParams(max_tokens=64), params[0]])
    sampler = sampler.extended(_sampler([params[1]])).selected([1, 2])  # the free row leaves; the others go on
    assert _run(sampler, 40, seed=5)[0] == whole


def test_a_resumed_row_replays_its_tokens_into_the_matcher(compiler):
    """Preemption: the row is prefilled again with the tokens it had, and its grammar state is rebuilt from them."""
    grammar = compiler.compile({"type": "json_schema", "schema": SCHEMA})
    tokens = _run(_sampler([SamplingParams(max_tokens=64, temperature=0.0, grammar=grammar)]), 30, seed=9)[0]
    resumed = _sampler([SamplingParams(max_tokens=64, temperature=0.0, grammar=grammar)], [tuple(tokens[:4])])
    generator = torch.Generator().manual_seed(9)
    logits = [torch.randn(VOCAB, generator=generator) * 3 for _ in range(30)]
    assert [resumed.sample(step[None].clone())[1][0] for step in logits[4:]] == tokens[4:]


def test_masked_logprobs_stay_finite(compiler):
    grammar = compiler.compile({"type": "json_schema", "schema": {"type": "boolean"}})
    sampler = _sampler([SamplingParams(max_tokens=8, temperature=0.0, logprobs=5, grammar=grammar)])
    for _ in range(3):
        _, _, logprobs = sampler.sample(torch.randn(1, VOCAB))
        values = [logprobs[0].logprob, *(value for _, value in logprobs[0].top)]
        assert all(v == v and abs(v) != float("inf") for v in values)


def test_a_schema_the_library_cannot_compile_says_why(compiler):
    with pytest.raises(ValueError, match="look-around"):
        compiler.compile({"type": "json_schema", "schema": {"type": "string", "pattern": "(?!a)b"}})


def test_a_choice_grammar_draws_exactly_one_of_its_strings(compiler, tokenizer):
    """The server's own {"type": "choice"} (language detection): whatever the logits, one whole choice, then the end."""
    choices = ["English", "Haitian Creole", "Norwegian Nynorsk", "Chinese"]
    grammar = compiler.compile({"type": "choice", "choices": choices})
    for seed in range(6):
        [tokens] = _run(_sampler([SamplingParams(16, temperature=1.5, grammar=grammar)]), 16, seed=seed)
        assert _text(tokenizer, tokens[: tokens.index(next(t for t in tokens if t in EOS)) + 1]) in choices
