"""Shared fixtures: one random-weight Qwen2-Audio of the real architecture, written by the project itself, and the app
on it, driven in-process by the real OpenAI SDK over httpx's ASGI transport (helpers: tests/support/)."""

import httpx
import pytest
import pytest_asyncio

from server.app import create_app
from server.config import Settings
from server.tiny_model import write_tiny_model
from tests.support.app import MODEL, sdk
from tests.support.redis_server import RedisServer, have_redis


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-audio"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


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
def client(http):
    return sdk(http)


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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server for the session, on a free port (tests that share it flush the database they use)."""
    if not have_redis():
        pytest.skip("redis-server is not installed (scripts/system-deps installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()
