"""Whole-process behaviour on loopback: graceful SIGTERM, and a bounded load test with intended 503s (queue full)."""

import asyncio
import signal
import time

import httpx
import psutil
import pytest

from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.servers import process_metric, start


async def _stream_to_the_end(http: httpx.AsyncClient, started: asyncio.Event, counter: list) -> str:
    body = {"model": MODEL, "max_tokens": 120, "ignore_eos": True, "stream": True,
            "messages": [{"role": "user", "content": "keep going"}]}
    last = ""
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = line
                counter.append(1)
                if len(counter) >= 8:
                    started.set()
    return last


async def test_sigterm_finishes_in_flight_requests_then_exits_0(tiny_model_dir):
    process, base = start(tiny_model_dir, "--shutdown-grace-s", "60")
    try:
        started, counter = asyncio.Event(), []
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            streams = [asyncio.create_task(_stream_to_the_end(http, started, counter)) for _ in range(4)]
            await asyncio.wait_for(started.wait(), 30)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                await http.get("/health")
            last_events = await asyncio.gather(*streams)
        assert all(event == "data: [DONE]" for event in last_events)  # every in-flight stream ran to its end
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


async def test_load_1000_requests_at_concurrency_64(tiny_model_dir):
    """Every request is answered correctly or with an intended 503 (queue full); nothing leaks; RSS growth is
    reported."""
    process, base = start(tiny_model_dir, "--max-batch-size", "16", "--max-queue", "24")
    try:
        prompts = [f"question {i}" for i in range(6)]
        clip = wav(1.0, seed=77)
        async with httpx.AsyncClient(base_url=base, timeout=120,
                                     limits=httpx.Limits(max_connections=64)) as http:
            expected = {p: (await _ask(http, p, clip if i % 2 else None)).json()["choices"][0]["message"]["content"]
                        for i, p in enumerate(prompts)}
            rss_before = psutil.Process(process.pid).memory_info().rss
            gate = asyncio.Semaphore(64)

            resets = []

            async def one(i: int) -> tuple[str, httpx.Response]:
                prompt = prompts[i % len(prompts)]
                audio = clip if (i % len(prompts)) % 2 else None
                async with gate:
                    try:
                        return prompt, await _ask(http, prompt, audio)
                    except httpx.TransportError as exc:  # the OpenAI SDKs retry a dropped connection; so do we, once
                        resets.append(type(exc).__name__)
                        return prompt, await _ask(http, prompt, audio)

            started = time.perf_counter()
            results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 600)
            elapsed = time.perf_counter() - started
            rss_after = psutil.Process(process.pid).memory_info().rss
        codes = [r.status_code for _, r in results]
        assert set(codes) <= {200, 503}, sorted(set(codes))
        for prompt, response in results:
            if response.status_code == 200:
                assert response.json()["choices"][0]["message"]["content"] == expected[prompt]
            else:
                assert int(response.headers["retry-after"]) >= 1
        # 64 clients against 16 batch slots + 24 queue places: the rest are turned away at once, as intended. How
        # many get through depends on the machine's speed; that the batch and the queue filled up does not.
        assert codes.count(200) >= 16 + 24 and codes.count(503) >= 1
        assert process_metric(base, "qwen2_audio_running_requests") == 0
        assert process_metric(base, "qwen2_audio_queue_depth") == 0
        assert process_metric(base, "qwen2_audio_kv_cache_tokens") == 0
        growth = (rss_after - rss_before) / 2**20
        print(f"\nload: 1000 requests at concurrency 64 in {elapsed:.1f} s: {codes.count(200)} answered, "
              f"{codes.count(503)} told 503, {len(resets)} connections reset and retried; "
              f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB ({growth:+.0f})")
        assert len(resets) <= 5, resets  # seen once in one CI run (1 in 1,000), never locally in 7,000
        assert growth < 500  # a leak of per-request state would grow far past this over 1000 requests
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


async def _ask(http: httpx.AsyncClient, prompt: str, audio: bytes | None) -> httpx.Response:
    import base64

    content = prompt if audio is None else [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}},
        {"type": "text", "text": prompt}]
    body = {"model": MODEL, "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    return await http.post("/v1/chat/completions", json=body)

