"""The engine on the real (tiny) model: joining, cancelling, memory budget, seeds, failures, token for token.

The engine's scheduling on its own is tested with a plain-Python model in test_engine.py; here the real model
runner checks that none of it changes a token.
"""

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from server.engine.conversation import audio_question, message
from server.engine.interface import LoadedModel
from server.engine.request import EngineError, OutOfMemory, RequestTooLargeError, SamplingParams
from server.runner.loader import LoadConfig, load_model
from tests.support.audio_samples import tone
from tests.support.engine_on_model import make_engine, prompt, run_to_end
from tests.support.faults import fails_once, replaced
from tests.support.waiting import eventually

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> LoadedModel:
    return load_model(LoadConfig(tiny_model_dir))


@pytest.fixture(scope="module")
def runner(model):
    return model.runner


@pytest_asyncio.fixture
async def engine(model):
    engine = await make_engine(model)
    yield engine
    await engine.stop()


async def test_a_late_request_joins_the_running_batch(engine):
    long = engine.submit(await prompt(engine, 2.0), SamplingParams(max_tokens=200, temperature=0, ignore_eos=True))
    first = await long.__anext__()
    assert first.token_ids and engine.running == 1
    late = engine.submit(
        await prompt(engine, 1.0, "late"), SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    )
    late_tokens, _ = await run_to_end(late)
    long_tokens, _ = await run_to_end(long)
    assert len(late_tokens) == 5 and len(long_tokens) == 199  # the late one finished while the long one ran


async def test_greedy_output_does_not_depend_on_the_company(engine):
    params = SamplingParams(max_tokens=30, temperature=0)
    alone, _ = await run_to_end(engine.submit(await prompt(engine, 3.0), params))
    crowd = [engine.submit(await prompt(engine, s, f"other {s}"), params) for s in (0.5, 7.0, 12.0)]
    together = engine.submit(await prompt(engine, 3.0), params)
    results = await asyncio.gather(run_to_end(together), *(run_to_end(s) for s in crowd))
    assert results[0][0] == alone


async def test_seeded_sampling_is_reproducible_in_any_batch(engine):
    params = SamplingParams(max_tokens=25, temperature=1.0, top_p=0.9, seed=7)
    alone, _ = await run_to_end(engine.submit(await prompt(engine, 2.0), params))
    noise = [
        engine.submit(await prompt(engine, 4.0, "x"), SamplingParams(max_tokens=40, temperature=1.0)) for _ in range(3)
    ]
    again, _ = await run_to_end(engine.submit(await prompt(engine, 2.0), params))
    await asyncio.gather(*(run_to_end(s) for s in noise))
    assert again == alone


async def test_cancelling_frees_the_slot_at_once(engine, runner):
    streams = [
        engine.submit(await prompt(engine, None, f"go {i}"), SamplingParams(max_tokens=2000, ignore_eos=True))
        for i in range(3)
    ]
    for stream in streams:
        await stream.__anext__()
        stream.cancel()
    assert await eventually(lambda: engine.running == 0)
    assert engine.queue_depth == 0
    assert runner.kv_tokens == 0 and runner.batch_size == 0  # no cache left behind


async def test_the_kv_budget_queues_instead_of_failing(model, runner):
    engine = await make_engine(model, kv_budget_tokens=600)
    seen: list[int] = []

    def watched_decode(real):
        seen.append(runner.kv_tokens)
        return real()

    try:
        with replaced(runner, "decode", watched_decode):
            params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
            streams = [engine.submit(await prompt(engine, 4.0, f"q{i}"), params) for i in range(6)]  # ~190 tokens each
            results = await asyncio.gather(*(run_to_end(s) for s in streams))
            assert all(len(tokens) == 40 for tokens, _ in results)
            assert seen and max(seen) <= 600
            with pytest.raises(RequestTooLargeError):
                engine.submit(await prompt(engine, 20.0), SamplingParams(max_tokens=100))
    finally:
        await engine.stop()


