"""POST /v1/chat/completions: OpenAI messages with audio parts -> the engine -> a completion or chunks."""

import time
import uuid
from collections.abc import AsyncIterator

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine
from server.engine.interface import ModelInfo
from server.engine.request import Prompt, RequestOutput
from server.engine.sequence import RequestStream
from server.metrics import Metrics
from server.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Usage,
)
from server.protocol.errors import bad_request
from server.serving.formats import Answer, EventStream, chat_logprobs, chat_usage, sse, sse_error
from server.serving.generation import Completion, Endpoint, prepare
from server.serving.prompts import to_conversation
from server.serving.samples import collect_samples, merged_events, submit_samples
from server.serving.sampling import chat_params


class ChatServing(Endpoint):
    def __init__(self, engine: Engine, info: ModelInfo, metrics: Metrics, settings: Settings,
                 detector: SpeechDetector) -> None:
        super().__init__(engine, info, metrics, settings, detector)
        self.model_id = settings.model_id

    async def create(self, request: ChatCompletionRequest) -> Answer | EventStream:
        prompt, streams = await self.start(request)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return EventStream(self._chunks(merged_events(streams, self.timeout_s), prompt, request.n, include_usage))
        completions = await collect_samples(streams, self.timeout_s)
        return Answer(ChatCompletion(
            model=self.model_id,
            choices=[Choice(
                index=index,
                message=AssistantMessage(content=completion.text),
                logprobs=chat_logprobs(completion.logprobs) if request.logprobs else None,
                finish_reason=completion.finish_reason,
            ) for index, completion in enumerate(completions)],
            usage=_usage(prompt, completions),
        ).model_dump())

    async def start(self, request: ChatCompletionRequest) -> tuple[Prompt, list[RequestStream]]:
        """The request's prompt, and its `n` generations submitted to the engine (the Responses API starts here
        too)."""
        if self.info.prompt_format == "base":
            raise bad_request("chat completions need an Instruct checkpoint (Qwen/Qwen2-Audio-7B-Instruct): this "
                              "server runs the base checkpoint, which transcribes (/v1/audio/transcriptions) and "
                              "translates (/v1/audio/translations)", param="model", code="model_not_supported")
        if request.n > self.engine.config.max_batch_size:
            raise bad_request(f"n: at most {self.engine.config.max_batch_size} samples a request on this server "
                              "(--max-batch-size), so that they share one batch", param="n")
        grammar = await self._grammar(request)
        conversation, clips = await to_conversation(request.messages, self.media, self.detector)
        prompt = await prepare(self.engine, conversation, clips)
        self.metrics.audio_seconds.labels("chat").inc(prompt.audio_seconds)
        params = chat_params(request, prompt, self.info, self.default_max_tokens)
        params.grammar = grammar
        return prompt, submit_samples(self.engine, self.metrics, prompt, params, request.n)

    async def _grammar(self, request: ChatCompletionRequest) -> object | None:
        """The response_format compiled for the model side (None: free text); a schema it cannot compile is a 400."""
        spec = request.response_format.grammar_spec() if request.response_format else None
        if spec is None:
            return None
        try:
            return await self.engine.compile_grammar(spec)
        except ValueError as exc:
            name = request.response_format.json_schema.name if request.response_format.json_schema else ""
            raise bad_request(f"response_format: the JSON schema {name!r} cannot be enforced while decoding: {exc}",
                              param="response_format", code="invalid_json_schema") from exc

    async def _chunks(self, stream: AsyncIterator[tuple[int, RequestOutput]], prompt: Prompt, n: int,
                      include_usage: bool) -> AsyncIterator[str]:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_id}
        exclude = None if include_usage else {"usage"}  # with include_usage every chunk carries usage: null

        def chunk(index: int, delta: Delta, finish: str | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
            choice = ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
            return sse(ChatCompletionChunk(**base, choices=[choice]).model_dump(exclude=exclude))

        completions = [Completion() for _ in range(n)]
        for index in range(n):
            yield chunk(index, Delta(role="assistant", content=""))
        try:
            async for index, event in stream:
                completions[index].add(event)
                if event.text or event.logprobs:
                    yield chunk(index, Delta(content=event.text), logprobs=chat_logprobs(event.logprobs or []))
                if event.finished:
                    yield chunk(index, Delta(), finish=event.finish_reason)
        except Exception as exc:  # headers are sent: the error travels as an event the SDK raises
            yield sse_error(exc)
            return
        if include_usage:
            yield sse(ChatCompletionChunk(**base, choices=[], usage=_usage(prompt, completions)).model_dump())
        yield sse("[DONE]")


def _usage(prompt: Prompt, completions: list[Completion]) -> Usage:
    """The prompt once (the samples share its prefill), every sample's tokens."""
    usage = chat_usage(prompt, completions[0])
    usage.completion_tokens = sum(len(completion.token_ids) for completion in completions)
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage
