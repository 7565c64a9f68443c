"""A `realtime` session's conversation: the user's spoken and typed turns and the model's text answers.

Each user turn's audio goes to the model as audio (Qwen2-Audio listens; the transcript, when the session asks for
one, is for the client only). A response is one chat completion over the whole conversation (server.serving.chat's
path: prompt, context budget, engine), streamed as response.output_text.delta events; when the conversation no
longer fits the model's context, its oldest turns are left out of the prompt (they stay in the conversation).

The session hands each call its current configuration; the voice chat keeps the items, and its responder answers.
"""

import asyncio
import logging

import numpy as np

from server.audio.chunking import contiguous_spans
from server.audio.vad import SpeechDetector
from server.protocol.realtime import (
    CancelResponse,
    ClientEvent,
    CreateItem,
    CreateResponse,
    DeleteItem,
    MessageItem,
    event,
    new_id,
)
from server.protocol.realtime import Session as SessionConfig
from server.serving.generation import Endpoint
from server.serving.realtime.audio_decoder import AudioDecoder, InvalidAudio, decode_base64
from server.serving.realtime.items import Item
from server.serving.realtime.outbox import EventSink
from server.serving.realtime.refusals import ClientError
from server.serving.realtime.responder import Responder

logger = logging.getLogger(__name__)


class VoiceChat:
    def __init__(self, emit: EventSink, detector: SpeechDetector, chat: Endpoint, session_id: str) -> None:
        self.emit = emit
        self.detector = detector
        self.items: list[Item] = []
        self.responder = Responder(emit, session_id, self.items, chat)

    async def cancel_all(self) -> None:
        await self.responder.cancel("client_cancelled")

    async def handle(self, client_event: ClientEvent, config: SessionConfig) -> None:
        match client_event:
            case CreateItem():
                await self._create(client_event.item, client_event.previous_item_id, config.audio.input.format.type)
            case DeleteItem():
                self._delete(client_event.item_id)
            case CreateResponse():
                self.responder.start(client_event.response, config)
            case CancelResponse():
                if not await self.responder.cancel("client_cancelled", client_event.response_id):
                    raise ClientError("there is no response in progress to cancel", "response_cancel_not_active")

    def speech_started(self, config: SessionConfig) -> None:
        vad = config.audio.input.turn_detection
        if vad is not None and vad.interrupt_response:
            self.responder.interrupt("turn_detected")

    def add_user_audio(self, item_id: str, previous: str | None, samples: np.ndarray, by_vad: bool,
                       config: SessionConfig) -> None:
        """A committed turn (the session sent committed and item.added); it is done now unless a transcript comes."""
        item = Item(item_id, "user", clips=[samples[s.start : s.end] for s in contiguous_spans(samples, self.detector)])
        self.items.append(item)
        if config.audio.input.transcription is None:
            self.emit(event("conversation.item.done", previous_item_id=previous, item=item.wire()))
        vad = config.audio.input.turn_detection
        if by_vad and vad is not None and vad.create_response:
            self.responder.start(None, config)

    def transcribed(self, item_id: str, transcript: str) -> None:
        for item in self.items:
            if item.id == item_id:
                item.text = transcript

    async def _create(self, message: MessageItem, previous_item_id: str | None, audio_format: str) -> None:
        item = Item(message.id or new_id("item"), message.role)
        if any(existing.id == item.id for existing in self.items):
            raise ClientError(f"an item with id {item.id!r} already exists", "item_already_exists", "item.id")
        for part in message.content:
            if part.type == "input_audio":
                if message.role != "user":
                    raise ClientError("audio is accepted in user items only", "invalid_value", "item.content")
                item.clips += await self._clips(part.audio or "", audio_format)
            else:
                item.text += part.text or ""
        index = len(self.items)
        if previous_item_id is not None:
            found = [i for i, existing in enumerate(self.items) if existing.id == previous_item_id]
            if not found:
                raise ClientError(f"no item with id {previous_item_id!r}", "item_not_found", "previous_item_id")
            index = found[0] + 1
        previous = self.items[index - 1].id if index else None
        self.items.insert(index, item)
        self.emit(event("conversation.item.added", previous_item_id=previous, item=item.wire()))
        self.emit(event("conversation.item.done", previous_item_id=previous, item=item.wire()))

    async def _clips(self, audio: str, audio_format: str) -> list[np.ndarray]:
        decoder = AudioDecoder(audio_format)
        try:
            data = decode_base64(audio)
        except InvalidAudio as exc:
            raise ClientError(f"item.content: {exc}", "invalid_value", "item.content") from exc
        samples = np.concatenate([decoder.push(data), decoder.flush()])
        if not samples.size:
            raise ClientError("item.content: the input_audio part holds no audio", "invalid_value", "item.content")
        spans = await asyncio.to_thread(contiguous_spans, samples, self.detector)
        return [samples[s.start : s.end] for s in spans]

    def _delete(self, item_id: str) -> None:
        found = [item for item in self.items if item.id == item_id]
        if not found:
            raise ClientError(f"no item with id {item_id!r}", "item_not_found", "item_id")
        self.items.remove(found[0])
        self.emit(event("conversation.item.deleted", item_id=item_id))

