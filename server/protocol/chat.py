"""POST /v1/chat/completions: the request, the completion, and the streamed chunks."""

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, model_validator

from server.protocol import JSONFloat, OpenAIRequest, json_int


class InputAudio(BaseModel):
    data: str
    format: str | None = None


class AudioURL(BaseModel):
    url: str


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class InputAudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURLPart(BaseModel):
    type: Literal["audio_url"]
    audio_url: AudioURL


class FileData(BaseModel):
    file_data: str | None = None  # a data URL (data:audio/wav;base64,...) or bare base64
    file_id: str | None = None
    filename: str | None = None


class FilePart(BaseModel):
    """OpenAI's `file` part; this model hears audio, so the file must be audio."""

    type: Literal["file"]
    file: FileData


ContentPart = Annotated[TextPart | InputAudioPart | AudioURLPart | FilePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class JSONSchema(BaseModel):
    """OpenAI's response_format.json_schema: the schema the answer must follow, enforced while decoding."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(json_schema_extra={  # the rule below, for the schema
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}}})

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchema | None = Field(None, description="Needed by type json_schema.")

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format: type json_schema needs a json_schema object with a name and a schema")
        return self

    def grammar_spec(self) -> dict | None:
        """What the model side compiles (None: free text). A json_schema without a schema is any JSON object."""
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.type == "json_schema" else None
        return {"type": "json_schema", "schema": schema} if schema is not None else {"type": "json_object"}


# What OpenAI's API has and this model cannot do, accepted only empty; their schemas say so (the validator, why)
_NULL = WithJsonSchema({"type": "null"})
_NO_ITEMS = WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "object"}, "maxItems": 0}, {"type": "null"}]})
_TEXT_ONLY = WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "string", "const": "text"}},
                                       {"type": "null"}]})
_NO_KEYS = WithJsonSchema({"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]})
_NO_TOOL = WithJsonSchema({"anyOf": [{"type": "string", "const": "none"}, {"type": "null"}]})
_FOUR_STOPS = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                                        {"type": "null"}]})


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="At least one user message; audio in user "
                                        "messages only.")
    model: str
    audio: Annotated[dict | None, _NULL] = None
    frequency_penalty: JSONFloat = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: Annotated[dict[str, float] | None, _NO_KEYS] = None
    logprobs: StrictBool = False
    max_completion_tokens: json_int(ge=1) | None = None
    max_tokens: json_int(ge=1) | None = None
    modalities: Annotated[list[str] | None, _TEXT_ONLY] = None
    n: json_int(ge=1, le=128) = Field(1, description="At most the server's --max-batch-size.")
    presence_penalty: JSONFloat = Field(0.0, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: json_int(ge=-(2**63), lt=2**64) | None = None
    stop: Annotated[str | list[str] | None, _FOUR_STOPS] = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: JSONFloat | None = Field(None, ge=0.0, le=2.0)
    tool_choice: Annotated[str | dict | None, _NO_TOOL] = None
    tools: Annotated[list[dict] | None, _NO_ITEMS] = None
    top_logprobs: json_int(ge=0, le=20) | None = Field(None, description="Needs logprobs=true.")
    top_p: JSONFloat | None = Field(None, gt=0.0, le=1.0)
    user: str | None = None
    # vLLM-style extensions
    top_k: json_int(ge=-1) | None = None
    min_p: JSONFloat | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: JSONFloat | None = Field(None, gt=0.0, le=10.0)
    min_tokens: json_int(ge=0) = 0
    ignore_eos: StrictBool = False

    @model_validator(mode="after")
    def _supported(self) -> "ChatCompletionRequest":
        if self.modalities and set(self.modalities) - {"text"} or self.audio is not None:
            raise ValueError("modalities: this model produces text only; audio output is not supported")
        if self.tools or self.tool_choice not in (None, "none"):
            raise ValueError("tools: tool calling is not supported by this model")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs=true")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class PromptTokensDetails(BaseModel):
    audio_tokens: int
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