@pytest.mark.parametrize("step", ["decode", "prefill"])
async def test_a_failing_step_fails_the_requests_it_carried_and_the_engine_goes_on(model, runner, step):
    engine = await make_engine(model)
    try:
        with replaced(runner, step, fails_once(RuntimeError("simulated device fault"))):
            doomed = engine.submit(await prompt(engine, 1.0), SamplingParams(max_tokens=10, temperature=0))
            with pytest.raises(EngineError):
                await asyncio.wait_for(run_to_end(doomed), 30)  # an error, not a hang
            tokens, _ = await run_to_end(
                engine.submit(await prompt(engine, 1.0), SamplingParams(max_tokens=10, temperature=0))
            )
            assert len(tokens) >= 1 and engine.ready
    finally:
        await engine.stop()


POISON_SEED = 666  # a request the (patched) prefill cannot run: an input no validation foresaw


def poisoned(real, requests):
    if any(r.params.seed == POISON_SEED for r in requests):
        raise RuntimeError("simulated: this input breaks the model")
    return real(requests)


async def test_a_request_that_breaks_its_prefill_fails_alone_and_its_batch_mates_are_served(model, runner):
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    engine = await make_engine(model, batch_wait_s=0.05)  # so all five arrive in one prefill
    try:
        prompts = [await prompt(engine, s, f"mate {s}") for s in (1.0, 2.0, 3.0, 4.0)]
        alone = [(await run_to_end(engine.submit(p, params)))[0] for p in prompts]
        with replaced(runner, "prefill", poisoned):
            streams = [engine.submit(p, params) for p in prompts[:2]]
            doomed = engine.submit(await prompt(engine, 1.5), SamplingParams(max_tokens=12, seed=POISON_SEED))
            streams += [engine.submit(p, params) for p in prompts[2:]]
            results = await asyncio.gather(*(run_to_end(s) for s in [*streams, doomed]), return_exceptions=True)
    finally:
        await engine.stop()
    assert isinstance(results[-1], EngineError)
    assert [tokens for tokens, _ in results[:-1]] == alone  # the others, exactly as if it had never come


async def test_requests_that_keep_breaking_the_model_cannot_stop_the_engine(model, runner):
    engine = await make_engine(model)
    try:
        with replaced(runner, "prefill", poisoned):
            for _ in range(5):  # more than MAX_CONSECUTIVE_FAILURES in a row, nothing good in between
                doomed = engine.submit(await prompt(engine, 1.0), SamplingParams(max_tokens=4, seed=POISON_SEED))
                with pytest.raises(EngineError):
                    await asyncio.wait_for(run_to_end(doomed), 30)
        assert engine.ready  # a probe request ran, so the failures were those requests' own
        tokens, _ = await run_to_end(engine.submit(await prompt(engine, 1.0), SamplingParams(max_tokens=4)))
        assert len(tokens) >= 1
    finally:
        await engine.stop()


async def test_out_of_memory_while_decoding_preempts_and_resumes_without_changing_the_answer(model, runner):
    params = SamplingParams(max_tokens=20, temperature=0)
    reference_engine = await make_engine(model)
    prompts = [await prompt(reference_engine, s, f"p{s}") for s in (1.0, 2.0, 3.0, 4.0)]
    alone = [(await run_to_end(reference_engine.submit(p, params)))[0] for p in prompts]
    await reference_engine.stop()

    engine = await make_engine(model)
    batch_sizes = []

    def tight(real):
        batch_sizes.append(runner.batch_size)
        if runner.batch_size > 2:
            raise OutOfMemory("simulated: CUDA out of memory")
        return real()

    try:
        with replaced(runner, "decode", tight):
            results = await asyncio.gather(*(run_to_end(engine.submit(p, params)) for p in prompts))
    finally:
        await engine.stop()
    assert max(batch_sizes) > 2  # they did run together and hit the limit
    assert batch_sizes.count(4) == 1  # then the batch stayed small enough instead of thrashing
    assert [tokens for tokens, _ in results] == alone  # preempted rows resumed exactly where they were


