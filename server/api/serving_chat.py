"""POST /v1/chat/completions: OpenAI messages with audio parts -> the engine -> a completion or chunks."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np

from server.api.errors import bad_request
from server.api.generation import Completion, collect, events, output_budget, prepare, sse, sse_error, submit
from server.api.media import MediaPolicy, part_audio
from server.api.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    PromptTokensDetails,
    TokenLogprobOut,
    TopLogprob,
    Usage,
)
from server.audio.chunking import contiguous_spans
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine
from server.engine.request import Prompt, TokenLogprob


class ChatServing:
    def __init__(self, engine: Engine, settings: Settings, detector: SpeechDetector) -> None:
        self.engine = engine
        self.detector = detector
        self.model_id = settings.model_id
        self.default_max_tokens = settings.default_max_tokens
        self.timeout_s = settings.request_timeout_s
        self.media = MediaPolicy.from_settings(settings)

    async def create(self, request: ChatCompletionRequest) -> ChatCompletion | AsyncIterator[str]:
        conversation, clips = await to_conversation(request.messages, self.media, self.detector)
        prompt = await prepare(self.engine, conversation, clips)
        self.engine.metrics.audio_seconds.labels("chat").inc(prompt.audio_seconds)
        max_tokens = output_budget(self.engine, prompt, request.requested_max_tokens, self.default_max_tokens)
        params = request.to_sampling_params(max_tokens, self.engine.runner.sampling_defaults)
        stream = submit(self.engine, prompt, params)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._chunks(events(stream, self.timeout_s), prompt, include_usage)
        completion = await collect(stream, self.timeout_s)
        return ChatCompletion(
            model=self.model_id,
            choices=[Choice(
                message=AssistantMessage(content=completion.text),
                logprobs=self._logprobs(completion.logprobs) if request.logprobs else None,
                finish_reason=completion.finish_reason,
            )],
            usage=_usage(prompt, completion),
        )

    async def _chunks(self, stream: AsyncIterator, prompt: Prompt, include_usage: bool) -> AsyncIterator[str]:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_id}
        exclude = None if include_usage else {"usage"}  # with include_usage every chunk carries usage: null

        def chunk(delta: Delta, finish: str | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
            choice = ChunkChoice(delta=delta, finish_reason=finish, logprobs=logprobs)
            return sse(ChatCompletionChunk(**base, choices=[choice]).model_dump(exclude=exclude))

        completion = Completion()
        yield chunk(Delta(role="assistant", content=""))
        try:
            async for event in stream:
                completion.add(event)
                if event.text or event.logprobs:
                    yield chunk(Delta(content=event.text), logprobs=self._logprobs(event.logprobs or []) or None)
                if event.finished:
                    yield chunk(Delta(), finish=event.finish_reason)
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        if include_usage:
            body = ChatCompletionChunk(**base, choices=[], usage=_usage(prompt, completion))
            yield sse(body.model_dump())
        yield sse("[DONE]")

    def _logprobs(self, logprobs: list[TokenLogprob]) -> ChoiceLogprobs | None:
        if not logprobs:
            return None
        return ChoiceLogprobs(content=[
            TokenLogprobOut(**self._top(lp.token_id, lp.logprob).model_dump(),
                            top_logprobs=[self._top(t, v) for t, v in lp.top])
            for lp in logprobs
        ])

    def _top(self, token_id: int, logprob: float) -> TopLogprob:
        piece = self.engine.runner.token_piece(token_id)
        return TopLogprob(token=piece, logprob=logprob, bytes=list(piece.encode()))


async def to_conversation(messages: list[ChatMessage], media: MediaPolicy,
                          detector: SpeechDetector) -> tuple[list[dict], list[np.ndarray]]:
    """OpenAI messages -> the chat template's messages (audio parts become {"type": "audio"}) and the clips.

    Audio longer than the encoder's 30 s window becomes consecutive clips, cut at pauses, so nothing is lost.
    """
    conversation, clips = [], []
    for index, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if message.content is None or isinstance(message.content, str):
            conversation.append({"role": role, "content": message.content or ""})
            continue
        parts = []
        for part_index, part in enumerate(message.content):
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
                continue
            if role != "user":
                raise bad_request("audio is accepted in user messages only", param=f"messages.{index}.content")
            samples = await part_audio(part, media, f"messages.{index}.content.{part_index}")
            for span in await asyncio.to_thread(contiguous_spans, samples, detector):
                parts.append({"type": "audio"})
                clips.append(samples[span.start : span.end])
        conversation.append({"role": role, "content": parts})
    if not any(m["role"] == "user" for m in conversation):
        raise bad_request("messages must contain at least one user message", param="messages")
    return conversation, clips


def _usage(prompt: Prompt, completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=prompt.num_tokens,
        completion_tokens=len(completion.token_ids),
        total_tokens=prompt.num_tokens + len(completion.token_ids),
        prompt_tokens_details=PromptTokensDetails(audio_tokens=prompt.audio_tokens),
    )

