"""What /openapi.json says each route answers: its success in every media type it has, and the error statuses of
ERRORS, each in OpenAI's error envelope.

ERRORS is the one list of which route answers which error status; change it with the route. tests/protocol/
test_fuzz.py runs schemathesis against a real server with every check, so a status a route gives and its line here
lacks fails there, and tests/api/test_openapi.py fails on a line without a route. A route takes its line with
`responses=answers("METHOD /path")`; `install_openapi` adds what FastAPI cannot say itself.
"""

import functools
import operator
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from server.protocol.audio import (
    DiarizedSegment,
    DiarizedTranscription,
    Transcription,
    TranscriptTextDelta,
    TranscriptTextDone,
    VerboseTranscription,
)
from server.protocol.chat import ChatCompletion, ChatCompletionChunk
from server.protocol.errors import ErrorResponse
from server.protocol.responses import InputItemList, Response, ResponseDeleted, ResponseStreamEvent

# the error statuses each operation answers, besides its success
_GENERATION = (400, 401, 404, 413, 500, 503, 504)  # the routes that run the model
_AUDIO = (400, 401, 413, 500, 503, 504)  # an unknown model is a 400 on the audio routes, as OpenAI answers it
_STORED = (401, 404, 503)  # a stored response: gone, someone else's, or its store is down
ERRORS: dict[str, tuple[int, ...]] = {
    "POST /v1/audio/transcriptions": _AUDIO,
    "POST /v1/audio/translations": _AUDIO,
    "POST /v1/chat/completions": _GENERATION,
    "POST /v1/responses": _GENERATION,
    "GET /v1/responses/{response_id}": _STORED,
    "DELETE /v1/responses/{response_id}": _STORED,
    "GET /v1/responses/{response_id}/input_items": (400, *_STORED),
    "GET /v1/models": (401,),
    "GET /v1/models/{model}": (401, 404),
    "GET /health": (),
    "GET /ready": (503,),
    "GET /metrics": (401,),
}

_MEANINGS = {
    400: "The request is invalid: a field (`error.param` names it), audio that cannot be decoded (code "
         "`invalid_audio`), a model this server does not serve on the audio routes (code `model_not_found`), or a "
         "limit such as the context length (code `context_length_exceeded`).",
    401: "No API key, or a wrong one (only on a server started with `--api-key`; `/metrics` only with "
         "`--metrics-require-key` as well).",
    404: "The model is not served here (code `model_not_found`), or the stored response does not exist or belongs "
         "to another key (code `response_not_found`).",
    413: "The body is larger than `--max-upload-mb` (uploads) or `--max-json-mb` (JSON), or fetched audio larger "
         "than its limit.",
    500: "The model failed on this request (code `engine_error`); the server goes on with the others.",
    503: "The queue is full (code `server_is_overloaded`, with `Retry-After`), the model is not ready or its engine "
         "has stopped, or the response store is unreachable.",
    504: "The request did not finish within `--request-timeout-s`.",
}
_HEADERS = {503: {"Retry-After": {"description": "Seconds to wait before trying again (a full queue).",
                                  "schema": {"type": "integer", "minimum": 1}}}}

REF = "#/components/schemas/{model}"

DESCRIPTION = """\
OpenAI's audio, chat completions and Responses APIs for Qwen2-Audio. Errors have OpenAI's envelope
(`{"error": {"message", "type", "param", "code"}}`); streams (`stream=true`) are server-sent events.

The Realtime API (`GET /v1/realtime`) is a WebSocket, which OpenAPI cannot describe: its client and server events
are OpenAI's Realtime API events, documented in the project's docs/realtime.md."""


def answers(operation: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI's `responses=` for `operation` ("METHOD /path"): its success from _SUCCESS (a route whose return type
    says it has none there), and its error statuses from ERRORS in OpenAI's envelope."""
    responses: dict[int | str, dict[str, Any]] = {}
    if operation in _SUCCESS:
        model, content = _SUCCESS[operation]
        responses[200] = {"content": {media: {"schema": schema} for media, schema in content.items()},
                          **({"model": model} if model is not None else {}),
                          **({"links": _LINKS[operation]} if operation in _LINKS else {})}
    for status in ERRORS[operation]:
        responses[status] = {"model": ErrorResponse, "description": _MEANINGS[status], **(
            {"headers": _HEADERS[status]} if status in _HEADERS else {})}
    return responses


