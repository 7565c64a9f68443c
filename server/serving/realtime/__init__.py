"""OpenAI's Realtime API over WebSocket: live transcription, and voice chat answered in text.

serving.py runs a session's socket within the limits; session.py is one session's state and client events;
audio_in.py decodes appended audio, turns.py finds turns with server VAD; transcriber.py transcribes each turn;
conversation.py and responder.py hold a voice chat's items and the model's answers.
"""

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.metrics import Metrics
from server.serving.chat import ChatServing
from server.serving.realtime.conversation import Conversation
from server.serving.realtime.services import Services
from server.serving.realtime.serving import RealtimeServing
from server.serving.transcription import TranscriptionServing


def realtime_serving(transcription: TranscriptionServing, chat: ChatServing, detector: SpeechDetector,
                     metrics: Metrics, settings: Settings) -> RealtimeServing:
    return RealtimeServing(Services(transcription, chat, detector, metrics, settings, Conversation))
