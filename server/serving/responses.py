"""POST /v1/responses and the stored responses: a Responses request runs as a chat completion (ChatServing.start),
and its answer is rendered as a response object or as the Responses API's stream of typed events."""

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import ValidationError

from server.engine.request import Prompt
from server.engine.sequence import RequestStream
from server.protocol.chat import ChatCompletionRequest
from server.protocol.errors import APIError, bad_request, service_unavailable
from server.protocol.responses import (
    IncompleteDetails,
    InputItemList,
    InputMessage,
    InputTokensDetails,
    Response,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponsesRequest,
    ResponseUsage,
    chat_message,
    new_id,
)
from server.protocol.validation import describe_validation_error
from server.request_context import request_id
from server.serving.chat import ChatServing
from server.serving.formats import Answer, EventStream
from server.serving.generation import Completion, collect, events
from server.serving.response_store import Owner, ResponseStore, StoredResponse, StoreUnavailable, encode

# chat's parameter names in errors raised on the shared path, as this API names them
_PARAMS = {"max_tokens": "max_output_tokens", "messages": "input", "response_format": "text.format"}


@dataclass(frozen=True)
class _Turn:
    """What keeping a response needs besides its answer: who asked, what, and the conversation so far."""

    owner: Owner
    request: ResponsesRequest
    conversation: list[dict]


