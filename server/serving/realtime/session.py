"""One realtime session: its configuration, its input audio buffer and turns, and what each client event does.

Client events arrive one at a time (`receive`); server events leave through `emit`, which never waits. Work that
takes the engine (transcripts, answers) runs in tasks of its own, so a session keeps taking audio while it waits.
The session builds its parts and hands each only what it uses: the transcriber its serving and the sink, the voice
chat (a `realtime` session's conversation) the sink, the VAD and chat's serving, and each call the configuration.
"""

import asyncio
import json
import logging
import time
from typing import Literal

import numpy as np
from pydantic import ValidationError

from server.audio.clip import SAMPLE_RATE
from server.protocol.audio import TranscriptionRequest
from server.protocol.realtime import (
    CLIENT_EVENTS,
    UNSUPPORTED_EVENTS,
    AppendAudio,
    ClearAudio,
    ClientEvent,
    CommitAudio,
    Session,
    SessionUpdate,
    Transcription,
    event,
    merged_session,
    new_id,
    user_audio_item,
)
from server.protocol.validation import describe_validation_error
from server.serving.languages import language_name
from server.serving.realtime.audio_decoder import AudioDecoder, InvalidAudio, decode_base64
from server.serving.realtime.outbox import EventSink
from server.serving.realtime.refusals import CLOSE_BUFFER_FULL, CLOSE_MESSAGE_TOO_BIG, ClientError, Close
from server.serving.realtime.services import RealtimeLimits, Services
from server.serving.realtime.transcriber import Transcriber
from server.serving.realtime.turn_detection import (
    IdleTimeout,
    InputBuffer,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    ms,
)
from server.serving.realtime.voice_chat import VoiceChat

logger = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # OpenAI's own minimum for a committed buffer
OFF_LOOP_S = 1.0  # appends of more audio than this are decoded and scored in a worker thread


