"""create_app(settings): the FastAPI app, whose lifespan owns the model runner and the engine."""

import asyncio
import logging
import time
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.errors import install_error_handlers
from server.api.middleware import BodyLimit, RequestContext, RequestMetrics
from server.api.routes import public, v1
from server.api.serving_chat import ChatServing
from server.api.serving_transcription import TRANSCRIBE_INSTRUCTION, TranscriptionServing
from server.audio.vad import SpeechDetector
from server.config import Settings
from server.engine.engine import Engine, EngineConfig
from server.engine.model_runner import ModelLoadError, ModelRunner, RunnerConfig
from server.metrics import Metrics
from server.playground import router as playground

logger = logging.getLogger(__name__)


def build_runner(settings: Settings) -> ModelRunner:
    """Load the model (a blocking call: seconds for the tiny model, minutes for the 7B); fails with a
    ModelLoadError when it cannot load or leaves no memory for the KV cache."""
    runner = ModelRunner(RunnerConfig(settings.model_path, settings.device, settings.dtype, settings.random_weights,
                                      settings.quantization, settings.quantization_backend))
    runner.load()
    kv_budget(settings, runner)
    return runner


def kv_budget(settings: Settings, runner: ModelRunner) -> int:
    budget = runner.kv_budget_tokens(settings.kv_cache_tokens, settings.max_batch_size, settings.memory_utilization)
    if budget == 0:
        raise ModelLoadError(
            f"no memory is left for the KV cache after {runner.weights_bytes / 2**30:.2f} GiB of weights within "
            f"--memory-utilization {settings.memory_utilization}: try --quantization int4, a higher "
            "--memory-utilization, or free the device"
        )
    return budget


def clip_tokens(settings: Settings, runner: ModelRunner) -> int:
    """KV tokens one 30 s transcription takes at most: its real prompt (750 audio tokens, the chat template and
    the instruction) plus --default-max-tokens."""
    content = [{"type": "audio"}, {"type": "text", "text": TRANSCRIBE_INSTRUCTION}]
    prompt = runner.prepare([{"role": "user", "content": content}], [np.zeros(30 * 16_000, np.float32)])
    return prompt.num_tokens + settings.default_max_tokens


def build_engine(settings: Settings, runner: ModelRunner, metrics: Metrics) -> Engine:
    budget, per_clip = kv_budget(settings, runner), clip_tokens(settings, runner)
    logger.info("memory: %.2f GiB of weights; KV-cache budget %d tokens (%.2f GiB), room for %d concurrent 30 s "
                "clips (%d tokens each: prompt + --default-max-tokens)", runner.weights_bytes / 2**30, budget,
                budget * runner.kv_bytes_per_token / 2**30, budget // per_clip, per_clip)
    if budget < per_clip:
        logger.warning("the KV-cache budget is below one 30 s clip at --default-max-tokens %d: longer requests get "
                       "a 400; try --quantization int4 or a lower --default-max-tokens", settings.default_max_tokens)
    metrics.weights_bytes.set(runner.weights_bytes)
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
