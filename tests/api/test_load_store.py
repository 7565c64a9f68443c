"""A mixed load on a `serve` process with the Redis response store: 600 requests at 48 concurrent (chat with and
without audio, transcriptions, and Responses API turns that are stored, read, continued, listed and deleted). Every
answer is the one expected (0 unexpected), the store holds exactly what was kept and its byte count, nothing leaks,
and the RSS growth is reported and bounded."""

import asyncio
import base64
import signal
import time

import httpx
import psutil

from tests.support.app import MODEL
from tests.support.audio_samples import wav
from tests.support.redis_server import client_for, requires_redis
from tests.support.servers import output, process_metric, start

pytestmark = requires_redis
REQUESTS, CONCURRENCY = 600, 48
CLIP = wav(1.0, seed=78)
AUDIO_PART = {"type": "input_audio", "input_audio": {"data": base64.b64encode(CLIP).decode(), "format": "wav"}}


async def _chat(http, content) -> str:
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


async def _respond(http, expect: int = 200, **fields) -> dict:
    response = await http.post("/v1/responses", json={"model": MODEL, "max_output_tokens": 3, **fields})
    assert response.status_code == expect, response.text
    return response.json()


async def _stored_turns(http) -> int:
    """A stored turn with audio, read back, continued, its items listed; the continuation deleted and gone."""
    first = await _respond(http, input=[{"role": "user", "content": [AUDIO_PART, {"type": "input_text", "text": "?"}]}])
    assert (await http.get(f"/v1/responses/{first['id']}")).json()["id"] == first["id"]
    second = await _respond(http, input="and?", previous_response_id=first["id"])
    assert second["usage"]["input_tokens_details"]["audio_tokens"] == 25
    items = (await http.get(f"/v1/responses/{first['id']}/input_items")).json()["data"]
    assert items[0]["content"][0]["type"] == "input_audio"
    assert (await http.delete(f"/v1/responses/{second['id']}")).json()["deleted"] is True
    assert (await http.get(f"/v1/responses/{second['id']}")).status_code == 404
    return 6


async def test_600_mixed_requests_at_48_concurrent_on_the_redis_store(tiny_model_dir, redis_url):
    raw = client_for(redis_url)
    raw.flushdb()
    process, base = start(tiny_model_dir, "--response-store", redis_url, "--max-batch-size", "16")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
            expected = {"text": await _chat(http, "hello"), "audio": await _chat(http, [AUDIO_PART])}
            rss_before = psutil.Process(process.pid).memory_info().rss
            gate, sent = asyncio.Semaphore(CONCURRENCY), []

            async def one(i: int) -> None:
                async with gate:
                    kind = i % 5
                    if kind == 0:
                        assert await _chat(http, "hello") == expected["text"]
                    elif kind == 1:
                        assert await _chat(http, [AUDIO_PART]) == expected["audio"]
                    elif kind == 2:
                        answer = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                                 files={"file": ("a.wav", CLIP)})
                        assert answer.status_code == 200 and isinstance(answer.json()["text"], str)
                    elif kind == 3:
                        await _respond(http, input="not kept", store=False)
                    else:
                        sent.append(await _stored_turns(http))
                        return
                    sent.append(1)

            started = time.perf_counter()
            calls = REQUESTS // 2  # of each five calls, four make one request and one makes six
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(calls))), 900)
            elapsed = time.perf_counter() - started
            rss_after = psutil.Process(process.pid).memory_info().rss
        assert sum(sent) == REQUESTS
        for gauge in ("qwen2_audio_running_requests", "qwen2_audio_queue_depth", "qwen2_audio_kv_cache_tokens"):
            assert process_metric(base, gauge) == 0, gauge
        codes = {line.split('status="')[1].split('"')[0] for line in httpx.get(f"{base}/metrics").text.splitlines()
                 if line.startswith("qwen2_audio_requests_total{")}
        assert codes <= {"200", "404"}, codes  # the 404s: the deleted responses, asked for on purpose
        index = [m.decode() for m in raw.zrange("qwen2-audio:{responses}:index", 0, -1)]
        sizes = raw.hgetall("qwen2-audio:{responses}:sizes")
        assert len(index) == calls // 5 and int(raw.get("qwen2-audio:{responses}:bytes")) == sum(map(int, sizes.values()))
        growth = (rss_after - rss_before) / 2**20
        print(f"\nload on the Redis store: {sum(sent)} requests at concurrency {CONCURRENCY} in {elapsed:.1f} s, "
              f"0 unexpected; RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB ({growth:+.0f})")
        assert growth < 500, output(process)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
