"""What every endpoint does with the engine: build the prompt, submit it (its sampling and budget:
serving/sampling.py), collect or stream its events, and say in HTTP terms what went wrong."""

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine
from server.engine.interface import ModelInfo
from server.engine.request import (
    EngineError,
    Logprob,
    Prompt,
    QueueFullError,
    RequestOutput,
    RequestTooLargeError,
    SamplingParams,
)
from server.engine.sequence import RequestStream
from server.metrics import Metrics
from server.protocol.errors import APIError, bad_request, service_unavailable
from server.request_context import request_id
from server.serving.media import MediaPolicy


class Endpoint:
    """What every endpoint's serving holds: the engine, the model's description, the metrics, the limits."""

    def __init__(self, engine: Engine, info: ModelInfo, metrics: Metrics, settings: Settings,
                 detector: SpeechDetector) -> None:
        self.engine = engine
        self.info = info
        self.metrics = metrics
        self.detector = detector
        self.default_max_tokens = settings.default_max_tokens
        self.timeout_s = settings.request_timeout_s
        self.media = MediaPolicy.from_settings(settings)


async def prepare(engine: Engine, conversation: list[dict], clips: list) -> Prompt:
    try:
        return await engine.prepare(conversation, clips)
    except ValueError as exc:  # the processor or chat template refused the input
        raise bad_request(f"could not build the prompt: {exc}") from exc


def submit(engine: Engine, metrics: Metrics, prompt: Prompt, params: SamplingParams,
           count_prompt: bool = True) -> RequestStream:
    """`count_prompt`: false for the second and later samples of one request (n > 1), which share its prefill."""
    try:
        stream = engine.submit(prompt, params, request_id.get())
    except RequestTooLargeError as exc:
        raise bad_request(str(exc), param="max_tokens", code="context_length_exceeded") from exc
    except QueueFullError as exc:
        retry = str(max(1, math.ceil(engine.queue_depth / max(1, engine.config.max_batch_size))))
        # OpenAI answers a model without capacity for now 503 server_is_overloaded (429 is a caller's own rate limit)
        raise APIError(503, f"the server is busy: {exc}", code="server_is_overloaded",
                       headers={"Retry-After": retry}) from exc
    except EngineError as exc:
        raise service_unavailable(str(exc), code="engine_unavailable") from exc
    if count_prompt:
        metrics.prompt_tokens.inc(prompt.num_tokens)
    return stream


@dataclass
class Completion:
    """A request's events, added up."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Logprob] = field(default_factory=list)
    finish_reason: str = "stop"
    ends: list[int] = field(default_factory=list)  # per token: where its text ends in `text`

    def add(self, event: RequestOutput) -> None:
        self.text += event.text
        self.token_ids += event.token_ids
        self.ends += [len(self.text)] * len(event.token_ids)
        self.logprobs += event.logprobs or []
        self.finish_reason = event.finish_reason or self.finish_reason

    def tokens_outside(self, removed: list[tuple[int, int]]) -> list[int]:
        """Indices of the tokens whose text is not wholly inside one of the `removed` character ranges (a token
        that straddles an edge of one stays; tokens with no text of their own, such as the end id, stay)."""
        kept, start = [], 0
        for index, end in enumerate(self.ends):
            if not (end > start and any(a <= start and end <= b for a, b in removed)):
                kept.append(index)
            start = end
        return kept


async def collect(stream: RequestStream, timeout_s: float) -> Completion:
    """Run a request to its end within the deadline; cancel it if the caller goes away first."""
    completion = Completion()
    try:
        async with asyncio.timeout(timeout_s or None):
            async for event in stream:
                completion.add(event)
    except TimeoutError as exc:
        raise timed_out(timeout_s) from exc
    except EngineError as exc:
        raise engine_failed(exc, stream) from exc
    finally:
        stream.cancel()
    return completion


def engine_failed(exc: EngineError, stream: RequestStream) -> APIError:
    return APIError(500, f"{exc} (request id {stream.request_id})", code="engine_error")


async def events(stream: RequestStream, timeout_s: float) -> AsyncIterator[RequestOutput]:
    """A request's events within the deadline; a client that disconnects closes the generator and cancels the work."""
    try:
        async with asyncio.timeout(timeout_s or None):
            async for event in stream:
                yield event
    except TimeoutError as exc:
        raise timed_out(timeout_s) from exc
    finally:
        stream.cancel()


def timed_out(timeout_s: float) -> APIError:
    return APIError(504, f"the request did not finish within the server's limit of {timeout_s:g} s", code="timeout")
