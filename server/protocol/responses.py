"""POST /v1/responses: the request, the response object and its input items, in the shapes of OpenAI's Responses API
(openai/types/responses/). A request becomes a chat completion request: one generation path serves both."""

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, model_validator

from server.protocol import OpenAIRequest
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


class InputAudio(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudioData


class InputFile(BaseModel):
    """A file part; this model hears audio, so it must hold audio: `file_data` (a data URL or base64) or `file_url`."""

    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


InputContent = Annotated[InputText | OutputText | InputAudio | InputFile, Field(discriminator="type")]


class InputMessage(BaseModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    id: str | None = None
    status: str | None = None


class TextFormat(BaseModel):
    """`text.format`: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name", "schema", "strict"}."""

    model_config = {"extra": "allow"}
    type: Literal["text", "json_object", "json_schema"] = "text"

    def as_response_format(self) -> dict:
        """Chat's `response_format` for the same request (json_schema nests its fields there)."""
        fields = self.model_dump(exclude={"type"})
        return {"type": "json_schema", "json_schema": fields} if self.type == "json_schema" else {"type": self.type}


class TextConfig(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(OpenAIRequest):
    model: str
    input: str | list[InputMessage]
    background: StrictBool | None = None
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    parallel_tool_calls: StrictBool | None = None
    previous_response_id: str | None = None
    store: StrictBool = True
    stream: StrictBool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    text: TextConfig = Field(default_factory=TextConfig)
    tool_choice: str | dict | None = None
    tools: list[dict] | None = None
    top_p: float | None = Field(None, gt=0.0, le=1.0)
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
                if isinstance(part, InputAudio | InputFile):
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
    if isinstance(part, InputAudio):
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
