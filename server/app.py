"""create_app(settings): the FastAPI app, whose lifespan owns the model runner and the engine."""

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import APIError, error_body, install_error_handlers
from server.api.routes import public, record_request, v1
from server.api.serving_chat import ChatServing
from server.api.serving_transcription import TranscriptionServing
from server.config import Settings
from server.engine.engine import Engine, EngineConfig
from server.engine.model_runner import ModelRunner, RunnerConfig
from server.metrics import Metrics

logger = logging.getLogger(__name__)

FULL_CLIP_TOKENS = 800  # a 30 s clip (750 audio tokens) with the chat template around it


def build_runner(settings: Settings) -> ModelRunner:
    """Load the model (a blocking call: seconds for the tiny model, minutes for the 7B)."""
    runner = ModelRunner(RunnerConfig(settings.model_path, settings.device, settings.dtype, settings.random_weights))
    runner.load()
    return runner


def create_app(settings: Settings, runner: ModelRunner | None = None) -> FastAPI:
    """The app; it loads the model at start-up unless a loaded `runner` is handed in."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = runner or await asyncio.to_thread(build_runner, settings)
        budget = loaded.kv_budget_tokens(settings.kv_cache_tokens, settings.max_batch_size)
        logger.info("KV-cache budget: %d tokens (%.2f GiB), room for %d concurrent 30 s clips", budget,
                    budget * loaded.kv_bytes_per_token / 2**30, budget // (FULL_CLIP_TOKENS + settings.default_max_tokens))
        config = EngineConfig(settings.max_batch_size, settings.batch_wait_ms / 1000, budget)
        engine = Engine(loaded, config, metrics)
        app.state.engine = engine
        await engine.start()
        app.state.chat = ChatServing(engine, settings.model_id, settings.default_max_tokens)
        app.state.transcription = TranscriptionServing(engine, settings.default_max_tokens)
        logger.info("serving %s as %r (aliases: %s)", settings.model_path, settings.model_id,
                    ", ".join(settings.model_alias) or "none")
        yield
        await engine.stop()

    app = FastAPI(title="Qwen2-Audio server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(public)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    return app


class BodyLimit:
    """413 for bodies over the limit: at once from Content-Length, or as soon as a chunked body passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(send, APIError(413, self._message(), code="payload_too_large"))
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, self._message(), code="payload_too_large")
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"the request body is larger than the server's limit of {self.max_bytes / 2**20:g} MiB"


class RequestMetrics:
    """Counts every response by endpoint and status and times it to its last byte (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = scope.get("route")
            record_request(self.metrics, getattr(route, "path", "unmatched"), status, started)


async def _send_error(send: Send, error: APIError) -> None:
    import json

    body = json.dumps(error_body(error.status, error.message, error.param, error.code)).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
