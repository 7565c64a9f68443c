"""schemathesis against a real server process, with every check: the server's own /openapi.json documents exactly
what it answers (each status, media type, header and body), invalid requests are refused, valid ones served, and
nothing is a 5xx. The run's settings and hooks: tests/protocol/schemathesis.toml, tests/support/fuzzing.py."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import output, start

ROOT = Path(__file__).parents[2]
KEY = "sk-fuzz"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    process, base = start(tiny_model_dir, "--default-max-tokens", "16", "--api-key", KEY)
    yield process, base
    process.terminate()
    process.wait(timeout=60)


def test_schemathesis_finds_no_failure_with_every_check(server):
    process, base_url = server
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", "tests/protocol/schemathesis.toml",
         "--no-color", "run", f"{base_url}/openapi.json", "--workers", "1"],
        cwd=ROOT, env={**os.environ, "QWEN2_AUDIO_FUZZ_KEY": KEY}, capture_output=True, text=True, timeout=1500)
    report = run.stdout + run.stderr
    print(report[-1500:])
    assert run.returncode == 0, report[-30_000:] + "\nserver log:\n" + output(process)[-10_000:]
    selected, tested = _summary(report, "Selected:").split("/")[1], _summary(report, "Tested:")
    assert selected == tested and "Unresolvable" not in report, report[-3000:]
    # the generated requests reached the model (real audio, the served model), not only the validation
    served = _served(base_url)
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/chat/completions", "/v1/responses"):
        assert served.get((path, "200"), 0) >= 20, (path, served)


def _summary(report: str, label: str) -> str:
    return next(line.split(label)[1].strip() for line in report.splitlines() if line.strip().startswith(label))


def _served(base_url: str) -> dict[tuple[str, str], float]:
    """The server's own count of its answers, by route and status."""
    counts = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text):
        for sample in family.samples:
            if sample.name == "qwen2_audio_requests_total":
                counts[(sample.labels["endpoint"], sample.labels["status"])] = sample.value
    return counts
