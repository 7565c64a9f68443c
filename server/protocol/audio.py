"""POST /v1/audio/transcriptions and /v1/audio/translations: the form's fields and every response format's body."""

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, WithJsonSchema, model_validator

from server.protocol import FormBool, JSONFloat, OpenAIRequest, json_int
from server.protocol.errors import bad_request

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
STREAMED_FORMATS = ("json", "text", "diarized_json")
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class ServerVad(OpenAIRequest):
    """`chunking_strategy` with explicit voice-activity settings: one clip (and segment) per utterance."""

    type: Literal["server_vad"]
    threshold: JSONFloat = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: json_int(ge=0, le=10_000) = 300
    silence_duration_ms: json_int(ge=0, le=10_000) = 200


_SEGMENT_ONLY = WithJsonSchema({"type": "string", "const": "segment"})  # no word timestamps: the validator says why


class TranscriptionRequest(OpenAIRequest):
    """Fields of the multipart form (the `file` part travels beside it)."""

    model: str
    language: str | None = None
    languages: list[str] = Field(default_factory=list, max_length=20, description=(
        "Possible languages of the audio (ISO-639-1): a hint in the instruction, and the choices language detection "
        "picks from."))
    prompt: str | None = None
    keywords: list[Keyword] = Field(default_factory=list, max_length=100, description=(
        "Words and phrases that may occur in the audio: a hint in the instruction."))
    response_format: ResponseFormat = Field("json", description=(
        "diarized_json: transcriptions only, and it needs chunking_strategy."))
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Annotated[Literal["segment", "word"], _SEGMENT_ONLY]] = Field(
        default_factory=list, description="Needs response_format verbose_json.")
    stream: FormBool = False
    include: list[Literal["logprobs"]] = Field(default_factory=list)
    chunking_strategy: Literal["auto"] | ServerVad | None = Field(None, description=(
        "How long audio is cut into clips; required for diarization models (response_format diarized_json)."))
    known_speaker_names: list[str] = Field(default_factory=list, description=(
        "diarized_json only: up to 4 names of known speakers, distinct and not empty, each with a reference in "
        "known_speaker_references."))
    known_speaker_references: list[str] = Field(default_factory=list, description=(
        "diarized_json only: one per name, each a base64 data URL of 2-10 s of that speaker's speech (at least "
        "0.5 s of it speech), in any accepted audio format."))
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    # extensions: translate into this language instead of English (translations only); vLLM-style length control
    target_language: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: FormBool = False

    @model_validator(mode="after")
    def _supported(self) -> "TranscriptionRequest":
        if "word" in self.timestamp_granularities:
            raise ValueError("timestamp_granularities: word timestamps are not available for this model; use segment")
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise ValueError("timestamp_granularities: requires response_format=verbose_json")
        if self.include and self.response_format != "json":
            raise ValueError("include: logprobs requires response_format=json")
        if self.response_format != "diarized_json":
            if self.known_speaker_names or self.known_speaker_references:
                field = "known_speaker_names" if self.known_speaker_names else "known_speaker_references"
                raise ValueError(f"{field}: known speakers name diarized segments; use response_format=diarized_json")
        elif self.chunking_strategy is None:
            # OpenAI's own answer (message, param and code), before any audio is read; pydantic passes it through
            raise bad_request("chunking_strategy is required for diarization models", param="chunking_strategy",
                              code="invalid_value")
        return self

    @property
    def streamed(self) -> bool:
        """Whether the answer goes out as events: stream=true with json, text or diarized_json. OpenAI ignores
        `stream` for a format it cannot stream (LiteLLM sends it with verbose_json), so those are answered whole."""
        return self.stream and self.response_format in STREAMED_FORMATS


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


class DetectedLanguage(BaseModel):
    code: str


class Transcription(BaseModel):
    text: str
    languages: list[DetectedLanguage] | None = None
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


class DiarizedSegment(BaseModel):
    """A segment of a diarized transcription (the SDK's TranscriptionDiarizedSegment), also streamed as an event."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str


class DiarizedTranscription(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: TranscriptionUsage


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[Segment]
    usage: DurationUsage


class TranscriptTextDelta(BaseModel):
    """A streamed transcription's text as it comes (`stream=true`)."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str
    segment_id: str | None = None  # diarized_json: the segment the text belongs to


class TranscriptTextDone(BaseModel):
    """The last event of a streamed transcription: the whole text and its usage."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    languages: list[DetectedLanguage] | None = None  # what language detection found, when `languages` asked
    usage: TranscriptionUsage
