"""What every realtime session uses of the server: the transcription and chat serving, the VAD, metrics, limits."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.metrics import Metrics
from server.serving.chat import ChatServing
from server.serving.transcription import TranscriptionServing


@dataclass(frozen=True)
class Services:
    transcription: TranscriptionServing
    chat: ChatServing
    detector: SpeechDetector
    metrics: Metrics
    settings: Settings
    conversation: Callable[[Any], Any]  # a realtime session -> its Conversation (voice chat with text answers)
