"""The app in-process, driven by the real OpenAI SDK over httpx's ASGI transport: the served model's name, a fresh
app for a loaded model, and reading its /metrics. (The shared app on the tiny model is a fixture: tests/conftest.py.)"""

from contextlib import asynccontextmanager

import httpx

from server.app import create_app
from server.config import Settings

MODEL = "tiny"


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """One sample of the server's /metrics, summed over labels."""
    text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def sdk(http: httpx.AsyncClient):
    """The OpenAI SDK over `http` (openai imported here: tests/gpu loads this module on a GPU image without it)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=str(http.base_url).rstrip("/") + "/v1", api_key="-", http_client=http, max_retries=0)


@asynccontextmanager
async def sdk_for(model_dir: str, model, **settings):
    """A fresh app serving the loaded `model` (from `model_dir`), and the OpenAI SDK and httpx clients for it."""
    app = create_app(Settings(model=model_dir, served_model_name=MODEL, **settings), model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            yield sdk(http), http
