"""OpenAI's Realtime API over WebSocket: live transcription, and voice chat answered in text.

A room per job, each taking only what it uses (an event sink, its limits, the services it calls):
- connection.py   one WebSocket from the first event to the close, within the server's limits (services.py)
- session.py      one session: its configuration, its input audio buffer, what each client event does
- audio_decoder.py  appended audio (pcm16 at 24 kHz, G.711) -> 16 kHz float32
- turn_detection.py  server VAD: where each turn starts and ends in the input buffer
- transcriber.py  a committed turn -> its transcript, through /v1/audio/transcriptions' pipeline
- voice_chat.py   a `realtime` session's conversation: its items and the client's item and response events
- responder.py    the model's answer to the conversation, streamed as response events
- items.py, outbox.py, refusals.py: a conversation item; the bounded queue of server events; error events and
  close codes
"""

from server.audio.vad import SpeechDetector
from server.config import Settings
from server.metrics import Metrics
from server.serving.chat import ChatServing
from server.serving.realtime.connection import RealtimeServing
from server.serving.realtime.services import RealtimeLimits, Services
from server.serving.transcription import TranscriptionServing


def realtime_serving(transcription: TranscriptionServing, chat: ChatServing, detector: SpeechDetector,
                     metrics: Metrics, settings: Settings) -> RealtimeServing:
    return RealtimeServing(Services(transcription, chat, detector, metrics), RealtimeLimits.from_settings(settings),
                           settings.model_id, frozenset(settings.accepted_model_ids))
