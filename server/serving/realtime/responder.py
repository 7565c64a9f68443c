"""The model's answers in a `realtime` session: response.create -> one chat completion over the conversation,
streamed as OpenAI's response events; at most one response at a time, cancelled by response.cancel or, with
`interrupt_response`, by the user starting to speak.

The responder reads the conversation's items and appends its answers to them; it sends events through the
session's sink and reaches the engine through chat's serving (its engine, model description and limits)."""

import asyncio
import logging
from typing import Literal

from server.engine.conversation import audio_part, message, text_part
from server.engine.request import EngineError, Prompt
from server.protocol.errors import APIError
from server.protocol.realtime import ResponseParams, event, new_id, response_usage
from server.protocol.realtime import Session as SessionConfig
from server.serving.generation import Completion, Endpoint, events, prepare, submit
from server.serving.realtime.items import Item
from server.serving.realtime.outbox import EventSink
from server.serving.realtime.refusals import ClientError
from server.serving.sampling import MIN_ANSWER_ROOM, answer_limit, realtime_answer_params

logger = logging.getLogger(__name__)
DROPPED_NOTE = "(Earlier turns of this conversation were left out to fit the model's context.)"


class Responder:
    def __init__(self, emit: EventSink, session_id: str, items: list[Item], chat: Endpoint) -> None:
        self.emit = emit
        self.session_id = session_id
        self.items = items  # the conversation's, in order: answers are appended to it
        self.chat = chat
        self.task: asyncio.Task | None = None
        self.response_id: str | None = None
        self.cancel_reasons: dict[str, str] = {}  # response id -> why it was cancelled

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, params: ResponseParams | None, session: SessionConfig) -> None:
        """A new response; one being cancelled (the user spoke again) ends first. The response's `instructions` and
        `max_output_tokens` win over the session's."""
        params = params or ResponseParams()
        if self.active and not self.task.cancelling():
            raise ClientError(f"the conversation already has an active response ({self.response_id}); cancel it "
                              "first (response.cancel)", "conversation_already_has_active_response")
        if "audio" in (params.output_modalities or []):
            raise ClientError("this server answers in text only (Qwen2-Audio does not speak): set output_modalities "
                              "to [\"text\"]", "unsupported_modality", "response.output_modalities")
        previous = self.task if self.active else None
        self.response_id = new_id("resp")
        instructions = params.instructions if params.instructions is not None else session.instructions
        limit = params.max_output_tokens or session.max_output_tokens
        self.task = asyncio.create_task(self._respond(self.response_id, params, (instructions, limit), previous))

    def interrupt(self, reason: str) -> bool:
        """Cancel the response in progress, without waiting for it to end."""
        if not self.active or self.task.cancelling():
            return False
        self.cancel_reasons[self.response_id] = reason
        self.task.cancel()
        return True

    async def cancel(self, reason: str, response_id: str | None = None) -> bool:
        if response_id is not None and response_id != self.response_id:
            return False
        task = self.task
        if not self.interrupt(reason):
            return False
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def _respond(self, response_id: str, params: ResponseParams, asked: tuple[str | None, int | Literal["inf"] | None],
                       previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        emit = self.emit
        answer = Item(new_id("item"), "assistant")
        in_conversation = params.conversation != "none"  # "none": an answer outside the conversation
        base = {"id": response_id, "object": "realtime.response",
                "conversation_id": self.session_id if in_conversation else None,
                "output_modalities": ["text"], "max_output_tokens": params.max_output_tokens or "inf"}
        emit(event("response.created", response={**base, "status": "in_progress", "output": []}))
        place = {"response_id": response_id, "item_id": answer.id, "output_index": 0, "content_index": 0}
        emit(event("response.output_item.added", response_id=response_id, output_index=0,
                   item=answer.wire("in_progress")))
        heard = list(self.items)
        previous = heard[-1].id if heard else None
        if in_conversation:
            self.items.append(answer)
            emit(event("conversation.item.added", previous_item_id=previous, item=answer.wire("in_progress")))
        emit(event("response.content_part.added", **place, part={"type": "text", "text": ""}))
        completion, prompt = Completion(), None
        status, details = "completed", None
        try:
            prompt, stream = await self._submit(*asked, heard)
            async for output in events(stream, self.chat.timeout_s):
                completion.add(output)
                if output.text:
                    emit(event("response.output_text.delta", **place, delta=output.text))
            if completion.finish_reason == "length":
                status, details = "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": self.cancel_reasons.pop(response_id,
                                                                                          "client_cancelled")}
        except Exception as exc:  # the engine's or the prompt's refusal, or a fault: the response fails, not the session
            if not isinstance(exc, APIError | EngineError):
                logger.exception("response %s failed", response_id)
            error = exc if isinstance(exc, APIError) else APIError(500, str(exc), code="engine_error")
            body = error.body()["error"]
            status, details = "failed", {"type": "failed", "error": {k: body[k] for k in ("type", "code", "message")}}
        answer.text = completion.text  # what was said before a cancel stays in the conversation too
        item = answer.wire("completed" if status == "completed" else "incomplete")
        emit(event("response.output_text.done", **place, text=answer.text))
        emit(event("response.content_part.done", **place, part={"type": "text", "text": answer.text}))
        emit(event("response.output_item.done", response_id=response_id, output_index=0, item=item))
        if in_conversation:
            emit(event("conversation.item.done", previous_item_id=previous, item=item))
        emit(event("response.done", response={**base, "status": status, "status_details": details,
                                              "output": [item], "usage": _usage(prompt, completion)}))

    async def _submit(self, instructions: str | None, limit: int | Literal["inf"] | None, items: list[Item]):
        """The answer's request in the engine: the conversation so far (`items`), as much of it as fits."""
        info, engine = self.chat.info, self.chat.engine
        budget = answer_limit(limit, self.chat.default_max_tokens)
        dropped = 0
        while True:
            conversation, clips = _chat(instructions, items[dropped:], dropped > 0)
            prompt = await prepare(engine, conversation, clips)
            if prompt.num_tokens + min(budget, MIN_ANSWER_ROOM) <= info.max_model_len or dropped >= len(items) - 1:
                break
            dropped += 1
        if dropped:
            logger.info("response: the %d oldest turns were left out to fit the context of %d tokens", dropped,
                        info.max_model_len)
        sampling = realtime_answer_params(limit, prompt, info, self.chat.default_max_tokens)
        stream = submit(engine, self.chat.metrics, prompt, sampling)
        return prompt, stream


def _chat(instructions: str | None, items: list, dropped: bool) -> tuple[list[dict], list]:
    """The conversation as the chat template takes it, and its clips in order."""
    conversation, clips = [], []
    system = " ".join(t for t in (instructions, DROPPED_NOTE if dropped else None) if t)
    if system:
        conversation.append(message("system", system))
    for item in items:
        if item.clips:
            conversation.append(message("user", [audio_part() for _ in item.clips]))
            clips += item.clips
        elif item.text:
            conversation.append(message(item.role, [text_part(item.text)] if item.role == "user" else item.text))
    return conversation, clips



def _usage(prompt: Prompt | None, completion: Completion) -> dict:
    return response_usage(prompt.num_tokens if prompt else 0, prompt.audio_tokens if prompt else 0,
                          len(completion.token_ids))