class RealtimeSession:
    def __init__(self, services: Services, limits: RealtimeLimits, session_type: Literal["realtime", "transcription"],
                 model: str, emit: EventSink) -> None:
        self.services = services
        self.limits = limits
        self.id = new_id("sess")
        self.emit = emit
        self.config = Session(type=session_type, model=model)
        self.decoder = AudioDecoder(self.config.audio.input.format.type)
        self.buffer = InputBuffer()
        self.turns = self._turn_detector()
        self.speech_item: str | None = None  # the item speech_started announced
        self.last_item: str | None = None
        self.transcriber = Transcriber(services.transcription, services.detector, services.metrics, emit)
        self.voice_chat = self._new_voice_chat() if session_type == "realtime" else None

    def created(self) -> dict:
        return event("session.created", session=self.config.to_wire(self.id))

    async def close(self) -> None:
        """The session ends: nothing it started may go on in the engine."""
        await self.transcriber.cancel_all()
        if self.voice_chat is not None:
            await self.voice_chat.cancel_all()

    async def receive(self, text: str) -> None:
        """One client message; a refused one is answered with an `error` event naming its event_id."""
        if len(text) > self.limits.max_message_mb * 2**20:
            raise Close(CLOSE_MESSAGE_TOO_BIG, f"the message is larger than the server's limit of "
                        f"{self.limits.max_message_mb:g} MiB (--realtime-max-message-mb)", "message_too_large")
        event_id = None
        try:
            try:
                body = json.loads(text)
            except ValueError as exc:
                raise ClientError(f"the message is not valid JSON: {exc}", "invalid_json") from exc
            if not isinstance(body, dict):
                raise ClientError("a client event is a JSON object with a `type`", "invalid_event")
            event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else None
            await self.handle(self._parse(body))
        except Close:
            raise
        except ClientError as exc:
            self.emit(exc.event(event_id))

    def _parse(self, body: dict) -> ClientEvent:
        kind = body.get("type")
        if kind in UNSUPPORTED_EVENTS:
            raise ClientError(f"{kind} is not supported: {UNSUPPORTED_EVENTS[kind]}", "unsupported_event", "type")
        if kind not in CLIENT_EVENTS:
            raise ClientError(f"unknown event type {kind!r}; this server takes {', '.join(sorted(CLIENT_EVENTS))}",
                              "invalid_event", "type")
        try:
            return CLIENT_EVENTS[kind].model_validate(body)
        except ValidationError as exc:
            message, param = describe_validation_error(exc.errors())
            raise ClientError(f"{kind}: {message}", "invalid_value", param) from exc

    async def handle(self, client_event: ClientEvent) -> None:
        match client_event:
            case SessionUpdate():
                self._update(client_event.session)
            case AppendAudio():
                await self._append(client_event.audio)
            case CommitAudio():
                self._commit()
            case ClearAudio():
                self._clear()
            case _:
                if self.voice_chat is None:
                    raise ClientError(f"{client_event.type} needs a realtime session (session.type `realtime`); this "
                                      "is a transcription session", "invalid_session_type", "type")
                await self.voice_chat.handle(client_event, self.config)

    def _update(self, update: dict) -> None:
        try:
            config = merged_session(self.config, update)
        except ValidationError as exc:
            message, param = describe_validation_error(exc.errors())
            raise ClientError(f"session.{param}: {message.split(': ', 1)[-1]}" if param else message,
                              "invalid_value", f"session.{param}" if param else "session") from exc
        self._check(config)
        config.model = self.config.model  # the served model's id, whatever accepted id the client names
        old, self.config = self.config, config
        if config.audio.input.format.type != old.audio.input.format.type:
            self.decoder = AudioDecoder(config.audio.input.format.type)
        if config.audio.input.turn_detection != old.audio.input.turn_detection:
            self.turns = self._turn_detector()
        if config.type != old.type:  # nothing was said yet (_check): the session becomes the other kind
            self.voice_chat = self._new_voice_chat() if config.type == "realtime" else None
        self.emit(event("session.updated", session=config.to_wire(self.id)))

    def _check(self, config: Session) -> None:
        said = self.last_item is not None or (self.voice_chat is not None and self.voice_chat.items)
        if config.type != self.config.type and said:
            raise ClientError(f"session.type cannot change from {self.config.type!r} to {config.type!r} once the "
                              "session has items; open a new session (GET /v1/realtime?intent=transcription for "
                              "transcription)", "invalid_value", "session.type")
        if config.audio.input.turn_detection is not None and config.audio.input.turn_detection.type == "semantic_vad":
            raise ClientError("semantic_vad is not available; use server_vad (Silero VAD) or null",
                              "invalid_value", "session.audio.input.turn_detection.type")
        if "audio" in (config.output_modalities or []):
            raise ClientError("this server answers in text only (Qwen2-Audio does not speak): set output_modalities "
                              "to [\"text\"]", "unsupported_modality", "session.output_modalities")
        transcription = config.audio.input.transcription
        codes = {"language": transcription.language} if transcription and transcription.language else {}
        codes |= {f"languages[{i}]": code for i, code in enumerate(transcription.languages or [])} if transcription else {}
        for field, code in codes.items():
            if language_name(code) is None:
                raise ClientError(f"unknown language {code!r}; use an ISO-639-1 code such as 'en'", "invalid_value",
                                  f"session.audio.input.transcription.{field}")

    def _new_voice_chat(self) -> VoiceChat:
        return VoiceChat(self.emit, self.services.detector, self.services.chat, self.id)

    def _turn_detector(self) -> TurnDetector | None:
        vad = self.config.audio.input.turn_detection
        return TurnDetector(self.services.detector, vad, self.buffer.end) if vad is not None else None

    async def _append(self, audio: str) -> None:
        try:
            data = decode_base64(audio)
        except InvalidAudio as exc:
            raise ClientError(f"input_audio_buffer.append: {exc}", "invalid_value", "audio") from exc
        held = self.buffer.uncommitted / SAMPLE_RATE + self.decoder.seconds(data)
        if held > self.limits.max_buffer_s:
            raise Close(CLOSE_BUFFER_FULL, f"the input audio buffer would hold {held:.1f} s of uncommitted audio, "
                        f"more than the server's limit of {self.limits.max_buffer_s:g} s "
                        "(--realtime-max-buffer-s): commit it sooner, or use server VAD", "input_audio_buffer_full")
        turns, end = self.turns, self.buffer.end

        def decode_and_detect() -> tuple[np.ndarray, list]:
            samples = self.decoder.push(data)
            return samples, turns.feed(samples, end + samples.shape[0]) if turns is not None else []

        # a long append is resampled and scored off the event loop, which every session and request shares
        samples, found = (await asyncio.to_thread(decode_and_detect) if self.decoder.seconds(data) > OFF_LOOP_S
                          else decode_and_detect())
        self.buffer.append(samples)
        self.services.metrics.audio_seconds.labels("realtime").inc(samples.shape[0] / SAMPLE_RATE)
        for turn in found:
            self._on_turn(turn)
        if self.turns is not None:
            self.buffer.drop_before(self.turns.keep_from)
            self.buffer.committed = max(self.buffer.committed, self.buffer.start)

    def _on_turn(self, turn: SpeechStarted | SpeechStopped | IdleTimeout) -> None:
        if isinstance(turn, SpeechStarted):
            self.speech_item = new_id("item")
            self.emit(event("input_audio_buffer.speech_started", audio_start_ms=ms(turn.start),
                            item_id=self.speech_item))
            if self.voice_chat is not None:
                self.voice_chat.speech_started(self.config)
        elif isinstance(turn, SpeechStopped):
            item_id, self.speech_item = self.speech_item or new_id("item"), None
            self.emit(event("input_audio_buffer.speech_stopped", audio_end_ms=ms(turn.end), item_id=item_id))
            self._commit_turn(turn.start, turn.end, item_id, by_vad=True)
        else:
            item_id = new_id("item")
            self.emit(event("input_audio_buffer.timeout_triggered", audio_start_ms=ms(turn.start),
                            audio_end_ms=ms(turn.end), item_id=item_id))
            self._commit_turn(turn.start, turn.end, item_id, by_vad=True)

    def _commit(self) -> None:
        self.buffer.append(self.decoder.flush())
        held_ms = ms(self.buffer.uncommitted)
        if held_ms < MIN_COMMIT_MS:
            raise ClientError(f"Error committing input audio buffer: buffer too small. Expected at least "
                              f"{MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms}ms of audio.",
                              "input_audio_buffer_commit_empty")
        item_id, self.speech_item = self.speech_item or new_id("item"), None
        self._commit_turn(self.buffer.committed, self.buffer.end, item_id, by_vad=False)
        self.turns = self._turn_detector()  # a turn in progress ended with the commit

    def _clear(self) -> None:
        self.decoder.flush()
        self.buffer.take(self.buffer.committed, self.buffer.end)
        self.turns, self.speech_item = self._turn_detector(), None
        self.emit(event("input_audio_buffer.cleared"))

    def _last_item(self) -> str | None:
        if self.voice_chat is not None:  # text items and answers are in the conversation too
            return self.voice_chat.items[-1].id if self.voice_chat.items else None
        return self.last_item

    def _commit_turn(self, start: int, end: int, item_id: str, by_vad: bool) -> None:
        ended_at = time.perf_counter()
        samples = self.buffer.take(start, end)
        previous = self._last_item()
        self.last_item = item_id
        self.emit(event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id))
        self.emit(event("conversation.item.added", previous_item_id=previous,
                        item=user_audio_item(item_id, "in_progress" if self.voice_chat is None else "completed",
                                             None)))
        logger.info("turn %s: %.2f s of audio committed by %s", item_id, samples.shape[0] / SAMPLE_RATE,
                    "server VAD" if by_vad else "the client")
        transcription = self.config.audio.input.transcription
        if self.voice_chat is not None:
            self.voice_chat.add_user_audio(item_id, previous, samples, by_vad, self.config)
        if self.voice_chat is None or transcription is not None:  # a transcription session transcribes anyway
            request = TranscriptionRequest(model=self.config.model or "-", **_hints(transcription))
            logprobs = "item.input_audio_transcription.logprobs" in (self.config.include or [])
            on_done = self.voice_chat.transcribed if self.voice_chat is not None else None
            self.transcriber.start(item_id, samples, request, logprobs, ended_at, on_done)


def _hints(transcription: Transcription | None) -> dict:
    """What a session's transcription settings tell the model: the language, or the possible ones, and words and
    phrases to expect (hints in the instruction, as for /v1/audio/transcriptions)."""
    if transcription is None:
        return {}
    return {"language": transcription.language, "languages": transcription.languages or [],
            "prompt": transcription.prompt, "keywords": transcription.keywords or []}
