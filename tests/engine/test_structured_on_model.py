"""Structured outputs and n samples through the engine on the real (tiny) model: preemption and shared prefills."""

import asyncio
import json

import pytest

from server.engine.request import OutOfMemory, SamplingParams
from server.runner.loader import LoadConfig, load_model
from tests.support.engine_on_model import make_engine, prompt, run_to_end
from tests.support.faults import replaced

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too

SCHEMA = {"type": "object", "properties": {"kind": {"enum": ["bark", "meow", "chirp"]}, "loud": {"type": "boolean"},
          "n": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["kind", "loud", "n"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(LoadConfig(tiny_model_dir))


async def test_constrained_rows_preempted_for_memory_resume_with_their_grammar_where_they_were(loaded):
    """The resumed rows' matchers are rebuilt from the tokens they had: the answers are the uninterrupted ones.
    (Greedy: a seeded generator starts again from its seed when its row resumes, constrained or not.)"""
    runner = loaded.runner
    engine = await make_engine(loaded)
    grammar = await engine.compile_grammar({"type": "json_schema", "schema": SCHEMA})
    params = [SamplingParams(max_tokens=60, temperature=0, repetition_penalty=1.0 + seed / 10, grammar=grammar)
              for seed in range(4)]
    prompts = [await prompt(engine, s, f"p{s}") for s in (1.0, 2.0, 3.0, 4.0)]
    alone = [(await run_to_end(engine.submit(p, q)))[1] for p, q in zip(prompts, params)]
    sizes = []

    def tight(real):  # out of memory from the sixth step on: the newest rows leave mid-answer
        sizes.append(runner.batch_size)
        if runner.batch_size > 2 and len(sizes) > 5:
            raise OutOfMemory("simulated: CUDA out of memory")
        return real()

    try:
        with replaced(runner, "decode", tight):
            results = await asyncio.gather(*(run_to_end(engine.submit(p, q)) for p, q in zip(prompts, params)))
    finally:
        await engine.stop()
    assert sizes[:6] == [4] * 6 and max(sizes[6:]) == 2  # together for five steps, then cut down
    assert [text for _, text in results] == alone
    for text in alone:
        assert set(json.loads(text)) == {"kind", "loud", "n"}


async def test_samples_of_one_prompt_are_prefilled_once(loaded):
    """n sequences of one Prompt object: the audio is encoded and the prompt computed for one row, copied into n."""
    runner = loaded.runner
    engine = await make_engine(loaded, batch_wait_s=0.05)
    encoded, computed = [], []
    encoder, language_model = runner._encoder, runner._language_model

    def count_clips(clips):
        encoded.append(len(clips))
        return encoder(clips)

    def count_rows(*args, **kwargs):
        computed.append(kwargs["inputs_embeds"].shape[0] if "inputs_embeds" in kwargs else 0)
        return language_model(*args, **kwargs)

    try:
        shared = await prompt(engine, 2.0, "Describe it.")
        runner._encoder, runner._language_model = count_clips, count_rows
        greedy = SamplingParams(max_tokens=8, temperature=0)
        results = await asyncio.gather(*(run_to_end(engine.submit(shared, greedy)) for _ in range(3)))
    finally:
        runner._encoder, runner._language_model = encoder, language_model
        await engine.stop()
    assert encoded == [1]  # one clip encoded, not three
    assert computed[0] == 1 and all(rows == 3 for rows in computed[1:])  # one row prefilled, three decoded
    assert results[0] == results[1] == results[2]