def test_features_and_encoder_match_the_processor_and_stock_encoder(model, runner, tiny_model_dir):
    """Short log-mels + valid-frame encoding give what the processor + the stock 30 s encoder give (float32)."""
    import torch
    from transformers import AutoProcessor
    from transformers.masking_utils import create_bidirectional_mask

    clips = [tone(s, seed=i)[0] for i, s in enumerate((0.7, 5.0, 13.3, 29.99, 30.0))]
    conversation = audio_question("?", clips=len(clips))
    prompt = model.processor.prepare(conversation, clips)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    reference = processor(text=text, audio=clips, sampling_rate=16_000, return_tensors="pt")
    assert prompt.token_ids == reference["input_ids"][0].tolist()
    features, mask = reference["input_features"], reference["feature_attention_mask"]
    for (mel, valid), full, clip_mask in zip(prompt.features, features, mask, strict=True):
        assert valid == int(clip_mask.sum())
        assert torch.allclose(mel, full[:, : mel.shape[-1]], atol=1e-5)

    ours = runner._encoder(prompt.features)
    stock_model = runner.model.model
    with torch.inference_mode():
        lengths = mask.sum(-1)
        _, out_lengths = stock_model.audio_tower._get_feat_extract_output_lengths(lengths)
        valid = (torch.arange(1500)[None] < ((lengths - 1) // 2 + 1)[:, None]).long()
        attn = create_bidirectional_mask(
            config=stock_model.audio_tower.config, inputs_embeds=torch.zeros(len(clips), 1500, 1), attention_mask=valid
        )
        tower_out = stock_model.audio_tower(features, attention_mask=attn).last_hidden_state
        stock = stock_model.multi_modal_projector(tower_out)
        stock = stock[torch.arange(stock.shape[1])[None] < out_lengths[:, None]]
    assert ours.shape == stock.shape == (prompt.audio_tokens, runner.model.config.text_config.hidden_size)
    assert float((ours - stock).abs().max()) < 1e-4 * float(stock.abs().max())
    assert np.isfinite(ours.numpy()).all()


async def test_an_idle_engine_gives_freed_heap_memory_back(engine, runner):
    trims = []
    real = engine._heap.trim
    engine._heap.trim = lambda: (real(), trims.append(1))
    await run_to_end(engine.submit(await prompt(engine, 2.0), SamplingParams(max_tokens=5, temperature=0)))
    during = len(trims)  # on a loaded machine steps are slow enough for a trim to fall due between them
    assert await eventually(lambda: len(trims) > during, timeout=30)  # once idle for IDLE_TRIM_S after the work
    assert not engine._heap.dirty
    await asyncio.sleep(1.5)
    assert len(trims) == during + 1  # and only once: nothing was freed since


async def test_the_shared_prompt_head_is_computed_once_and_changes_no_token(model, runner, monkeypatch):
    from server.runner.prefix_cache import PrefixCache

    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)

    async def answers() -> list[list[int]]:
        engine = await make_engine(model, batch_wait_s=0.05)  # so the four prefill together
        try:
            prompts = [await prompt(engine, s, f"question {s}") for s in (0.5, 2.0, 3.5, 7.0)]
            streams = [engine.submit(p, params) for p in prompts]
            together = [tokens for tokens, _ in await asyncio.gather(*(run_to_end(s) for s in streams))]
            own_system = await engine.prepare([message("system", "Answer briefly, in one word only."),
                                               *audio_question("?")], [tone(1.0, seed=9)[0]])
            alone, _ = await run_to_end(engine.submit(own_system, params))
            return [*together, alone]
        finally:
            await engine.stop()

    runner._prefixes = PrefixCache()
    monkeypatch.setattr(PrefixCache, "MIN_TOKENS", 10**9)  # never shared: every token computed
    computed = await answers()
    assert not runner._prefixes._entries
    monkeypatch.undo()
    shared = await answers()
    assert shared == computed
    # the template's head (cached by the warm-up, then used by the four) and the other system prompt's
    assert len(runner._prefixes._entries) == 2 and runner._prefixes.hits >= 1
