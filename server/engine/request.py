"""What goes into the engine and what comes out of it: plain data, no torch."""

from dataclasses import dataclass, field
from typing import Any

GREEDY_TEMPERATURE = 1e-5


@dataclass(slots=True)
class SamplingParams:
    """Per-request decoding settings; the batch mixes requests with different ones."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    min_tokens: int = 0
    ignore_eos: bool = False
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: no logprobs; k >= 0: the sampled token's plus the k most likely
    grammar: Any = None  # structured outputs: the compiled response_format (the model side's, opaque here); None: free

    @property
    def greedy(self) -> bool:
        # Below GREEDY_TEMPERATURE sampling is argmax in all but rounding, and dividing by such a temperature
        # overflows float32 (1e-45 is a valid request): vLLM draws the same line.
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1


@dataclass(slots=True)
class Prompt:
    """A tokenized request: text ids with each <|AUDIO|> marker expanded, plus the audio features.

    `features` belongs to the model side (log-mel tensors per clip); everything above it only counts tokens.
    """

    token_ids: list[int]
    audio_tokens: int
    audio_seconds: float
    features: Any = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(slots=True)
class TokenLogprob:
    """A sampled token's log-probability and the most likely alternatives, as the model runner computes them."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass(slots=True)
class Logprob:
    """The same for a request's events, with each token's own text (special tokens included), as OpenAI shows it."""

    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass(slots=True)
class RequestOutput:
    """One event on a request's stream: new text (possibly empty) and, on the last event, why it ended."""

    text: str
    token_ids: list[int]
    logprobs: list[Logprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" on the last event

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class EngineError(RuntimeError):
    """The engine could not run this request (a failing batch, or the engine stopping)."""


class RequestTooLargeError(EngineError):
    """The request can never fit the KV-cache budget (a 400, not a wait)."""


class QueueFullError(EngineError):
    """Too many requests are waiting already (a 503 with Retry-After: come back later)."""


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory during a step (raised by the model runner, so no one else imports torch)."""


class BatchLost(RuntimeError):
    """Changing the running batch failed part-way (rows joining or leaving): the model runner dropped it, and every
    request that was in it fails."""
