"""What realtime sessions use of the server, typed: the serving they call, the VAD, the metrics, and their limits."""

from dataclasses import dataclass

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.metrics import Metrics
from server.serving.generation import Endpoint
from server.serving.transcription import TranscriptionServing


@dataclass(frozen=True)
class Services:
    transcription: TranscriptionServing  # each turn's transcript, as /v1/audio/transcriptions gives it
    chat: Endpoint  # the chat completions' engine and limits: the answers of a voice chat
    detector: SpeechDetector
    metrics: Metrics


@dataclass(frozen=True)
class RealtimeLimits:
    """The --realtime-* settings: each passed limit is an error event and a close code (refusals.py)."""

    max_sessions: int
    max_session_s: float
    max_buffer_s: float
    max_message_mb: float
    send_queue: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "RealtimeLimits":
        return cls(settings.realtime_max_sessions, settings.realtime_max_session_s, settings.realtime_max_buffer_s,
                   settings.realtime_max_message_mb, settings.realtime_send_queue)
