"""`qwen2-audio-server bench` runs every system on one model folder and writes its JSON, table and chart."""

import json
import subprocess
import sys


def test_bench_runs_all_systems_with_forced_lengths(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    run = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--model", tiny_model_dir, "--requests", "4", "--clip-seconds", "2",
         "--output-tokens", "8", "--concurrency", "1,4", "--systems", "recipe,server,transformers", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "bench.json").read_text())
    systems = [(r["system"], r["concurrency"]) for r in summary["results"]]
    assert systems == [("recipe", 1), ("qwen2-audio-server", 1), ("qwen2-audio-server", 4), ("transformers serve", 4)], (
        run.stderr[-3000:])
    for row in summary["results"]:
        assert row["output_tokens"] == 4 * 8, row  # every system really produced the forced length
        assert row["requests_per_s"] > 0 and row["latency_p95_s"] >= row["latency_p50_s"] > 0
        assert row["rtfx"] > 0 and row["peak_rss_gib"] > 0
    assert {"throughput_vs_recipe@concurrency_4", "throughput_vs_transformers_serve@concurrency_4",
            "batch1_latency_vs_recipe"} <= set(summary["ratios"])
    table = (out / "bench.md").read_text()
    assert "| qwen2-audio-server | 4 |" in table and "| ratio | value |" in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_memory_measures_each_quantization_in_its_own_process(tiny_model_dir, tmp_path):
    out = tmp_path / "memory"
    run = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--memory", "--model", tiny_model_dir, "--quantization",
         "none,int8,int4", "--clip-seconds", "3", "--output-tokens", "4", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((out / "memory.json").read_text())["results"]
    assert [(r["quantization"], r["backend"]) for r in rows] == [("none", None), ("int8", "torchao"),
                                                                 ("int4", "bitsandbytes")], rows
    for row in rows:
        assert row["prompt_tokens"] > 75 and row["output_tokens"] == 4 and row["tokens_per_s"] > 0
        assert row["peak_rss_gib"] >= row["peak_anon_rss_gib"] > 0 and row["peak_gpu_gib"] is None
    assert rows[0]["weights_bytes"] > rows[1]["weights_bytes"] > rows[2]["weights_bytes"]
    assert "| int4 | bitsandbytes |" in (out / "memory.md").read_text()
