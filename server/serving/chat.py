"""POST /v1/chat/completions: OpenAI messages with audio parts -> the engine -> a completion or chunks."""

import time
import uuid
from collections.abc import AsyncIterator

from server.api.errors import bad_request
from server.api.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
)
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine
from server.engine.interface import ModelInfo
from server.engine.request import Prompt, RequestOutput
from server.engine.sequence import RequestStream
from server.metrics import Metrics
from server.serving.formats import Answer, EventStream, chat_logprobs, chat_usage, sse, sse_error
from server.serving.generation import Completion, Endpoint, collect, events, output_budget, prepare, submit
from server.serving.prompts import to_conversation


class ChatServing(Endpoint):
    def __init__(self, engine: Engine, info: ModelInfo, metrics: Metrics, settings: Settings,
                 detector: SpeechDetector) -> None:
        super().__init__(engine, info, metrics, settings, detector)
        self.model_id = settings.model_id

    async def create(self, request: ChatCompletionRequest) -> Answer | EventStream:
        prompt, stream = await self.start(request)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return EventStream(self._chunks(events(stream, self.timeout_s), prompt, include_usage))
        completion = await collect(stream, self.timeout_s)
        return Answer(ChatCompletion(
            model=self.model_id,
            choices=[Choice(
                message=AssistantMessage(content=completion.text),
                logprobs=chat_logprobs(completion.logprobs) if request.logprobs else None,
                finish_reason=completion.finish_reason,
            )],
            usage=chat_usage(prompt, completion),
        ).model_dump())

    async def start(self, request: ChatCompletionRequest) -> tuple[Prompt, RequestStream]:
        """The request's prompt, and its generation submitted to the engine (the Responses API starts here too)."""
        if self.info.prompt_format == "base":
            raise bad_request("chat completions need an Instruct checkpoint (Qwen/Qwen2-Audio-7B-Instruct): this "
                              "server runs the base checkpoint, which transcribes (/v1/audio/transcriptions) and "
                              "translates (/v1/audio/translations)", param="model", code="model_not_supported")
        conversation, clips = await to_conversation(request.messages, self.media, self.detector)
        prompt = await prepare(self.engine, conversation, clips)
        self.metrics.audio_seconds.labels("chat").inc(prompt.audio_seconds)
        max_tokens = output_budget(self.info, prompt, request.requested_max_tokens, self.default_max_tokens)
        params = request.to_sampling_params(max_tokens, self.info.sampling_defaults)
        return prompt, submit(self.engine, self.metrics, prompt, params)

    async def _chunks(self, stream: AsyncIterator[RequestOutput], prompt: Prompt,
                      include_usage: bool) -> AsyncIterator[str]:
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
                    yield chunk(Delta(content=event.text), logprobs=chat_logprobs(event.logprobs or []))
                if event.finished:
                    yield chunk(Delta(), finish=event.finish_reason)
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        if include_usage:
            yield sse(ChatCompletionChunk(**base, choices=[], usage=chat_usage(prompt, completion)).model_dump())
        yield sse("[DONE]")
