"""One real `qwen2-audio-server serve` process on loopback: the CLI, API keys, curl, and client disconnects."""

import base64
import json
import os
import subprocess
import sys

import httpx
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from server.config import Settings
from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.servers import output, process_metric, start
from tests.support.waiting import eventually

KEY = "test-secret"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, base = start(tiny_model_dir, "--api-key", KEY, "--max-batch-size", "4", "--log-level", "info")
    yield base
    process.terminate()
    process.wait(timeout=30)
    log = output(process)
    assert process.returncode == 0, log
    assert "RANDOM WEIGHTS" in log and "on cpu in float32" in log


@pytest_asyncio.fixture
async def sdk(server):
    async with AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0) as client:
        yield client


async def test_keys_guard_v1_but_not_health(server):
    async with httpx.AsyncClient(base_url=server) as http:
        denied = await http.get("/v1/models")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).json() == {"status": "ready"}
    async with AsyncOpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


async def test_models_list_announces_random_weights(sdk):
    models = await sdk.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL, *Settings.model_fields["model_alias"].default]  # the served id, then the default aliases
    assert models.data[0].owned_by == "random-weights" and models.data[0].model_extra["random_weights"] is True


async def test_sdk_over_http_streams_chat_and_transcribes(sdk):
    stream = await sdk.chat.completions.create(model=MODEL, max_tokens=10, temperature=0, stream=True,
                                               messages=[{"role": "user", "content": "hello"}])
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    result = await sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1.0)))
    assert isinstance(result.text, str)


def test_curl_transcription(server, tmp_path):
    audio = tmp_path / "clip.wav"
    audio.write_bytes(wav(2.0, seed=21))
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", f"{server}/v1/audio/transcriptions", "-H", f"Authorization: Bearer {KEY}",
         "-F", f"file=@{audio}", "-F", f"model={MODEL}", "-F", "response_format=verbose_json"],
        capture_output=True, text=True, check=True,
    )
    body = json.loads(out.stdout)
    assert body["task"] == "transcribe" and body["duration"] == 2.0 and len(body["segments"]) == 1


async def test_disconnect_mid_stream_cancels_the_work(server):
    tokens_before = process_metric(server, "qwen2_audio_generated_tokens_total")
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "max_tokens": 2000, "stream": True, "ignore_eos": True,
            "messages": [{"role": "user", "content": "a very long answer"}]}
    async with httpx.AsyncClient(base_url=server, headers=headers) as http:
        for _ in range(3):
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        break  # leave after the first token: closing the response drops the connection
    assert await eventually(lambda: process_metric(server, "qwen2_audio_running_requests") == 0)
    assert process_metric(server, "qwen2_audio_queue_depth") == 0
    assert process_metric(server, "qwen2_audio_generated_tokens_total") - tokens_before < 3 * 2000 / 2


async def test_disconnect_mid_stream_cancels_every_sample_of_n(server):
    tokens_before = process_metric(server, "qwen2_audio_generated_tokens_total")
    body = {"model": MODEL, "max_tokens": 2000, "stream": True, "ignore_eos": True, "n": 3,
            "messages": [{"role": "user", "content": "three very long answers"}]}
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # leave at the first token of any sample
    assert await eventually(lambda: process_metric(server, "qwen2_audio_running_requests") == 0)
    assert process_metric(server, "qwen2_audio_queue_depth") == 0
    assert process_metric(server, "qwen2_audio_generated_tokens_total") - tokens_before < 3 * 2000 / 2


def test_serve_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "server", "serve", "--help"], capture_output=True, text=True, check=True)
    for flag in ["--model", "--served-model-name", "--host", "--port", "--device", "--dtype", "--api-key",
                 "--max-batch-size", "--random-weights"]:
        assert flag in out.stdout


def test_unreachable_hub_ends_with_one_clear_sentence(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "server", "serve", "--model", "Qwen/Qwen2-Audio-7B-Instruct"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "not in the local Hugging Face cache" in out.stderr and "--random-weights" in out.stderr


def test_tiny_model_command_writes_a_loadable_snapshot(tmp_path):
    out = subprocess.run([sys.executable, "-m", "server", "tiny-model", str(tmp_path / "m")],
                         capture_output=True, text=True, check=True)
    assert "serve --model" in out.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.json", "RANDOM_WEIGHTS"} <= {
        p.name for p in (tmp_path / "m").iterdir()}


async def test_a_client_that_leaves_a_whole_answer_cancels_its_work(server):
    tokens_before = process_metric(server, "qwen2_audio_generated_tokens_total")
    body = {"model": MODEL, "max_tokens": 3000, "ignore_eos": True, "messages": [{"role": "user", "content": "go"}]}
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body)  # not streamed: the client gives up waiting
    assert await eventually(lambda: process_metric(server, "qwen2_audio_running_requests") == 0)
    assert process_metric(server, "qwen2_audio_generated_tokens_total") - tokens_before < 3000 / 2


async def test_responses_stream_and_store_over_real_http(sdk):
    """The Responses API through the SDK's stream helper over a real socket, then the stored response and its
    conversation, and models.retrieve."""
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(1.0)).decode()}}
    async with sdk.responses.stream(model=MODEL, max_output_tokens=6, temperature=0, input=[
            {"role": "user", "content": [audio, {"type": "input_text", "text": "What is it?"}]}]) as stream:
        events = [event async for event in stream]
    kinds, final = [event.type for event in events], events[-1].response  # completed, or incomplete at the limit
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"] and kinds[-1] == f"response.{final.status}"
    assert (await sdk.responses.retrieve(final.id)).output_text == final.output_text
    follow = await sdk.responses.create(model=MODEL, input="And?", previous_response_id=final.id, max_output_tokens=2)
    assert follow.usage.input_tokens > final.usage.input_tokens
    assert follow.usage.input_tokens_details.audio_tokens == final.usage.input_tokens_details.audio_tokens == 25
    assert (await sdk.models.retrieve("whisper-1")).id == "whisper-1"
