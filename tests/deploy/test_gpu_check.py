"""scripts/gpu-check runs through on the CPU (its CUDA parts skipped): the run a GPU machine gets is not its
first. The dry run uses the tiny model and a small workload; every phase must pass and leave its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_dry_run_passes_every_phase_and_leaves_its_results(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(work),
           "GPU_CHECK_MODEL_DIR": str(tmp_path / "model")}
    run = subprocess.run([str(ROOT / "scripts" / "gpu-check")], env=env, capture_output=True, text=True, timeout=900)
    summary = (out / "gpu-check.md").read_text()
    assert run.returncode == 0, summary + run.stdout[-3000:] + run.stderr[-3000:]
    for phase in ("model", "gpu-tests", "roofline", "bench", "memory"):
        assert f"- {phase}: exit 0 after" in summary
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "gpu-check.md", "gpu-tests.xml", "memory.json",
                                                      "roofline.json"]  # within the 8 files the device tool returns
    bench = json.loads((out / "bench.json").read_text())
    systems = {row["system"] for row in bench["results"]}
    assert systems == {"recipe", "qwen2-audio-server", "qwen2-audio-server (--no-enforce-eager)"}
    assert all(row["requests"] == 8 for row in bench["results"] if row["system"] != "recipe")
    roofline = json.loads((out / "roofline.json").read_text())
    assert [row["mode"] for row in roofline["results"]] == ["eager", "static step"]  # no graphs without CUDA
    assert all(row["tokens_per_s"] > 0 for row in roofline["results"])
