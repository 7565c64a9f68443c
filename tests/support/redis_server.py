"""A real `redis-server` (Debian's package; scripts/system-deps installs it) on a free loopback port, for the shared
response store's tests: started and stopped by the test, and stopped and started again on the same port and data
folder for an outage. Its append-only file keeps what was written across a restart, as a production Redis would."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port


def have_redis() -> bool:
    return shutil.which("redis-server") is not None


requires_redis = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed (scripts/system-deps installs it)")


class RedisServer:
    def __init__(self, folder: Path, password: str | None = None, tls: bool = False) -> None:
        self.folder, self.password, self.tls, self.port = folder, password, tls, free_port()
        self.process: subprocess.Popen | None = None
        if tls:
            _certificate(folder)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.folder / 'tls.crt'}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        flags = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always"]
        flags += ["--requirepass", self.password] if self.password else []
        if self.tls:  # TLS only: the plain port is closed
            flags += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.folder / "tls.crt"),
                      "--tls-key-file", str(self.folder / "tls.key"), "--tls-ca-cert-file", str(self.folder / "tls.crt"),
                      "--tls-auth-clients", "no"]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(["redis-server", *flags], stdout=self.log, stderr=subprocess.STDOUT, text=True)
        client = self.client()
        for _ in range(200):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                assert self.process.poll() is None, self.output()
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer: {self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.process.wait(timeout=30)
        self.process = None

    def client(self) -> redis.Redis:
        return client_for(self.url)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def client_for(url: str) -> redis.Redis:
    """A plain (blocking) client, to look at what a store wrote."""
    return redis.Redis.from_url(url, socket_timeout=5)


def _certificate(folder: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl command."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "tls.key"),
                    "-out", str(folder / "tls.crt")], check=True, capture_output=True)
