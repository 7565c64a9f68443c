"""Runners of their own on the module's tiny model, and requests for them (tests build batches by hand)."""

from server.engine.conversation import audio_question
from server.engine.interface import PrefillInput
from server.engine.request import SamplingParams
from server.runner.model_runner import Qwen2AudioRunner
from tests.support.audio_samples import tone

# sampled with a seed, penalties of both kinds: every piece of sampler state is in play
SAMPLED = SamplingParams(max_tokens=64, temperature=0.9, top_k=20, top_p=0.8, seed=7, repetition_penalty=1.2,
                         presence_penalty=0.5, ignore_eos=True)


def make_runner(model, static: bool) -> Qwen2AudioRunner:
    base = model.runner
    return Qwen2AudioRunner(base.model, base.device, base.dtype, base._pad_token_id, base._eos_token_ids,
                            static_decode=static)


def requests(model, first_id: int, *seconds: float, params: SamplingParams = SAMPLED) -> list[PrefillInput]:
    return [PrefillInput(first_id + i, model.processor.prepare(audio_question(f"q{s}"), [tone(s, seed=i)[0]]), params)
            for i, s in enumerate(seconds)]
