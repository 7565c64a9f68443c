"""create_app(settings): the FastAPI app. Its lifespan loads the model (unless one is handed in), starts the engine,
and builds the serving objects the routes call."""

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.error_handlers import install_error_handlers
from server.api.middleware import BodyLimit, RequestContext, RequestMetrics
from server.api.openapi import DESCRIPTION, install_openapi
from server.api.routes import public, v1
from server.api.websocket import router as realtime
from server.audio.diarization import DiarizationOptions, Diarizer, SpeakerEncoder
from server.audio.vad import SpeechDetector
from server.config import STEP_SETTINGS_DIR, Settings
from server.engine.engine import Engine, EngineConfig
from server.engine.interface import LoadedModel, ModelInfo
from server.metrics import Metrics
from server.playground import router as playground
from server.runner.loader import LoadConfig, load_model
from server.serving.chat import ChatServing
from server.serving.diarized import DiarizedServing
from server.serving.realtime import realtime_serving
from server.serving.response_store import StoreBounds, open_store
from server.serving.responses import ResponsesServing
from server.serving.transcription import TranscriptionServing
from server.tiny_model import ensure_random_model

logger = logging.getLogger(__name__)


def load(settings: Settings) -> LoadedModel:
    """The model the settings ask for (blocking). `--random-weights` writes its model folder first, once; a model
    that cannot load, or leaves no memory for the KV cache, raises ModelLoadError."""
    if settings.random_weights:
        ensure_random_model(settings.model_path)
    return load_model(LoadConfig(
        settings.model_path, device=settings.device, dtype=settings.dtype, quantization=settings.quantization,
        quantization_backend=settings.quantization_backend, quantize_audio_encoder=settings.quantize_audio_encoder,
        prompt_format=settings.prompt_format, kv_cache_tokens=settings.kv_cache_tokens,
        max_batch_size=settings.max_batch_size, memory_utilization=settings.memory_utilization,
        enforce_eager=settings.enforce_eager, cpu_threads=settings.cpu_threads, step_settings_dir=STEP_SETTINGS_DIR,
    ))


def create_app(settings: Settings, model: LoadedModel | None = None) -> FastAPI:
    """The app; it loads the model at start-up unless a loaded `model` is handed in."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = model or await asyncio.to_thread(load, settings)
        engine = Engine(loaded, EngineConfig(settings.max_batch_size, settings.batch_wait_ms / 1000,
                                             settings.max_queue), metrics)
        await engine.start()
        detector = SpeechDetector()
        app.state.engine, app.state.info = engine, engine.info
        app.state.chat = ChatServing(engine, engine.info, metrics, settings, detector)
        app.state.transcription = TranscriptionServing(engine, engine.info, metrics, settings, detector)
        diarizer = Diarizer(detector, SpeakerEncoder(), DiarizationOptions())
        app.state.diarized = DiarizedServing(app.state.transcription, diarizer, settings.diarization_workers)
        store = open_store(settings.response_store, StoreBounds(
            settings.responses_store_entries, int(settings.responses_store_mb * 2**20), settings.responses_store_ttl_s))
        app.state.responses = ResponsesServing(app.state.chat, store)
        app.state.realtime = realtime_serving(app.state.transcription, app.state.chat, detector, metrics, settings)
        _log_capacity(settings, engine.info, await app.state.transcription.tokens_per_clip())
        logger.info("serving %s as %r (aliases: %s)", settings.model_path, settings.model_id,
                    ", ".join(settings.model_alias) or "none")
        if settings.playground:
            logger.info("playground page: http://%s:%d/ (--no-playground turns it off)", settings.host, settings.port)
        if problem := await store.problem():  # not fatal: stateless requests go on, the store may come back
            logger.warning("%s; /ready says so until it answers", problem)
        yield
        app.state.diarized.close()
        await engine.stop()
        await store.close()

    app = FastAPI(title="Qwen2-Audio server", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name)  # operationIds: the routes' function names
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_keys = settings.api_keys()
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(public)
    app.include_router(realtime)
    if settings.playground:
        app.include_router(playground)
    install_openapi(app)
    if settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodyLimit, max_upload_bytes=int(settings.max_upload_mb * 2**20),
                       max_json_bytes=int(settings.max_json_mb * 2**20), upload_prefix="/v1/audio/")
    app.add_middleware(RequestContext)  # outermost: even a 413 carries the id
    return app


def _log_capacity(settings: Settings, info: ModelInfo, per_clip: int) -> None:
    budget = info.kv_budget_tokens
    logger.info("memory: %.2f GiB of weights; KV-cache budget %d tokens (%.2f GiB), room for %d concurrent 30 s "
                "clips (%d tokens each: prompt + --default-max-tokens)", info.weights_bytes / 2**30, budget,
                budget * info.kv_bytes_per_token / 2**30, budget // per_clip, per_clip)
    if budget < per_clip:
        logger.warning("the KV-cache budget is below one 30 s clip at --default-max-tokens %d: longer requests get "
                       "a 400; try --quantization int4 or a lower --default-max-tokens", settings.default_max_tokens)
