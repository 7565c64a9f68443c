"""POST /v1/audio/transcriptions and /v1/audio/translations: the form's fields and every response format's body."""

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from server.protocol import OpenAIRequest

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class ServerVad(OpenAIRequest):
    """`chunking_strategy` with explicit voice-activity settings: one clip (and segment) per utterance."""

    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(200, ge=0, le=10_000)


class TranscriptionRequest(OpenAIRequest):
    """Fields of the multipart form (the `file` part travels beside it)."""

    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=list)
    stream: bool = False
    include: list[Literal["logprobs"]] = Field(default_factory=list)
    chunking_strategy: Literal["auto"] | ServerVad | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    # extensions: translate into this language instead of English (translations only); vLLM-style length control
    target_language: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _supported(self) -> "TranscriptionRequest":
        if "word" in self.timestamp_granularities:
            raise ValueError("timestamp_granularities: word timestamps are not available for this model; use segment")
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise ValueError("timestamp_granularities: requires response_format=verbose_json")
        if self.include and self.response_format != "json":
            raise ValueError("include: logprobs requires response_format=json")
        return self

    @property
    def streamed(self) -> bool:
        """Whether the answer goes out as events: stream=true with json or text. OpenAI ignores `stream` for a
        format it cannot stream (LiteLLM sends it with verbose_json), so those are answered whole."""
        return self.stream and self.response_format in ("json", "text")


class InputTokenDetails(BaseModel):
    audio_tokens: int
    text_tokens: int


class TranscriptionUsage(BaseModel):
    type: Literal["tokens"] = "tokens"
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: InputTokenDetails


class DurationUsage(BaseModel):
    """verbose_json reports usage in seconds of audio, as the OpenAI SDK's TranscriptionVerbose types it."""

    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionLogprob(BaseModel):
    token: str
    bytes: list[int]
    logprob: float


class Transcription(BaseModel):
    text: str
    usage: TranscriptionUsage
    logprobs: list[TranscriptionLogprob] | None = None


class Segment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[Segment]
    usage: DurationUsage
