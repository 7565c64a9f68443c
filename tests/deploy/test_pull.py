"""`qwen2-audio-server pull` and serving from the Hugging Face cache with HF_HUB_OFFLINE=1, as a container does.

No hub is reachable here, so the model goes into the cache the way huggingface_hub lays it out (blobs, snapshot
symlinks, refs/main); unreachable and unknown-repo hubs are a closed port and a local server answering 404.
"""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

REPO = "tiny-org/tiny-qwen2-audio"


def put_in_hf_cache(folder: str, hf_home: Path, repo_id: str) -> Path:
    """Lay `folder` out as huggingface_hub caches a download of `repo_id` at main; returns the snapshot folder."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in Path(folder).iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def hf_home(tmp_path) -> Path:
    return tmp_path / "hf-home"


def test_pull_offline_and_not_cached_says_so_in_one_line(hf_home):
    result = run_cli("pull", "Qwen/Qwen2-Audio-7B-Instruct", env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not in the Hugging Face cache" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert str(hf_home / "hub") in lines[0]


def test_pull_without_network_says_the_hub_is_unreachable(hf_home):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    result = run_cli("pull", REPO, env={"HF_HOME": str(hf_home), "HF_ENDPOINT": closed, "HF_HUB_OFFLINE": "0"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "could not reach the Hugging Face Hub" in result.stderr and closed in result.stderr


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """The Hub's answer to a repository that does not exist."""

    def do_GET(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    def log_message(self, *args):
        pass


def test_pull_of_an_unknown_repo_names_it(hf_home):
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
        result = run_cli("pull", "nobody/no-such-model", env={"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint,
                                                             "HF_HUB_OFFLINE": "0"})
    finally:
        hub.shutdown()
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "nobody/no-such-model is not a model repository on the Hugging Face Hub" in result.stderr


def test_pull_rejects_a_name_that_is_no_hub_id(hf_home):
    result = run_cli("pull", "not a repo!", env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "is not a Hugging Face hub id" in result.stderr


def test_pull_of_a_cached_model_offline_reports_it_present(tiny_model_dir, hf_home):
    snapshot = put_in_hf_cache(tiny_model_dir, hf_home, REPO)
    result = run_cli("pull", REPO, env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert f"{REPO} is in the Hugging Face cache" in result.stdout and str(snapshot) in result.stdout
    assert "not checked for updates" in result.stdout


def test_pull_refuses_a_cached_snapshot_without_weights(tiny_model_dir, hf_home, tmp_path):
    partial = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, partial, ignore=shutil.ignore_patterns("*.safetensors"))
    put_in_hf_cache(str(partial), hf_home, REPO)
    result = run_cli("pull", REPO, env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "has no .safetensors weights" in result.stderr


def _tree(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime) for p in folder.rglob("*")}


def test_serve_offline_loads_a_hub_id_from_the_cache_and_writes_nothing_there(tiny_model_dir, hf_home):
    put_in_hf_cache(tiny_model_dir, hf_home, REPO)
    before = _tree(hf_home)
    port = free_port()
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "QWEN2_AUDIO_MODEL": REPO,
           "QWEN2_AUDIO_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "server", "serve"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_ready(base, process), process.stdout.read()
        models = httpx.get(f"{base}/v1/models").json()["data"]
        assert models[0]["id"] == REPO and models[0]["root"] == REPO
        assert _healthcheck(port).returncode == 0  # the image's HEALTHCHECK, with the image's QWEN2_AUDIO_HOST
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"loaded {REPO}" in output
    down = _healthcheck(port)
    assert down.returncode == 1 and "/ready" in down.stderr
    # nothing written to the cache: it can be mounted read-only (Kubernetes mounts it so)
    assert _tree(hf_home) == before


def test_serve_offline_without_the_model_stops_with_advice(hf_home):
    result = run_cli("serve", "--model", REPO, env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "not in the local Hugging Face cache" in result.stderr and "Traceback" not in result.stderr


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
    env = {**os.environ, "QWEN2_AUDIO_HOST": "0.0.0.0", "QWEN2_AUDIO_PORT": str(port)}
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False
