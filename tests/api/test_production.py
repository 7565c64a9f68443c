"""Production settings through the real client: keys, CORS, back-pressure, deadlines, remote audio, failures."""

import asyncio
import threading
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from server.app import create_app, load
from server.config import Settings
from server.engine.request import OutOfMemory
from tests.support.app import MODEL, metric
from tests.support.audio_samples import wav
from tests.support.faults import fails_once, replaced
from tests.support.waiting import eventually

CLIP = wav(1.0, seed=31)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load(Settings(model=tiny_model_dir))


@pytest.fixture(scope="module")
def audio_host():
    """A loopback web server with audio, a too-big file, and redirects inside and outside the allowed hosts."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            port = self.server.server_address[1]
            routes = {
                "/clip.wav": (200, CLIP, {}),
                "/big.wav": (200, b"\0" * (2**20), {}),
                "/redirect-in": (302, b"", {"Location": "/clip.wav"}),
                "/redirect-out": (302, b"", {"Location": f"http://localhost:{port}/clip.wav"}),
            }
            status, body, headers = routes.get(self.path, (404, b"", {}))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    (folder / "clip.wav").write_bytes(CLIP)
    keys = folder / "keys.txt"
    keys.write_text("# operators' keys\nkey-from-file\n")
    return Settings(
        model=tiny_model_dir, served_model_name=MODEL, api_key=["key-one"], api_key_file=keys,
        metrics_require_key=True, cors_origin=["http://ui.example"], max_queue=2, max_batch_size=1,
        request_timeout_s=3.0, allow_remote_audio_host=["127.0.0.1"], allow_local_audio_dir=folder,
        remote_audio_max_mb=0.5,
    )


@pytest_asyncio.fixture(scope="module")
async def app(settings, model):
    app = create_app(settings, model)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="module")
async def http(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60,
                                 headers={"Authorization": "Bearer key-one"}) as client:
        yield client


def sdk(http: httpx.AsyncClient, key: str = "key-from-file") -> AsyncOpenAI:
    return AsyncOpenAI(base_url="http://test/v1", api_key=key, http_client=http, max_retries=0)


def _chat_with(url: str) -> dict:
    return {"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": url}}, {"type": "text", "text": "?"}]}]}


async def test_keys_from_flag_and_file_and_none_else(http):
    assert (await sdk(http, "key-one").models.list()).data[0].id == MODEL
    assert (await sdk(http, "key-from-file").models.list()).data[0].id == MODEL
    with pytest.raises(openai.AuthenticationError):
        await sdk(http, "# operators' keys").models.list()
    anonymous = await http.get("/v1/models", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"


async def test_metrics_can_be_closed_health_stays_open(http):
    assert (await http.get("/metrics", headers={"Authorization": ""})).status_code == 401
    assert (await http.get("/metrics")).status_code == 200
    assert (await http.get("/health", headers={"Authorization": ""})).status_code == 200
    assert (await http.get("/ready", headers={"Authorization": ""})).status_code == 200


async def test_cors_only_for_the_configured_origin(http):
    headers = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    allowed = await http.options("/v1/chat/completions", headers=headers)
    assert allowed.headers.get("access-control-allow-origin") == "http://ui.example"
    other = await http.options("/v1/chat/completions", headers={**headers, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_request_ids_are_returned_and_honoured(http):
    mine = await http.get("/v1/models", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    fresh = await http.get("/v1/models")
    assert len(fresh.headers["x-request-id"]) == 32


async def test_remote_audio_only_from_allowed_hosts(http, audio_host):
    ok = await http.post("/v1/chat/completions", json=_chat_with(f"{audio_host}/clip.wav"))
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens_details"]["audio_tokens"] == 25
    assert (await http.post("/v1/chat/completions", json=_chat_with(f"{audio_host}/redirect-in"))).status_code == 200
    out = await http.post("/v1/chat/completions", json=_chat_with(f"{audio_host}/redirect-out"))
    assert out.status_code == 400 and "localhost" in out.json()["error"]["message"]
    big = await http.post("/v1/chat/completions", json=_chat_with(f"{audio_host}/big.wav"))
    assert big.status_code == 400 and big.json()["error"]["code"] == "audio_too_large"  # an input, not our body
    missing = await http.post("/v1/chat/completions", json=_chat_with(f"{audio_host}/nothing.wav"))
    assert missing.status_code == 400 and "404" in missing.json()["error"]["message"]


async def test_file_urls_only_inside_the_allowed_folder(http, settings):
    inside = settings.allow_local_audio_dir / "clip.wav"
    assert (await http.post("/v1/chat/completions", json=_chat_with(f"file://{inside}"))).status_code == 200
    for url in (f"file://{settings.allow_local_audio_dir}/../../etc/passwd", "file:///etc/passwd"):
        response = await http.post("/v1/chat/completions", json=_chat_with(url))
        assert response.status_code == 400
        assert str(settings.allow_local_audio_dir) not in response.text  # no server path in the error


def held_at_decode(gate: threading.Event):
    """A decode step that waits for `gate`: the running batch stands still for as long as a test needs."""
    def fake(real):
        gate.wait(120)
        return real()

    return fake


async def test_a_full_queue_answers_503_with_retry_after(tiny_model_dir, model):
    settings = Settings(model=tiny_model_dir, served_model_name=MODEL, max_queue=2, max_batch_size=1)
    body = {"model": MODEL, "max_tokens": 3, "ignore_eos": True, "messages": [{"role": "user", "content": "go"}]}
    gate = threading.Event()
    async with serving(settings, model) as client:
        with replaced(model.runner, "decode", held_at_decode(gate)):
            tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(3)]
            # one request runs (max_batch_size=1), held at its second token; two wait (max_queue=2)
            assert await eventually(lambda: _load(client, running=1, waiting=2), timeout=120)
            busy = await client.post("/v1/chat/completions", json=body)
            gate.set()
            results = await asyncio.gather(*tasks)
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1  # as OpenAI: no capacity right now
    assert (busy.json()["error"]["type"], busy.json()["error"]["code"]) == ("service_unavailable_error",
                                                                          "server_is_overloaded")
    assert [r.status_code for r in results] == [200, 200, 200]  # the queued ones were served once there was room


async def _load(client: httpx.AsyncClient, running: int, waiting: int) -> bool:
    return (await metric(client, "qwen2_audio_running_requests") == running
            and await metric(client, "qwen2_audio_queue_depth") == waiting)


async def test_the_deadline_answers_504_to_a_whole_answer(http, model):
    gate = threading.Event()
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "go"}]}
    with replaced(model.runner, "decode", held_at_decode(gate)):
        response = await http.post("/v1/chat/completions", json=body)
        gate.set()
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    assert "limit of 3 s" in response.json()["error"]["message"]


async def test_deadline_ends_a_stream_with_an_error_event(http):
    body = {"model": MODEL, "max_tokens": 3000, "ignore_eos": True, "stream": True,
            "messages": [{"role": "user", "content": "go"}]}
    response = await http.post("/v1/chat/completions", json=body)
    events = [line for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert '"error"' in events[-1] and "limit of 3 s" in events[-1]
    with pytest.raises(openai.APIError):
        stream = await sdk(http).chat.completions.create(model=MODEL, max_tokens=3000, stream=True,
                                                         messages=[{"role": "user", "content": "go"}],
                                                         extra_body={"ignore_eos": True})
        async for _ in stream:
            pass


async def test_a_failing_batch_answers_500_with_its_request_id_and_the_server_goes_on(http, model):
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with replaced(model.runner, "decode", fails_once(RuntimeError("simulated device fault"))):
        failed = await http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "doomed-1"})
    assert failed.status_code == 500 and "doomed-1" in failed.json()["error"]["message"]
    assert "simulated" not in failed.text  # no internals in the body
    assert (await http.post("/v1/chat/completions", json=body)).status_code == 200


@asynccontextmanager
async def serving(settings: Settings, model):
    """A fresh app on the shared model, and a client for it."""
    app = create_app(settings, model)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield client


async def test_out_of_memory_in_prefill_retries_smaller(tiny_model_dir, model):
    settings = Settings(model=tiny_model_dir, served_model_name=MODEL, max_batch_size=8, batch_wait_ms=50)
    sizes = []

    def tight(real, requests):
        sizes.append(len(requests))
        if len(requests) > 1:
            raise OutOfMemory("simulated: CUDA out of memory")
        return real(requests)

    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    async with serving(settings, model) as client:
        with replaced(model.runner, "prefill", tight):
            responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert max(sizes) > 1 and sizes.count(1) >= 4  # it tried them together, then one by one


async def test_an_engine_that_keeps_failing_turns_unready_and_answers_503(tiny_model_dir, model):
    def dead(real, *args):
        raise RuntimeError("simulated: device lost")

    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with serving(Settings(model=tiny_model_dir, served_model_name=MODEL), model) as client:
        # lost for good: every step fails, the engine's own probe request too
        with replaced(model.runner, "decode", dead), replaced(model.runner, "run_probe", dead):
            codes = [(await client.post("/v1/chat/completions", json=body)).status_code for _ in range(3)]
            assert codes == [500, 500, 500]
            assert await eventually(lambda: _status(client, "/ready", 503))
        after = await client.post("/v1/chat/completions", json=body)
        assert after.status_code == 503 and after.json()["error"]["type"] == "service_unavailable_error"
        assert (await client.get("/health")).status_code == 200  # alive, so an orchestrator can restart it
        assert await metric(client, "qwen2_audio_running_requests") == 0


async def _status(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status
