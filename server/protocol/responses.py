"""POST /v1/responses: the request, the response object and its input items, in the shapes of OpenAI's Responses API
(openai/types/responses/). A request becomes a chat completion request: one generation path serves both."""

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, model_validator

from server.protocol import JSONFloat, OpenAIRequest, json_int
from server.protocol.chat import ChatCompletionRequest


class InputText(BaseModel):
    type: Literal["input_text"]
    text: str


class OutputText(BaseModel):
    """An earlier answer's text, when a client sends the conversation back itself."""

    type: Literal["output_text"]
    text: str
    annotations: list = []


class InputAudioData(BaseModel):
    data: str
    format: str | None = None


class ResponseInputAudio(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudioData


class InputFile(BaseModel):
    """A file part; this model hears audio, so it must hold audio: `file_data` (a data URL or base64) or `file_url`."""

    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


InputContent = Annotated[InputText | OutputText | ResponseInputAudio | InputFile, Field(discriminator="type")]


class InputMessage(BaseModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    id: str | None = None
    status: str | None = None


class TextFormat(BaseModel):
    """`text.format`: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name", "schema", "strict"}."""

    model_config = ConfigDict(extra="allow", json_schema_extra={  # json_schema's fields, as chat's JSONSchema has them
        "if": {"properties": {"type": {"const": "json_schema"}}, "required": ["type"]},
        "then": {"required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "description": {"type": ["string", "null"]},
            "schema": {"type": ["object", "null"]}, "strict": {"type": ["boolean", "null"]}}}})
    type: Literal["text", "json_object", "json_schema"] = "text"

    def as_response_format(self) -> dict:
        """Chat's `response_format` for the same request (json_schema nests its fields there)."""
        fields = self.model_dump(exclude={"type"})
        return {"type": "json_schema", "json_schema": fields} if self.type == "json_schema" else {"type": self.type}


class TextConfig(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(OpenAIRequest):
    model: str
    input: str | Annotated[list[InputMessage], Field(json_schema_extra={"minItems": 1})] = Field(
        description="A string, or at least one message; audio in user messages only.")
    background: Annotated[StrictBool | None, WithJsonSchema({"anyOf": [{"type": "boolean", "const": False},
                                                                       {"type": "null"}]})] = None  # not supported
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: json_int(ge=1) | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: StrictBool | None = None
    previous_response_id: str | None = Field(
        None, description="A response this API key stored (store=true) and that is still kept; any other id is a 400 "
                          "with code previous_response_not_found.")
    store: StrictBool = True
    stream: StrictBool = False
    temperature: JSONFloat | None = Field(None, ge=0.0, le=2.0)
    text: TextConfig = Field(default_factory=TextConfig)
    # no tool calling: accepted only without tools, as their schemas say
    tool_choice: Annotated[str | dict | None, WithJsonSchema({"anyOf": [{"type": "string", "enum": ["none", "auto"]},
                                                                        {"type": "null"}]})] = None
    tools: Annotated[list[dict] | None, WithJsonSchema({"anyOf": [
        {"type": "array", "items": {"type": "object"}, "maxItems": 0}, {"type": "null"}]})] = None
    top_p: JSONFloat | None = Field(None, gt=0.0, le=1.0)
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> "ResponsesRequest":
        if self.background:
            raise ValueError("background: background responses are not supported; send the request without "
                             "background (or with stream=true) and wait for its answer")
        if self.tools or self.tool_choice not in (None, "none", "auto"):
            raise ValueError("tools: tool calling is not supported by this model; send the request without tools")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input: give at least one input item, or a string")
        for i, item in enumerate(self.items):
            for j, part in enumerate(item.content if item.role != "user" and isinstance(item.content, list) else []):
                if isinstance(part, ResponseInputAudio | InputFile):
                    raise ValueError(f"input[{i}].content[{j}]: audio is accepted in user messages only")
        return self

    @property
    def items(self) -> list[InputMessage]:
        """`input` as message items (a string is one user message)."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=[InputText(type="input_text", text=self.input)])]
        return self.input

    def to_chat(self, history: list[dict]) -> ChatCompletionRequest:
        """The chat completion request that generates this response: `history` (earlier turns, chat messages), this
        request's instructions first and its input last."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        messages = [*system, *history, *(chat_message(item, index) for index, item in enumerate(self.items))]
        return ChatCompletionRequest(
            model=self.model, messages=messages, max_completion_tokens=self.max_output_tokens,
            temperature=self.temperature, top_p=self.top_p, response_format=self.text.format.as_response_format(),
        )


def chat_message(item: InputMessage, index: int) -> dict:
    """An input message as a chat message (a dict, validated by the chat request)."""
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    return {"role": item.role, "content": [chat_part(part, f"input[{index}].content[{i}]")
                                           for i, part in enumerate(item.content)]}


def chat_part(part: InputContent, param: str) -> dict:
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, ResponseInputAudio):
        return {"type": "input_audio", "input_audio": part.input_audio.model_dump()}
    if part.file_data is not None:
        return {"type": "file", "file": {"file_data": part.file_data, "filename": part.filename}}
    if part.file_url is not None:
        return {"type": "audio_url", "audio_url": {"url": part.file_url}}
    raise ValueError(f"{param}: an input_file needs file_data (a data: URL or base64 audio) or file_url; this server "
                     "keeps no uploaded files, so file_id is not accepted")


# ---- the response -----------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseOutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list = []
    logprobs: list = []


class ResponseOutputMessage(BaseModel):
    id: str = Field(default_factory=lambda: new_id("msg"))
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
    content: list[ResponseOutputText] = []


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    audio_tokens: int  # not in OpenAI's type: how many of the input tokens hold audio, as chat's usage says


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class Response(BaseModel):
    id: str = Field(default_factory=lambda: new_id("resp"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "in_progress"
    background: bool = False
    error: dict | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = {}
    model: str
    output: list[ResponseOutputMessage] = []
    parallel_tool_calls: bool = False
    previous_response_id: str | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any]
    tool_choice: str = "none"
    tools: list = []
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool


class ResponseStreamEvent(BaseModel):
    """One event of a streamed response (`stream=true`), named by its `type` (also the event's SSE name), with the
    fields of that type as OpenAI's ResponseStreamEvent has them."""

    model_config = ConfigDict(extra="allow")
    type: Literal["response.created", "response.in_progress", "response.output_item.added",
                  "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                  "response.content_part.done", "response.output_item.done", "response.completed",
                  "response.incomplete", "error"]
    sequence_number: int
