"""`serve` as a real process on loopback, for tests that need the whole server: start it, read what it printed."""

import socket
import subprocess
import sys
import tempfile
import time

import httpx

from tests.support.app import MODEL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model_dir: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """A ready server serving `model_dir` as MODEL, logging at warning unless `flags` say otherwise (the last
    --log-level wins)."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: one nobody reads would block a server that logs a lot
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--model", model_dir, "--served-model-name", MODEL,
         "--port", str(port), "--log-level", "warning", *flags],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    process.log = log
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        assert process.poll() is None, output(process)
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


def output(process: subprocess.Popen) -> str:
    """What a server from `start` has printed so far."""
    process.log.seek(0)
    return process.log.read()


def process_metric(base: str, name: str) -> float:
    """One sample of a server process's /metrics, summed over labels."""
    lines = httpx.get(f"{base}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)
