"""The one place a request becomes its SamplingParams and its output budget: chat completions (and the Responses
API, which runs as chat), transcriptions and translations, and the realtime API's answers.

A sampling setting a request leaves out gets what `model.generate` does with the checkpoint: the value in its
generation_config.json (ModelInfo.sampling_defaults), else OpenAI's default. The output budget is what the request
asked for if it fits the model's context beside the prompt (else a 400 that says how much audio would fit), or the
server's default.
"""

import math
from typing import Literal

from server.engine.interface import ModelInfo
from server.engine.request import Prompt, SamplingParams
from server.protocol.audio import TranscriptionRequest
from server.protocol.chat import ChatCompletionRequest
from server.protocol.errors import bad_request

# when neither the request nor the checkpoint sets them (OpenAI's, and transformers' own for the extensions)
_FALLBACKS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
# A transcript holds a few tokens per second of speech; a cap well above that stops runaway repetition loops.
TOKENS_PER_SECOND_CAP = 16
TOKENS_CAP_FLOOR = 32
# a realtime answer whose conversation leaves less room than this drops its oldest turns (serving.realtime.responder)
MIN_ANSWER_ROOM = 64


def chat_params(request: ChatCompletionRequest, prompt: Prompt, info: ModelInfo,
                default_max_tokens: int) -> SamplingParams:
    """Request values first, then the checkpoint's generation config, then OpenAI's defaults."""
    max_tokens = output_budget(info, prompt, request.requested_max_tokens, default_max_tokens)
    return SamplingParams(
        max_tokens=max_tokens,
        **_with_checkpoint(info, temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
                           repetition_penalty=request.repetition_penalty),
        min_p=request.min_p or 0.0,
        seed=request.seed,
        stop=[request.stop] if isinstance(request.stop, str) else list(request.stop or []),
        min_tokens=min(request.min_tokens, max_tokens),
        ignore_eos=request.ignore_eos,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )


def transcription_params(request: TranscriptionRequest, prompt: Prompt, info: ModelInfo, default_max_tokens: int,
                         clip_seconds: float) -> SamplingParams:
    """OpenAI's transcription temperature (0: greedy, the default here too); the checkpoint's repetition penalty
    always, its top_k and top_p when a temperature asks for sampling. Logprobs always: verbose_json reports each
    segment's average. Without max_tokens a clip's answer is capped by its length (runaway loops)."""
    cap = math.ceil(clip_seconds * TOKENS_PER_SECOND_CAP) + TOKENS_CAP_FLOOR
    max_tokens = output_budget(info, prompt, request.max_tokens, min(default_max_tokens, cap))
    return SamplingParams(
        max_tokens, **_with_checkpoint(info, temperature=request.temperature), seed=request.seed, logprobs=0,
        min_tokens=min(request.min_tokens, max_tokens), ignore_eos=request.ignore_eos,
    )


def realtime_answer_params(limit: int | Literal["inf"] | None, prompt: Prompt, info: ModelInfo,
                           default_max_tokens: int) -> SamplingParams:
    """A realtime answer samples as the checkpoint does; `max_output_tokens` ("inf" or unset: the server's default),
    cut to what the context leaves rather than refused."""
    max_tokens = max(1, min(answer_limit(limit, default_max_tokens), info.max_model_len - prompt.num_tokens))
    return SamplingParams(max_tokens, **_with_checkpoint(info))


def answer_limit(limit: int | Literal["inf"] | None, default_max_tokens: int) -> int:
    """A realtime `max_output_tokens` as a number of tokens."""
    return default_max_tokens if limit in (None, "inf") else int(limit)


def output_budget(info: ModelInfo, prompt: Prompt, requested: int | None, default: int) -> int:
    """Output tokens this request may generate: what it asked for, if it fits the model's context."""
    room = info.max_model_len - prompt.num_tokens
    if room <= 0 or (requested is not None and requested > room):
        fits = ""
        if prompt.audio_tokens:  # say how much audio would fit beside this text and answer
            left = info.max_model_len - (prompt.num_tokens - prompt.audio_tokens) - (requested or 1)
            fits = f"; about {max(0.0, left / info.audio_tokens_per_second):.0f} s of audio fit in one request beside this text"
        raise bad_request(
            f"the prompt takes {prompt.num_tokens} tokens ({prompt.audio_tokens} of them audio, "
            f"{prompt.audio_seconds:.1f} s); with max_tokens={requested} that passes the model's context of "
            f"{info.max_model_len} tokens{fits}",
            param="max_tokens" if room > 0 else "messages",
            code="context_length_exceeded",
        )
    return requested if requested is not None else min(default, room)


def _with_checkpoint(info: ModelInfo, **chosen: float | int | None) -> dict:
    """temperature, top_p, top_k and repetition_penalty: the request's choice (None: none), else the checkpoint's
    generation config, else the fallback; top_k 0 (or -1, vLLM's "off") turns it off."""
    values = {name: chosen[name] if chosen.get(name) is not None else info.sampling_defaults.get(name, fallback)
              for name, fallback in _FALLBACKS.items()}
    values["top_k"] = max(0, int(values["top_k"]))
    return values
