"""Figures from timed requests, ratios against the baselines, and the JSON / markdown / PNG outputs."""

import json
import logging
from pathlib import Path

import numpy as np

from server.bench import machine

logger = logging.getLogger(__name__)


def figures(system: str, concurrency: int, run: dict, peak_rss: int, gpu_peak: int | None, forced_tokens: int) -> dict:
    rows = run["requests"]
    wall = run["wall_s"]
    reported = [r["output_tokens"] for r in rows if r["output_tokens"] is not None]
    tokens = sum(reported) if len(reported) == len(rows) else None
    ttft = [r["ttft_s"] for r in rows]
    latency = [r["latency_s"] for r in rows]
    return {
        "system": system,
        "concurrency": concurrency,
        "requests": len(rows),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(rows) / wall, 3),
        "output_tokens": tokens,
        "output_tokens_forced_each": forced_tokens,
        "output_tokens_per_s": round(tokens / wall, 1) if tokens is not None else None,
        "rtfx": round(sum(r["audio_s"] for r in rows) / wall, 2),
        "ttft_p50_s": _pct(ttft, 50), "ttft_p95_s": _pct(ttft, 95),
        "latency_p50_s": _pct(latency, 50), "latency_p95_s": _pct(latency, 95),
        "peak_rss_gib": round(peak_rss / 2**30, 2),
        "peak_gpu_gib": round(gpu_peak / 2**30, 2) if gpu_peak else None,
    }


def ratios(results: list[dict]) -> dict:
    """Throughput of each server run over the recipe's and over transformers serve's best; batch-1 latency."""
    recipe = next((r for r in results if r["system"] == "recipe"), None)
    hf = [r for r in results if r["system"] == "transformers serve"]
    ours = [r for r in results if r["system"].startswith("qwen2-audio-server")]
    out: dict = {}
    for row in ours:  # the run with --no-enforce-eager (bench --graphs) has keys of its own
        key = f"concurrency_{row['concurrency']}" + ("_graphs" if row["system"] != "qwen2-audio-server" else "")
        if recipe:
            out[f"throughput_vs_recipe@{key}"] = round(row["requests_per_s"] / recipe["requests_per_s"], 2)
        if hf:
            best = max(r["requests_per_s"] for r in hf)
            out[f"throughput_vs_transformers_serve@{key}"] = round(row["requests_per_s"] / best, 2)
    single = next((r for r in ours if r["concurrency"] == 1 and r["system"] == "qwen2-audio-server"), None)
    if recipe and single:
        out["batch1_latency_vs_recipe"] = round(single["latency_p50_s"] / recipe["latency_p50_s"], 3)
    return out


def write(out_dir: Path, meta: dict, results: list[dict]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"meta": meta, "results": results, "ratios": ratios(results)}
    summary["chart"] = _chart(out_dir / "bench.png", results)
    (out_dir / "bench.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "bench.md").write_text(markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    meta = summary["meta"]
    lines = [
        f"Model `{meta['model']}` ({meta['preset'] or 'folder'}), {meta['requests']} requests of "
        f"{meta['clip_seconds']} s clips ({', '.join(meta['tasks'])}), {meta['output_tokens']} output tokens each.",
        "",
        f"Machine: {machine.line(meta['machine'], meta['step_settings'])}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| system | concurrency | req/s | output tok/s | RTFx | TTFT p50 / p95 (s) | latency p50 / p95 (s) | peak RSS (GiB) | peak GPU (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['requests_per_s']} | {r['output_tokens_per_s']} | {r['rtfx']} | "
            f"{r['ttft_p50_s']} / {r['ttft_p95_s']} | {r['latency_p50_s']} / {r['latency_p95_s']} | "
            f"{r['peak_rss_gib']} | {r['peak_gpu_gib'] if r['peak_gpu_gib'] is not None else '-'} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary["ratios"].items()]
    if summary.get("chart"):
        lines += ["", summary["chart"]]
    return "\n".join(lines) + "\n"


def _chart(path: Path, results: list[dict]) -> str | None:
    """bench.png; None when drawn, else why not (the tables never depend on it)."""
    try:
        import matplotlib
    except ImportError:
        note = "bench.png skipped: matplotlib is not installed (`scripts/setup bench` installs it)"
        logger.warning(note)
        return note

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['system']}\nc={r['concurrency']}" for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results)), 4.5))
    left.bar(labels, [r["requests_per_s"] for r in results], color="#3b7dd8")
    left.set_title("throughput (requests/s)")
    right.bar(labels, [r["latency_p50_s"] for r in results], color="#d8843b")
    right.set_title("latency p50 (s)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _pct(values: list[float], q: int) -> float:
    return round(float(np.percentile(values, q)), 4)
