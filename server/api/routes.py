"""HTTP routes, kept thin: parse, call the serving layer, map the result to a response."""

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from server.api.error_handlers import ClientDisconnected
from server.api.openapi import answers, upload_form
from server.protocol.audio import TranscriptionRequest
from server.protocol.chat import ChatCompletionRequest
from server.protocol.errors import APIError, bad_request, error_body
from server.protocol.models import ModelCard, ModelList
from server.protocol.responses import ResponsesRequest
from server.protocol.validation import describe_validation_error
from server.serving.formats import Answer, EventStream
from server.serving.prompts import Task
from server.serving.response_store import EVERYONE, Owner

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKeyAuth", description="One of the server's `--api-key` values (when it has any).")


def verify_api_key(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Owner:
    """The caller, once its key is checked: a digest of the key, what its stored responses belong to."""
    keys = request.app.state.api_keys
    if not keys:
        return EVERYONE
    given = (credentials.credentials if credentials else "").encode()
    # compare_digest against every key: the time taken does not tell how much of a guess was right
    if not any([hmac.compare_digest(given, key.encode()) for key in keys]):
        raise APIError(401, "invalid or missing API key: send Authorization: Bearer <key>", code="invalid_api_key")
    return Owner(hashlib.sha256(given).hexdigest())


Caller = Annotated[Owner, Depends(verify_api_key)]  # FastAPI runs it once a request, for the router and the route


def check_model(request: Request, model: str, status: int = 404) -> None:
    """An id the server does not serve: 404, or 400 on the audio routes, as OpenAI answers each (docs/api.md)."""
    if model not in request.app.state.settings.accepted_model_ids:
        raise APIError(status, f"the model {model!r} does not exist; GET /v1/models lists what this server serves",
                       param="model", code="model_not_found")


LIST_FIELDS = ("timestamp_granularities", "include", "keywords", "languages", "known_speaker_names",
               "known_speaker_references")
# a form field other than the file may be this large: known_speaker_references[] are data URLs of up to 10 s of
# audio in any format (a 96 kHz stereo float WAV is 10 MiB as base64); the parser holds fields in memory
MAX_FIELD_BYTES = 16 * 2**20


async def transcription_form(request: Request) -> tuple[TranscriptionRequest, BinaryIO]:
    """The multipart form as the OpenAI SDK sends it (`timestamp_granularities[]`, `stream=true`, ...)."""
    form = await request.form(max_part_size=MAX_FIELD_BYTES)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_request("file: an audio file part is required", param="file")
    fields: dict = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            name = key.removesuffix("[]")
            if name in LIST_FIELDS:
                fields.setdefault(name, []).append(value)
            elif name.startswith("chunking_strategy["):  # the SDK's spelling of an object: its fields' JSON
                fields.setdefault("chunking_strategy", {})[name[len("chunking_strategy["):-1]] = _json_or_text(value)
            elif name == "chunking_strategy" and value.startswith("{"):  # OpenAPI's: the object as JSON
                fields[name] = _json_or_text(value)
            else:
                fields[name] = value
    try:
        parsed = TranscriptionRequest.model_validate(fields)
    except ValidationError as exc:
        message, param = describe_validation_error(exc.errors())
        raise bad_request(message, param=param) from exc
    check_model(request, parsed.model, status=400)
    return parsed, upload.file  # spooled to disk past 1 MiB by the form parser; decoded as it is read


def _json_or_text(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return value  # pydantic says what is wrong with it


TranscriptionForm = Annotated[tuple[TranscriptionRequest, BinaryIO], Depends(transcription_form)]
_FORM_DOC = upload_form(TranscriptionRequest)

v1 = APIRouter(prefix="/v1", dependencies=[Depends(verify_api_key)])
public = APIRouter()


@v1.post("/audio/transcriptions", openapi_extra=_FORM_DOC, responses=answers("POST /v1/audio/transcriptions"))
async def transcriptions(request: Request, form: TranscriptionForm) -> Response:
    return await _transcribe(request, form, "transcribe")


@v1.post("/audio/translations", openapi_extra=_FORM_DOC, responses=answers("POST /v1/audio/translations"))
async def translations(request: Request, form: TranscriptionForm) -> Response:
    return await _transcribe(request, form, "translate")


async def _transcribe(request: Request, form: tuple[TranscriptionRequest, BinaryIO], task: Task) -> Response:
    parsed, audio = form
    state = request.app.state
    serving = state.diarized if parsed.response_format == "diarized_json" else state.transcription
    return respond(await until_disconnected(request, serving.create(parsed, audio, task)))


@v1.post("/chat/completions", responses=answers("POST /v1/chat/completions"))
async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
    check_model(request, body.model)
    return respond(await until_disconnected(request, request.app.state.chat.create(body)))


def respond(result: Answer | EventStream) -> Response:
    if isinstance(result, EventStream):
        return StreamingResponse(result.events, media_type=result.media_type)
    if isinstance(result.body, dict):
        return JSONResponse(result.body, media_type=result.media_type)
    return Response(result.body, media_type=result.media_type)


@v1.get("/models", responses=answers("GET /v1/models"))
async def models(request: Request) -> ModelList:
    state = request.app.state
    card = dict(created=state.started, owned_by="random-weights" if state.info.random_weights else "qwen",
                root=state.settings.model_root, random_weights=state.info.random_weights)
    ids = [state.settings.model_id, *[a for a in state.settings.model_alias if a != state.settings.model_id]]
    return ModelList(data=[ModelCard(id=model_id, **card) for model_id in ids])


@v1.get("/models/{model:path}", responses=answers("GET /v1/models/{model}"))
async def model_card(request: Request, model: str) -> ModelCard:
    check_model(request, model)
    cards = (await models(request)).data
    return next((card for card in cards if card.id == model), cards[0].model_copy(update={"id": model}))


@v1.post("/responses", responses=answers("POST /v1/responses"))
async def responses(request: Request, body: ResponsesRequest, caller: Caller) -> Response:
    check_model(request, body.model)
    return respond(await until_disconnected(request, request.app.state.responses.create(body, caller)))


@v1.get("/responses/{response_id}", responses=answers("GET /v1/responses/{response_id}"))
async def retrieve_response(request: Request, response_id: str, caller: Caller) -> JSONResponse:
    return JSONResponse(await request.app.state.responses.retrieve(response_id, caller))


@v1.delete("/responses/{response_id}", responses=answers("DELETE /v1/responses/{response_id}"))
async def delete_response(request: Request, response_id: str, caller: Caller) -> JSONResponse:
    return JSONResponse(await request.app.state.responses.delete(response_id, caller))


@v1.get("/responses/{response_id}/input_items", responses=answers("GET /v1/responses/{response_id}/input_items"))
async def response_input_items(request: Request, response_id: str, caller: Caller,
                               limit: Annotated[int, Query(ge=1, le=100)] = 20,
                               order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
                               after: str | None = None) -> JSONResponse:
    return JSONResponse(await request.app.state.responses.input_items(response_id, caller, limit, order, after))


@public.get("/health", responses=answers("GET /health"))
async def health() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@public.get("/ready", responses=answers("GET /ready"))
async def ready(request: Request) -> Response:
    """Readiness: the model is loaded, warmed up and its engine loop runs. A response store that is down is said
    here but leaves the replica ready: every replica shares it, and requests that do not need it go on."""
    if not request.app.state.engine.ready:
        return JSONResponse(error_body(503, "the model is not ready"), status_code=503)
    if problem := await request.app.state.responses.store.problem():
        return JSONResponse({"status": "degraded", "response_store": problem})
    return JSONResponse({"status": "ready"})


@public.get("/metrics", response_class=Response, responses=answers("GET /metrics"))
async def metrics(request: Request) -> Response:
    """Prometheus' text format."""
    if request.app.state.settings.metrics_require_key:
        verify_api_key(request, await bearer(request))
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def until_disconnected(request: Request, work: Awaitable):
    """Await `work`, cancelling it (and so its engine request) if the client disconnects first.

    Streams need no help (Starlette closes a stream whose client left); this covers answers sent whole.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    return task.result()


WATCH_AFTER_S = 1.0


async def _disconnect(request: Request) -> None:
    """Return once the client has gone. Only requests that run longer than WATCH_AFTER_S are watched.

    Listening makes uvicorn read ahead on the connection, and a next request read before this response
    completes leaves a stale keep-alive timer that later cuts that connection (uvicorn issue #824). So quick
    answers are never watched, and a watched connection is closed after its response (RequestContext).
    """
    await asyncio.sleep(WATCH_AFTER_S)
    request.state.close_connection = True
    while (await request.receive())["type"] != "http.disconnect":
        pass
