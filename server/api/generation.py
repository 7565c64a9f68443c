"""What every endpoint does with the engine: fit the prompt into the context, run it, collect or stream events."""

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from server.api.errors import APIError, bad_request
from server.engine.engine import Engine, QueueFullError, RequestStream, RequestTooLargeError
from server.engine.request import EngineError, Prompt, RequestOutput, SamplingParams, TokenLogprob
from server.request_context import request_id


def output_budget(engine: Engine, prompt: Prompt, requested: int | None, default: int) -> int:
    """Output tokens this request may generate: what it asked for, if it fits the model's context."""
    room = engine.runner.max_model_len - prompt.num_tokens
    if room <= 0 or (requested is not None and requested > room):
        fits = ""
        if prompt.audio_tokens:  # say how much audio would fit beside this text and answer
            per_second = prompt.audio_tokens / prompt.audio_seconds
            left = engine.runner.max_model_len - (prompt.num_tokens - prompt.audio_tokens) - (requested or 1)
            fits = f"; about {max(0.0, left / per_second):.0f} s of audio fit in one request beside this text"
        raise bad_request(
            f"the prompt takes {prompt.num_tokens} tokens ({prompt.audio_tokens} of them audio, "
            f"{prompt.audio_seconds:.1f} s); with max_tokens={requested} that passes the model's context of "
            f"{engine.runner.max_model_len} tokens{fits}",
            param="max_tokens" if room > 0 else "messages",
            code="context_length_exceeded",
        )
    return requested if requested is not None else min(default, room)


def submit(engine: Engine, prompt: Prompt, params: SamplingParams) -> RequestStream:
    try:
        stream = engine.submit(prompt, params, request_id.get())
    except RequestTooLargeError as exc:
        raise bad_request(str(exc), param="max_tokens", code="context_length_exceeded") from exc
    except QueueFullError as exc:
        retry = str(max(1, math.ceil(engine.queue_depth / max(1, engine.config.max_batch_size))))
        raise APIError(429, f"the server is busy: {exc}", code="server_busy", headers={"Retry-After": retry}) from exc
    except EngineError as exc:
        raise APIError(503, str(exc), code="engine_unavailable") from exc
    engine.metrics.prompt_tokens.inc(prompt.num_tokens)
    return stream


@dataclass
class Completion:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "stop"

    def add(self, event: RequestOutput) -> None:
        self.text += event.text
        self.token_ids += event.token_ids
        self.logprobs += event.logprobs or []
        self.finish_reason = event.finish_reason or self.finish_reason


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
        raise APIError(500, f"{exc} (request id {stream.request_id})", code="engine_error") from exc
    finally:
        stream.cancel()
    return completion


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


def sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def sse_error(exc: Exception) -> str:
    status = exc.status if isinstance(exc, APIError) else 500
    message = exc.message if isinstance(exc, APIError) else f"{exc} (request id {request_id.get()})"
    return sse({"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                          "param": None, "code": None}})


async def prepare(engine: Engine, conversation: list[dict], clips: list) -> Prompt:
    try:
        return await engine.prepare(conversation, clips)
    except ValueError as exc:  # the processor or chat template refused the input
        raise bad_request(f"could not build the prompt: {exc}") from exc
