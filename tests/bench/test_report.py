"""The bench's tables say what they were measured on, and need no plotting library."""

import json
import sys

from server.bench import machine
from server.bench.report import write

ROW = {"system": "recipe", "concurrency": 1, "requests": 2, "wall_s": 2.0, "requests_per_s": 1.0,
       "output_tokens": 8, "output_tokens_forced_each": 4, "output_tokens_per_s": 4.0, "rtfx": 2.0,
       "ttft_p50_s": 0.1, "ttft_p95_s": 0.2, "latency_p50_s": 1.0, "latency_p95_s": 1.1, "peak_rss_gib": 1.0,
       "peak_gpu_gib": None}
SETTINGS = {"packed_over_plain": {"layers": 0.73, "projection": 0.4},
            "threads": {"sampling@1": 1, "projection@16": 2, "layers@1": 1, "prefill": 2, "layers@16": 2,
                        "projection@1": 2}}


def _meta() -> dict:
    return {"model": "m", "preset": "tiny", "device": "cpu", "requests": 2, "clip_seconds": 2.0, "output_tokens": 4,
            "tasks": ["chat"], "date": "today", "machine": machine.describe("cpu"), "step_settings": SETTINGS,
            "command": "qwen2-audio-server bench --preset tiny"}


def test_the_table_names_the_cpu_the_versions_and_the_step_settings(tmp_path):
    write(tmp_path, _meta(), [ROW])
    table = (tmp_path / "bench.md").read_text()
    cpu = machine.describe("cpu")
    assert f"Machine: {cpu['cpu']}, {cpu['cores']} cores" in table
    assert f"torch {cpu['torch']}, transformers {cpu['transformers']}" in table
    assert ("threads prefill 2, layers@1 1, layers@16 2, projection@1 2, projection@16 2, sampling@1 1; "
            "packed/plain time layers 0.73x, projection 0.40x") in table
    assert "`qwen2-audio-server bench --preset tiny`" in table
    assert json.loads((tmp_path / "bench.json").read_text())["meta"]["step_settings"] == SETTINGS


def test_without_matplotlib_the_tables_are_written_and_the_chart_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    summary = write(tmp_path, _meta(), [ROW])
    assert not (tmp_path / "bench.png").exists()
    note = "bench.png skipped: matplotlib is not installed"
    assert note in summary["chart"] and note in (tmp_path / "bench.md").read_text()
    assert "| recipe | 1 |" in (tmp_path / "bench.md").read_text()
