"""create_app(settings): the FastAPI app, whose lifespan owns the model runner and the engine."""

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.errors import install_error_handlers
from server.api.middleware import BodyLimit, RequestContext, RequestMetrics
from server.api.routes import public, v1
from server.api.serving_chat import ChatServing
from server.api.serving_transcription import TranscriptionServing
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine, EngineConfig
from server.engine.model_runner import ModelRunner, RunnerConfig
from server.metrics import Metrics
from server.playground import router as playground

logger = logging.getLogger(__name__)

FULL_CLIP_TOKENS = 800  # a 30 s clip (750 audio tokens) with the chat template around it


def build_runner(settings: Settings) -> ModelRunner:
    """Load the model (a blocking call: seconds for the tiny model, minutes for the 7B)."""
    runner = ModelRunner(RunnerConfig(settings.model_path, settings.device, settings.dtype, settings.random_weights))
    runner.load()
    return runner


def build_engine(settings: Settings, runner: ModelRunner, metrics: Metrics) -> Engine:
    budget = runner.kv_budget_tokens(settings.kv_cache_tokens, settings.max_batch_size)
    logger.info("KV-cache budget: %d tokens (%.2f GiB), room for %d concurrent 30 s clips", budget,
                budget * runner.kv_bytes_per_token / 2**30, budget // (FULL_CLIP_TOKENS + settings.default_max_tokens))
    config = EngineConfig(settings.max_batch_size, settings.batch_wait_ms / 1000, budget, settings.max_queue)
    return Engine(runner, config, metrics)


def create_app(settings: Settings, runner: ModelRunner | None = None) -> FastAPI:
    """The app; it loads the model at start-up unless a loaded `runner` is handed in."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = runner or await asyncio.to_thread(build_runner, settings)
        engine = build_engine(settings, loaded, metrics)
        app.state.engine = engine
        await engine.start()
        detector = SpeechDetector()
        app.state.chat = ChatServing(engine, settings, detector)
        app.state.transcription = TranscriptionServing(engine, settings, detector)
        logger.info("serving %s as %r (aliases: %s)", settings.model_path, settings.model_id,
                    ", ".join(settings.model_alias) or "none")
        if settings.playground:
            logger.info("playground page: http://%s:%d/ (--no-playground turns it off)", settings.host, settings.port)
        yield
        await engine.stop()

    app = FastAPI(title="Qwen2-Audio server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.api_keys = settings.api_keys()
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(public)
    if settings.playground:
        app.include_router(playground)
    if settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodyLimit, max_upload_bytes=int(settings.max_upload_mb * 2**20),
                       max_json_bytes=int(settings.max_json_mb * 2**20), upload_prefix="/v1/audio/")
    app.add_middleware(RequestContext)  # outermost: even a 413 carries the id
    return app