def event_stream(*events: type[BaseModel], done: bool = False) -> dict[str, Any]:
    """The schema of one server-sent event of a stream (Open API 3.1 has none for a stream's items; this is the shape
    tools such as schemathesis read): `data` holds one of `events` as JSON, or an error in OpenAI's envelope after
    the headers went out; with `done`, the stream ends with `data: [DONE]`."""
    union = functools.reduce(operator.or_, [*events, ErrorResponse])
    schema = TypeAdapter(union).json_schema(ref_template=REF, mode="serialization")
    payload = {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}
    return {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"}, "data": {"anyOf": [payload, {"const": "[DONE]"}]} if done else payload}}


_TEXT = {"type": "string"}
_SUBTITLES = {"text/plain": _TEXT, "text/vtt": _TEXT}  # the formats' media types: formats.TRANSCRIPTION_MEDIA_TYPES
_TRANSLATED = (Transcription | VerboseTranscription, {
    **_SUBTITLES, "text/event-stream": event_stream(TranscriptTextDelta, TranscriptTextDone, done=True)})
_TRANSCRIBED = (Transcription | VerboseTranscription | DiarizedTranscription, {  # diarized_json: transcriptions only
    **_SUBTITLES, "text/event-stream": event_stream(TranscriptTextDelta, DiarizedSegment, TranscriptTextDone, done=True)})
# what each operation answers with 200 that its route's return type does not say: a JSON model (or None) and the
# schemas of its other media types
_SUCCESS: dict[str, tuple[Any, dict[str, dict[str, Any]]]] = {
    "POST /v1/audio/transcriptions": _TRANSCRIBED,
    "POST /v1/audio/translations": _TRANSLATED,
    "POST /v1/chat/completions": (ChatCompletion, {"text/event-stream": event_stream(ChatCompletionChunk, done=True)}),
    "POST /v1/responses": (Response, {"text/event-stream": event_stream(ResponseStreamEvent)}),
    "GET /v1/responses/{response_id}": (Response, {}),
    "DELETE /v1/responses/{response_id}": (ResponseDeleted, {}),
    "GET /v1/responses/{response_id}/input_items": (InputItemList, {}),
    "GET /metrics": (None, {"text/plain": _TEXT}),  # Prometheus' text format
}
_STORED = {"response_id": "$response.body#/id"}  # a response made with store=true (the default)
_LINKS = {"POST /v1/responses": {
    "retrieve": {"operationId": "retrieve_response", "parameters": _STORED},
    "input_items": {"operationId": "response_input_items", "parameters": _STORED},
    "delete": {"operationId": "delete_response", "parameters": _STORED},
}}


def upload_form(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads `model`'s fields from a multipart form beside a `file` part. A form
    field is sent or left out, never null, so null leaves each field's schema."""
    schema = model.model_json_schema(ref_template=REF)
    fields = {name: _not_null(field) for name, field in schema["properties"].items()}
    form = {"type": "object", "required": ["file", *schema.get("required", [])], "$defs": schema.get("$defs", {}),
            "properties": {"file": {"type": "string", "format": "binary", "description": "The audio."}, **fields}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


def install_openapi(app: FastAPI) -> None:
    """The app's document as FastAPI builds it, less what FastAPI adds that this server never answers (its 422:
    every invalid request is a 400 in OpenAI's envelope), with the models the schemas above carry in `$defs`
    moved to the components they refer to, and integer bounds as integers (FastAPI's models hold them as floats,
    which tools then compare as floats: seed's 2**64 let 2**64 + 382 pass). FastAPI's way: app.openapi replaced."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for operation in _operations(document):
                operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            _hoist_defs(document["paths"], schemas)
            _whole_bounds(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi


def _not_null(field: dict[str, Any]) -> dict[str, Any]:
    field = {key: value for key, value in field.items() if not (key == "default" and value is None)}
    options = [option for option in field.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        return {**field, **options[0]}
    return {**field, "anyOf": options} if options else field


def _operations(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for path in document["paths"].values():
        yield from path.values()


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Move every `$defs` in `node` into `schemas` (the components its `$ref`s name); a name defined twice must be
    the same schema."""
    if isinstance(node, dict):
        for name, schema in node.pop("$defs", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two schemas named {name!r} in the OpenAPI document")
        for value in node.values():
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _whole_bounds(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.update({key: int(node[key]) for key in _BOUNDS if isinstance(node.get(key), float)})
        for value in node.values():
            _whole_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _whole_bounds(value)
