"""compose.yaml against the published Compose schema, what its services promise, and the scale profile's nginx
config checked by nginx itself (`nginx -t`, with the replicas' names resolvable as Docker's DNS would make them)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
NGINX = ROOT / "docker" / "nginx" / "nginx.conf"
SERVERS = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("qwen2-audio-server")}
GPU_SERVERS = {name: s for name, s in SERVERS.items() if name != "server-cpu"}


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


def test_compose_file_is_valid_against_the_compose_spec_schema():
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_the_schema_check_catches_a_misspelt_attribute():
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    broken = {"services": {"server": {**SERVICES["server"], "restart_policy": "always"}}}
    with pytest.raises(jsonschema.ValidationError, match="restart_policy"):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_each_gpu_replica_reserves_its_own_gpu():
    devices = [SERVERS[name]["deploy"]["resources"]["reservations"]["devices"] for name in sorted(GPU_SERVERS)]
    assert all(d[0]["driver"] == "nvidia" and d[0]["capabilities"] == ["gpu"] for d in devices)
    ids = [tuple(d[0]["device_ids"]) for d in devices]
    assert len(set(ids)) == len(ids), f"two replicas on one GPU: {ids}"
    assert "deploy" not in SERVICES["server-cpu"]


def test_every_server_keeps_the_model_cache_heals_and_drains():
    grace = Settings.model_fields["shutdown_grace_s"].default
    for name, service in SERVERS.items():
        assert "hf-cache:/cache" in service["volumes"] and "hf-cache" in COMPOSE["volumes"], name
        assert service["healthcheck"]["test"][-1] == "/opt/qwen2-audio-server/docker/healthcheck.py", name
        assert _seconds(service["healthcheck"]["start_period"]) >= 600, name  # a first start downloads 16 GB
        assert service["restart"] == "unless-stopped", name
        assert _seconds(service["stop_grace_period"]) > grace, f"{name}: Docker would kill it while it drains"
        env = service["environment"]
        assert all(k.startswith(("QWEN2_AUDIO_", "HF_")) for k in env), name
        assert {k.removeprefix("QWEN2_AUDIO_").lower() for k in env if k.startswith("QWEN2_AUDIO_")} <= set(
            Settings.model_fields), name
    assert SERVICES["server-cpu"]["build"]["args"]["VARIANT"] == "cpu"
    assert SERVICES["server"]["build"]["args"]["VARIANT"] == "gpu"


def test_profiles_keep_plain_up_to_one_gpu_server():
    default = {name for name, service in SERVICES.items() if not service.get("profiles")}
    assert default == {"server", "valkey"}
    assert {n for n, s in SERVICES.items() if "monitoring" in s.get("profiles", [])} == {"prometheus", "grafana"}
    assert {n for n, s in SERVICES.items() if "scale" in s.get("profiles", [])} == set(GPU_SERVERS) - {"server"} | {"lb"}


def test_images_are_pinned():
    for name, service in SERVICES.items():
        if name not in SERVERS:
            image = service["image"]
            assert re.search(r":v?\d+\.\d+\.\d+", image) and "latest" not in image, f"{name}: {image}"


def _upstream_servers() -> list[str]:
    text = NGINX.read_text()
    block = re.search(r"upstream qwen2_audio \{(.*?)\}", text, re.S).group(1)
    return re.findall(r"^\s*server\s+([\w.-]+):8000\b", block, re.M)


def test_the_load_balancer_sends_to_the_least_busy_of_every_gpu_replica():
    text = NGINX.read_text()
    assert re.search(r"upstream qwen2_audio \{\s*least_conn;", text)
    assert sorted(_upstream_servers()) == sorted(GPU_SERVERS)
    assert set(SERVICES["lb"]["depends_on"]) == set(GPU_SERVERS)
    assert all(dep["condition"] == "service_healthy" for dep in SERVICES["lb"]["depends_on"].values())


def test_the_load_balancer_streams_and_takes_what_the_server_takes():
    text = NGINX.read_text()
    assert "proxy_buffering off;" in text and "proxy_http_version 1.1;" in text
    assert int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1)) >= Settings.model_fields[
        "request_timeout_s"].default
    body_mb = int(re.search(r"client_max_body_size (\d+)m;", text).group(1))
    assert body_mb > Settings.model_fields["max_upload_mb"].default  # the server answers its own 413


def test_nginx_accepts_the_config(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/system-deps installs it from scripts/debian-packages)")
    # nginx resolves upstream names at start: give them addresses in a private mount namespace's /etc/hosts,
    # as Docker's DNS does inside the compose network
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {name}\n" for name in _upstream_servers()))
    script = f"mount --bind {hosts} /etc/hosts && exec {nginx} -t -q -c {NGINX} -e stderr"
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_server_shares_the_response_store_it_starts_after():
    """Each replica keeps its stored responses in the one valkey service, which compose checks is healthy first."""
    store = SERVICES["valkey"]
    assert store["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"] and "ports" not in store
    assert "valkey-data:/data" in store["volumes"] and "--appendonly" in store["command"]
    for name, service in SERVERS.items():
        assert service["environment"]["QWEN2_AUDIO_RESPONSE_STORE"] == "${QWEN2_AUDIO_RESPONSE_STORE:-redis://valkey:6379/0}"
        assert service["depends_on"]["valkey"]["condition"] == "service_healthy", name
