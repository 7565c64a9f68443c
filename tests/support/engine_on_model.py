"""The engine on a loaded model, for the tests that run it so: an engine with a given budget and config, a prompt of a
tone of given length (or text alone), and a request run to its end."""

import dataclasses

from server.engine.conversation import audio_question, message
from server.engine.engine import Engine, EngineConfig
from server.engine.interface import LoadedModel
from server.metrics import Metrics
from tests.support.audio_samples import tone


async def make_engine(model: LoadedModel, kv_budget_tokens: int | None = None, **config) -> Engine:
    if kv_budget_tokens is not None:
        model = dataclasses.replace(model, info=dataclasses.replace(model.info, kv_budget_tokens=kv_budget_tokens))
    engine = Engine(model, EngineConfig(**{"max_batch_size": 8, "batch_wait_s": 0.0, **config}), Metrics())
    await engine.start()
    return engine


async def prompt(engine: Engine, seconds: float | None, text: str = "What is it?"):
    if seconds is None:
        return await engine.prepare([message("user", text)], [])
    return await engine.prepare(audio_question(text), [tone(seconds, seed=int(seconds * 10))[0]])


async def run_to_end(stream) -> tuple[list[int], str]:
    tokens, text = [], ""
    async for event in stream:
        tokens += event.token_ids
        text += event.text
    return tokens, text
