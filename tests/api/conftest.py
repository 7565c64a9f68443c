"""The app on the tiny model, driven in-process by the real OpenAI SDK over httpx's ASGI transport."""

from contextlib import asynccontextmanager

import httpx
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from server.app import create_app
from server.config import Settings

MODEL = "tiny"


@pytest.fixture(scope="session")
def settings(tiny_model_dir) -> Settings:
    return Settings(model=tiny_model_dir, served_model_name=MODEL, max_batch_size=8, batch_wait_ms=20, max_upload_mb=8, max_json_mb=8,
                    max_audio_seconds=600)


@pytest_asyncio.fixture(scope="session")
async def app(settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="session")
async def http(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def client(http) -> AsyncOpenAI:
    return AsyncOpenAI(base_url="http://test/v1", api_key="not-needed", http_client=http, max_retries=0)


@pytest.fixture(scope="session")
def reference(tiny_model_dir):
    """Plain transformers, no server: `model.generate` on one request alone, greedy, float32."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    def generate(conversation: list[dict], clips: list, max_new_tokens: int, **options) -> tuple[str, int]:
        text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, audio=clips or None, sampling_rate=16_000, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, **options)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        return processor.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False), len(new)

    return generate


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """One sample of the server's /metrics, summed over labels."""
    text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


@asynccontextmanager
async def sdk_for(model_dir: str, model, **settings):
    """A fresh app serving the loaded `model` (from `model_dir`), and the OpenAI SDK and httpx clients for it."""
    app = create_app(Settings(model=model_dir, served_model_name=MODEL, **settings), model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            yield AsyncOpenAI(base_url="http://test/v1", api_key="-", http_client=http, max_retries=0), http
