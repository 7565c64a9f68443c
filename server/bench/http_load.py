"""Start a server process, watch its memory, and send it the workload over HTTP at a given concurrency."""

import asyncio
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil

from server.bench.workload import BenchRequest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server command run until the block ends, with its peak resident memory (children included)."""

    def __init__(self, command: list[str], base_url: str, ready_path: str, log: Path) -> None:
        self.command, self.base_url, self.ready_path, self.log = command, base_url, ready_path, log
        self.peak_rss = 0
        self._stop = threading.Event()

    def __enter__(self) -> "ServerProcess":
        self._log = self.log.open("w")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 1800
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{self.command[0]} did not become ready; see {self.log}")
        threading.Thread(target=self._watch_memory, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()

    def _watch_memory(self) -> None:
        root = psutil.Process(self.process.pid)
        while not self._stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                return
            self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.05)


async def run_load(base_url: str, model: str, requests: list[BenchRequest], output_tokens: int, concurrency: int,
                   dialect: str) -> dict:
    """Send every request (at most `concurrency` at once) and time each: first text and last byte.

    dialect "ours": transcriptions go to /v1/audio/transcriptions, chat to /v1/chat/completions, the output length
    forced with min_tokens/ignore_eos. dialect "transformers": `transformers serve` has no audio transcription
    route for this model, so both tasks go through chat, the length forced through its generation_config field.
    """
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=3600) as http:

        async def one(request: BenchRequest) -> dict:
            async with gate:
                return await _timed(http, request, model, output_tokens, dialect)

        started = time.perf_counter()
        rows = await asyncio.gather(*(one(r) for r in requests))
    return {"wall_s": time.perf_counter() - started, "requests": rows}


async def _timed(http: httpx.AsyncClient, request: BenchRequest, model: str, output_tokens: int, dialect: str) -> dict:
    started = time.perf_counter()
    first: float | None = None
    tokens: int | None = None
    async with _open_stream(http, request, model, output_tokens, dialect) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread()).decode()[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"])
            if first is None and _has_text(event):
                first = time.perf_counter()
            usage = event.get("usage") or {}
            tokens = usage.get("completion_tokens", usage.get("output_tokens", tokens))
    done = time.perf_counter()
    return {"ttft_s": (first or done) - started, "latency_s": done - started, "output_tokens": tokens,
            "audio_s": request.seconds}


def _open_stream(http: httpx.AsyncClient, request: BenchRequest, model: str, output_tokens: int, dialect: str):
    if dialect == "ours" and request.task == "transcribe":
        fields = {"model": model, "stream": "true", "max_tokens": str(output_tokens),
                  "min_tokens": str(output_tokens), "ignore_eos": "true"}
        return http.stream("POST", "/v1/audio/transcriptions", data=fields, files={"file": ("clip.wav", request.wav)})
    body = {
        "model": model, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
        "max_tokens": output_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": request.wav_base64, "format": "wav"}},
            {"type": "text", "text": request.instruction},
        ]}],
    }
    if dialect == "ours":
        body |= {"min_tokens": output_tokens, "ignore_eos": True}
    else:
        body["generation_config"] = json.dumps(
            {"max_new_tokens": output_tokens, "min_new_tokens": output_tokens, "do_sample": False})
    return http.stream("POST", "/v1/chat/completions", json=body)


def _has_text(event: dict) -> bool:
    if event.get("type") == "transcript.text.delta":
        return True
    return any((c.get("delta") or {}).get("content") for c in event.get("choices") or [])
