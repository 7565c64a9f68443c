"""The Redis store stopped mid-run and started again: while it is down, what needs it answers 503 saying so (the
SDK's InternalServerError) and everything else goes on; /ready says what is wrong; once Redis is back the server uses
it again by itself, and the conversation stored before the outage goes on."""

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from server.app import create_app
from server.config import Settings
from server.runner.loader import LoadConfig, load_model
from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.redis_server import RedisServer, requires_redis
from tests.support.waiting import eventually

pytestmark = requires_redis


@pytest.fixture
async def served(tmp_path, tiny_model_dir):
    redis = RedisServer(tmp_path).start()
    app = create_app(Settings(model=tiny_model_dir, served_model_name=MODEL, response_store=redis.url),
                     load_model(LoadConfig(tiny_model_dir)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as http:
            yield redis, http, AsyncOpenAI(base_url="http://test/v1", api_key="-", http_client=http, max_retries=0)
    redis.stop()


async def test_an_outage_is_503_for_what_needs_the_store_and_nothing_else(served):
    redis, http, sdk = served
    first = await sdk.responses.create(model=MODEL, input="Remember this.", max_output_tokens=2)
    assert (await http.get("/ready")).json() == {"status": "ready"}

    redis.stop()
    needs_store = [
        lambda: sdk.responses.create(model=MODEL, input="hi", max_output_tokens=2),  # store=true by default
        lambda: sdk.responses.create(model=MODEL, input="and?", previous_response_id=first.id, store=False),
        lambda: sdk.responses.retrieve(first.id),
        lambda: sdk.responses.input_items.list(first.id),
        lambda: sdk.responses.delete(first.id),
    ]
    for call in needs_store:
        with pytest.raises(openai.InternalServerError) as caught:
            await call()
        error = caught.value.body
        assert caught.value.status_code == 503 and error["code"] == "response_store_unavailable"
        assert "response store (Redis) is unavailable" in error["message"] and "store=false go on" in error["message"]
        assert "127.0.0.1" not in error["message"]  # no address of the server's network in an answer
    stateless = await sdk.responses.create(model=MODEL, input="hi", max_output_tokens=2, store=False)
    chat = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    transcript = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1.0)))
    assert stateless.status and chat.choices and isinstance(transcript.text, str)
    ready = await http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert "response store (Redis) is unavailable" in ready.json()["response_store"]

    redis.start()  # same port, same data folder
    assert await eventually(lambda: _ready(http), timeout=30)
    fetched = await sdk.responses.retrieve(first.id)  # written before the outage, kept by Redis
    follow = await sdk.responses.create(model=MODEL, input="and?", previous_response_id=first.id, max_output_tokens=2)
    assert fetched.id == first.id and follow.usage.input_tokens > first.usage.input_tokens


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/ready")).json() == {"status": "ready"}
