"""`bench --step-split` splits real decode steps, the server's and model.generate's, and says where it ran."""

import json
import subprocess
import sys


def test_the_step_split_reports_every_part_of_both_systems_and_the_machine(tiny_model_dir, tmp_path):
    out = tmp_path / "split"
    run = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--step-split", "--model", tiny_model_dir, "--requests", "4",
         "--clip-seconds", "2", "--output-tokens", "12", "--concurrency", "1,4", "--recipe-requests", "2",
         "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "step_split.json").read_text())
    machine = summary["meta"]["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"] and machine["transformers"]
    recipe, *ours = summary["results"]
    assert recipe["system"] == "model.generate (recipe)" and recipe["steps"] == 2 * 11  # 11 decode steps a request
    assert recipe["sampling_ms"] is None  # generate's sampling is counted in its rest
    assert {(r["concurrency"], r["rows"]) for r in ours} >= {(1, 1), (4, 4)}
    for row in [recipe, *ours]:
        parts = [row[f"{part}_ms"] for part in ("layers", "projection", "rest")]
        assert row["steps"] > 0 and all(p is not None for p in parts) and row["layers_ms"] > 0
        assert row["step_ms"] > 0
    table = (out / "step_split.md").read_text()
    assert machine["cpu"] in table and "| qwen2-audio-server engine | 4 | 4 |" in table
