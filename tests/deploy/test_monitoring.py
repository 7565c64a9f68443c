"""Prometheus config and the Grafana dashboard, checked against the metrics the server really exports: the app on
the tiny model answers real requests, then every metric and label each panel's PromQL uses must be in /metrics."""

import json
import re
from pathlib import Path

import httpx
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import Settings
from tests.support.audio_samples import wav

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "qwen2-audio.json"
PROMETHEUS = ROOT / "docker" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "compose.yaml"

# PromQL words that are not series names
_PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by",
                 "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "le"}


@pytest_asyncio.fixture(scope="module")
async def exported(tiny_model_dir) -> dict[str, set[str]]:
    """Sample name -> label names, from /metrics after a transcription, a streamed chat and a failed request."""
    app = create_app(Settings(model=tiny_model_dir, served_model_name="tiny", max_batch_size=4))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            done = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(1.0))},
                                   data={"model": "tiny", "max_tokens": "4"})
            assert done.status_code == 200, done.text
            missing = await http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(1.0))},
                                      data={"model": "no-such-model"})
            assert missing.status_code == 400  # an unknown model on the audio routes, as OpenAI answers it
            text = (await http.get("/metrics")).text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def _dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def _series(expr: str) -> set[str]:
    no_strings = re.sub(r'"[^"]*"', "", expr)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
    no_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", no_ranges)
    no_matchers = re.sub(r"\{[^}]*\}", "", no_groupings)
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_matchers)
    return {word for word in words if word not in _PROMQL_WORDS}


def _labels(expr: str) -> set[str]:
    grouped = {label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
               for label in group.split(",")}
    matched = set(re.findall(r"[{,]\s*(\w+)\s*[=!~]", expr))
    return (grouped | matched) - {"", "le"}


def test_the_dashboard_covers_what_operators_watch():
    titles = " ".join(title for title, _ in _dashboard_queries()).lower()
    for topic in ["requests per second", "tokens", "latency", "first token", "queue depth", "batch size", "kv cache",
                  "gpu memory", "errors", "status"]:
        assert topic in titles, f"no panel on {topic}"
    exprs = " ".join(expr for _, expr in _dashboard_queries())
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le" in exprs


def test_every_series_the_dashboard_queries_is_exported(exported):
    for title, expr in _dashboard_queries():
        series = _series(expr)
        assert series, f"{title}: no metric in {expr}"
        for name in series:
            assert name in exported, f"{title}: {name} is not in /metrics (has: {sorted(exported)})"


def test_every_label_the_dashboard_groups_by_exists(exported):
    added_by_prometheus = {rule["target_label"] for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
                           for rule in job.get("relabel_configs", [])}
    assert added_by_prometheus == {"replica"}
    for title, expr in _dashboard_queries():
        for label in _labels(expr) - added_by_prometheus:
            assert all(label in exported[name] for name in _series(expr)), f"{title}: no label {label!r} in {expr}"


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    provider = yaml.safe_load((provisioning / "dashboards" / "qwen2-audio.yaml").read_text())["providers"][0]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in yaml.safe_load(COMPOSE.read_text())["services"]
    uids = {panel["datasource"]["uid"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert uids == {datasource["uid"]}


def test_prometheus_scrapes_every_replica_with_the_metrics_key():
    (job,) = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (dns,) = job["dns_sd_configs"]
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    replicas = {name for name, service in services.items() if service.get("image", "").startswith("qwen2-audio-server")}
    aliases = {alias for service in services.values()
               for alias in ((service.get("networks") or {}).get("default") or {}).get("aliases", [])}
    assert set(dns["names"]) == (replicas | aliases) - {"server-cpu"}  # server-cpu answers as "server"
    assert dns["port"] == 8000
    # the scrape credentials are the file compose.yaml fills from QWEN2_AUDIO_METRICS_KEY
    mounts = {config["target"]: config["source"] for config in services["prometheus"]["configs"]}
    assert mounts[job["authorization"]["credentials_file"]] == "metrics-key"
    assert "QWEN2_AUDIO_METRICS_KEY" in yaml.safe_load(COMPOSE.read_text())["configs"]["metrics-key"]["content"]


async def test_metrics_with_a_key_required_accept_the_bearer_prometheus_sends(tiny_model_dir):
    """QWEN2_AUDIO_METRICS_REQUIRE_KEY=true: without the key 401, with `Authorization: Bearer KEY` (what
    Prometheus' authorization.credentials_file sends) the metrics."""
    settings = Settings(model=tiny_model_dir, api_key=["scrape-key"], metrics_require_key=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/metrics")).status_code == 401
            scraped = await http.get("/metrics", headers={"Authorization": "Bearer scrape-key"})
            assert scraped.status_code == 200 and "qwen2_audio_queue_depth" in scraped.text