class ResponsesServing:
    def __init__(self, chat: ChatServing, store: ResponseStore) -> None:
        self.chat = chat
        self.store = store

    async def create(self, request: ResponsesRequest, owner: Owner) -> Answer | EventStream:
        history = await self._history(owner, request.previous_response_id)
        if request.store and request.previous_response_id is None:
            await self._check_store()  # before generating: an answer that cannot be kept is refused up front
        chat_request = _to_chat(request, history)
        try:
            prompt, (stream,) = await self.chat.start(chat_request)
        except APIError as exc:
            _rename_param(exc, offset=len(chat_request.messages) - len(request.items))
            raise
        response = Response(
            model=self.chat.model_id, instructions=request.instructions, max_output_tokens=request.max_output_tokens,
            metadata=request.metadata or {}, previous_response_id=request.previous_response_id, store=request.store,
            temperature=request.temperature, top_p=request.top_p, user=request.user,
            text={"format": request.text.format.model_dump()},
        )
        turn = _Turn(owner, request, history + [chat_message(item, i) for i, item in enumerate(request.items)])
        if request.stream:
            return EventStream(self._events(response, prompt, stream, turn))
        completion = await collect(stream, self.chat.timeout_s)
        _fill(response, ResponseOutputMessage(), prompt, completion)
        await self._keep(response, completion, turn)
        return Answer(response.model_dump())

    async def retrieve(self, response_id: str, owner: Owner) -> dict:
        return (await self._stored(response_id, owner)).response

    async def delete(self, response_id: str, owner: Owner) -> dict:
        with _store_errors():
            if not await self.store.delete(owner, response_id):
                raise self._not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, response_id: str, owner: Owner, limit: int, order: str, after: str | None) -> dict:
        items = (await self._stored(response_id, owner)).input_items
        items = items if order == "asc" else items[::-1]
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise bad_request(f"after: {after!r} is not an input item of {response_id!r}", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return InputItemList(data=page, first_id=page[0]["id"] if page else None,
                             last_id=page[-1]["id"] if page else None, has_more=len(items) > limit).model_dump()

    async def _stored(self, response_id: str, owner: Owner) -> StoredResponse:
        with _store_errors():
            stored = await self.store.get(owner, response_id)
        if stored is None:
            raise self._not_found(response_id)
        return stored

    async def _history(self, owner: Owner, previous_response_id: str | None) -> list[dict]:
        """The conversation a previous response ended; another key's response is one that does not exist."""
        if previous_response_id is None:
            return []
        with _store_errors():
            stored = await self.store.get(owner, previous_response_id)
        if stored is None:  # OpenAI answers this one 400, not 404
            raise bad_request(f"previous_response_id: Previous response with id {previous_response_id!r} not found "
                              f"({self._gone_because()})", param="previous_response_id",
                              code="previous_response_not_found")
        return stored.history

    async def _check_store(self) -> None:
        if problem := await self.store.problem():
            raise _unavailable(problem)

    async def _keep(self, response: Response, completion: Completion, turn: _Turn) -> None:
        if not turn.request.store:
            return
        history = [*turn.conversation, {"role": "assistant", "content": completion.text}]
        items = [_input_item(item) for item in turn.request.items]
        with _store_errors():
            await self.store.put(turn.owner, response.id, encode(response.model_dump(), items, history))

    def _not_found(self, response_id: str) -> APIError:
        return APIError(404, f"Response with id {response_id!r} not found ({self._gone_because()})",
                        param="response_id", code="response_not_found")

    def _gone_because(self) -> str:
        """Why a response may not be found: the same words whether it never existed or belongs to another key."""
        elsewhere = "" if self.store.shared else ", or another server replica holds it"
        return f"it was made with store=false or with another API key, was deleted or has expired{elsewhere}"

    async def _events(self, response: Response, prompt: Prompt, stream: RequestStream,
                      turn: _Turn) -> AsyncIterator[str]:
        sequence = iter(range(1 << 62))

        def event(kind: str, **fields) -> str:
            payload = {"type": kind, "sequence_number": next(sequence), **fields}
            return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

        message = ResponseOutputMessage()
        where = {"item_id": message.id, "output_index": 0, "content_index": 0}
        yield event("response.created", response=response.model_dump())
        yield event("response.in_progress", response=response.model_dump())
        yield event("response.output_item.added", output_index=0, item=message.model_dump())
        yield event("response.content_part.added", **where, part=ResponseOutputText(text="").model_dump())
        completion = Completion()
        try:
            async for output in events(stream, self.chat.timeout_s):
                completion.add(output)
                if output.text:
                    yield event("response.output_text.delta", **where, delta=output.text, logprobs=[])
            _fill(response, message, prompt, completion)
            await self._keep(response, completion, turn)
        except Exception as exc:  # headers are sent: the error travels as an event
            if isinstance(exc, APIError):
                yield event("error", code=exc.code, message=exc.message, param=exc.param)
            else:
                yield event("error", code="server_error", message=f"{exc} (request id {request_id.get()})", param=None)
            return
        part = message.content[0].model_dump()
        yield event("response.output_text.done", **where, text=completion.text, logprobs=[])
        yield event("response.content_part.done", **where, part=part)
        yield event("response.output_item.done", output_index=0, item=message.model_dump())
        done = "response.incomplete" if response.status == "incomplete" else "response.completed"
        yield event(done, response=response.model_dump())


def _fill(response: Response, message: ResponseOutputMessage, prompt: Prompt, completion: Completion) -> None:
    """The answer, its status and its usage, into the response."""
    incomplete = completion.finish_reason == "length"
    message.status = "incomplete" if incomplete else "completed"
    message.content = [ResponseOutputText(text=completion.text)]
    response.output = [message]
    response.status = message.status
    response.incomplete_details = IncompleteDetails(reason="max_output_tokens") if incomplete else None
    output_tokens = len(completion.token_ids)
    response.usage = ResponseUsage(
        input_tokens=prompt.num_tokens, output_tokens=output_tokens, total_tokens=prompt.num_tokens + output_tokens,
        input_tokens_details=InputTokensDetails(audio_tokens=prompt.audio_tokens),
    )


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except StoreUnavailable as exc:
        raise _unavailable(str(exc)) from exc


def _unavailable(problem: str) -> APIError:
    return service_unavailable(f"{problem}. Stored responses (store=true, previous_response_id, GET and DELETE "
                               "/v1/responses/{id}) work again once it is back; requests with store=false go on",
                               code="response_store_unavailable")


def _to_chat(request: ResponsesRequest, history: list[dict]) -> ChatCompletionRequest:
    """The chat request for `request`; what chat refuses is said in this API's names."""
    try:
        return request.to_chat(history)
    except ValidationError as exc:
        error = bad_request(*describe_validation_error(exc.errors()))
        _rename_param(error, offset=len(history) + bool(request.instructions))
        raise error from exc
    except ValueError as exc:  # an input part this API has and chat has not (chat_part)
        raise bad_request(str(exc), param=str(exc).split(":", 1)[0]) from exc


def _rename_param(exc: APIError, offset: int) -> None:
    """Chat's name for the parameter an error is about -> this API's: messages[k] is input[k - offset],
    max_tokens is max_output_tokens, response_format (and its json_schema) is text.format."""
    old = exc.param or ""
    if match := re.match(r"messages\[(\d+)\]", old):
        new = f"input[{int(match.group(1)) - offset}]" + old[match.end():]
    elif match := re.match(r"(response_format(\.json_schema)?|max_tokens|messages)(?=$|\.)", old):
        new = _PARAMS[match.group(1).split(".")[0]] + old[match.end():]
    else:
        new = old
    exc.param = new or None
    exc.message = exc.message.replace(f"{old}: ", f"{new}: ", 1) if old else exc.message


def _input_item(item: InputMessage) -> dict:
    """An input message as GET .../input_items lists it: an id, and its content as a list of parts."""
    text_type = "output_text" if item.role == "assistant" else "input_text"
    content = [{"type": text_type, "text": item.content}] if isinstance(item.content, str) else [
        part.model_dump(exclude_none=True) for part in item.content]
    return {"id": item.id or new_id("msg"), "type": "message", "role": item.role, "status": "completed",
            "content": content}

