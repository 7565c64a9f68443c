"""GET /v1/realtime: OpenAI's Realtime API (GA) session objects and client events, as the `openai` package types
them (openai/types/realtime/); server events are built by `event` and the item helpers below, in the same shapes.

A session is either `transcription` (audio in, transcripts out) or `realtime` (audio or text turns in, text answers
out: this model has no voice). Fields this server has no use for are accepted and ignored, as OpenAI's API does.
"""

import uuid
from typing import Annotated, Any, Literal

from pydantic import Field

from server.protocol import OpenAIRequest
from server.protocol.audio import Keyword


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# --- session configuration -------------------------------------------------------------------------------------

class AudioFormat(OpenAIRequest):
    """audio/pcm (16-bit little-endian mono at 24 kHz), or G.711 audio/pcmu and audio/pcma (8 kHz)."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: Literal[24000] | None = None


class NoiseReduction(OpenAIRequest):
    type: Literal["near_field", "far_field"] | None = None


class Transcription(OpenAIRequest):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = Field(None, max_length=20)
    prompt: str | None = None
    keywords: list[Keyword] | None = Field(None, max_length=100)


class ServerVad(OpenAIRequest):
    """Turn detection on the server's Silero VAD. OpenAI's defaults."""

    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    idle_timeout_ms: int | None = Field(None, ge=5_000, le=30_000)
    create_response: bool = True
    interrupt_response: bool = True


class SemanticVad(OpenAIRequest):
    type: Literal["semantic_vad"]


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class AudioInput(OpenAIRequest):
    format: AudioFormat = Field(default_factory=AudioFormat)
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = Field(default_factory=lambda: ServerVad(type="server_vad"))


class AudioOutput(OpenAIRequest):
    format: AudioFormat | None = None
    voice: str | None = None
    speed: float | None = None


class SessionAudio(OpenAIRequest):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput | None = None


class Session(OpenAIRequest):
    """Both session types in one model; `type` says which (the SDK's union is told apart by it too)."""

    type: Literal["realtime", "transcription"]
    model: str | None = None
    audio: SessionAudio = Field(default_factory=SessionAudio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: int | Literal["inf"] | None = None

    def to_wire(self, session_id: str) -> dict:
        """The session as session.created / session.updated carry it."""
        body: dict[str, Any] = {"type": self.type, "id": session_id}
        audio_input = self.audio.input.model_dump(exclude_none=False)
        audio_input["format"] = {k: v for k, v in audio_input["format"].items() if v is not None}
        if self.type == "transcription":
            body |= {"object": "realtime.transcription_session", "audio": {"input": audio_input},
                     "include": self.include or []}
        else:
            body |= {"object": "realtime.session", "model": self.model, "instructions": self.instructions or "",
                     "output_modalities": self.output_modalities or ["text"],
                     "max_output_tokens": self.max_output_tokens or "inf", "audio": {"input": audio_input},
                     "include": self.include or []}
        return body


def merged_session(current: Session, update: dict) -> Session:
    """A session.update applies only the fields it names (an explicit null clears one: `turn_detection: null`)."""
    return Session.model_validate(_merge(current.model_dump(exclude_unset=True), update))


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in ("format", "turn_detection"):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- client events ---------------------------------------------------------------------------------------------

class ClientEvent(OpenAIRequest):
    event_id: str | None = None


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: dict  # merged into the current session, then validated (merged_session)


class AppendAudio(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class CommitAudio(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class ClearAudio(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ContentPart(OpenAIRequest):
    type: Literal["input_text", "input_audio", "text", "output_text"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None


class MessageItem(OpenAIRequest):
    id: str | None = None
    type: Literal["message"]
    role: Literal["user", "assistant", "system"]
    content: list[ContentPart]


class CreateItem(ClientEvent):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: MessageItem


class DeleteItem(ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseParams(OpenAIRequest):
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    conversation: Literal["auto", "none"] | str | None = None


class CreateResponse(ClientEvent):
    type: Literal["response.create"]
    response: ResponseParams = Field(default_factory=ResponseParams)


class CancelResponse(ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


CLIENT_EVENTS = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (  # type: ignore[attr-defined]
    SessionUpdate, AppendAudio, CommitAudio, ClearAudio, CreateItem, DeleteItem, CreateResponse, CancelResponse)}
# Events of OpenAI's API that this server knows and refuses with a reason (rather than "unknown event").
UNSUPPORTED_EVENTS = {
    "conversation.item.retrieve": "this server does not keep the audio of items to send back",
    "conversation.item.truncate": "there is no audio output to truncate",
    "output_audio_buffer.clear": "this server answers in text only: there is no output audio",
}


# --- server events ---------------------------------------------------------------------------------------------

def event(type_: str, **fields: Any) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(message: str, type_: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, event_id: str | None = None) -> dict:
    """OpenAI's `error` event; `event_id` inside is the client event that caused it."""
    return event("error", error={"type": type_, "code": code, "message": message, "param": param,
                                 "event_id": event_id})


def user_audio_item(item_id: str, status: str, transcript: str | None) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": "user",
            "content": [{"type": "input_audio", "transcript": transcript}]}


def text_item(item_id: str, role: str, status: str, text: str) -> dict:
    part = "output_text" if role == "assistant" else "input_text"
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": role,
            "content": [{"type": part, "text": text}]}



def response_usage(input_tokens: int, audio_tokens: int, output_tokens: int) -> dict:
    """A response's usage (RealtimeResponseUsage): text answers, so no output audio and no prompt cache."""
    return {"total_tokens": input_tokens + output_tokens, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_tokens - audio_tokens, "audio_tokens": audio_tokens,
                                    "cached_tokens": 0},
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0}}
