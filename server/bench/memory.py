"""`bench --memory`: per quantization, the weights' memory, the peak memory, and the speed of one 30 s request.

Each quantization loads in a process of its own (spawned), so each peak is its own and a load that fails or is
killed is reported as such instead of a number. The request runs through the server's model runner (prepare,
prefill, decode steps), forced to --output-tokens; with --output-tokens 0 only the loading is measured (for a
machine that holds the model but cannot compute in its dtype in useful time, such as a CPU without AVX-512 BF16,
where torch multiplies bfloat16 matrices at about 0.1 GFLOP/s).
"""

import json
import multiprocessing
import platform
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from server.bench.workload import Workload

GiB = 2**30


def run_memory(model_dir: str, preset: str | None, modes: list[str], args) -> int:
    rows = []
    for mode in modes:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            future = pool.submit(measure, model_dir, mode, args.device, args.dtype, args.clip_seconds,
                                 args.output_tokens, args.quantize_audio_encoder)
            try:
                rows.append(future.result())
            except Exception as exc:  # refused, out of memory, killed: say so, never a number
                rows.append({"quantization": mode, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
    meta = {"model": model_dir, "preset": preset, "clip_seconds": args.clip_seconds,
            "output_tokens": args.output_tokens, "dtype": args.dtype, "date": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"meta": meta, "results": rows}
    (out / "memory.json").write_text(json.dumps(summary, indent=2))
    (out / "memory.md").write_text(markdown(summary))
    print((out / "memory.md").read_text())
    return 0 if any("error" not in r for r in rows) else 1


def measure(model_dir: str, mode: str, device: str, dtype: str, clip_seconds: float, output_tokens: int,
            audio_encoder: bool = False) -> dict:
    """In the child: load, warm up, run one request of `clip_seconds` (unless `output_tokens` is 0), read the memory."""
    from server.runner.loader import LoadConfig, load_model

    peaks = _AnonPeak()
    started = time.perf_counter()
    model = load_model(LoadConfig(model_dir, device, dtype, quantization=mode, quantize_audio_encoder=audio_encoder))
    load_s = time.perf_counter() - started
    info = model.info
    row = {"quantization": mode + (" + audio encoder" if audio_encoder and mode != "none" else ""),
           "backend": info.quantization_backend, "device": info.device, "dtype": info.dtype,
           "weights_bytes": info.weights_bytes, "weights_gib": round(info.weights_bytes / GiB, 3),
           "load_s": round(load_s, 1)}
    if output_tokens:
        row |= _one_request(model, clip_seconds, output_tokens)
    gpu_peak = model.runner.peak_memory_bytes()
    return row | {
        "peak_rss_gib": round(_status_kib("VmHWM") * 1024 / GiB, 2),  # the kernel's own high-water mark
        "peak_anon_rss_gib": round(peaks.stop() / GiB, 2),  # private memory: without mmapped checkpoint pages
        "peak_gpu_gib": round(gpu_peak / GiB, 3) if gpu_peak else None,
    }


def _one_request(model, clip_seconds: float, output_tokens: int) -> dict:
    """Through the model side as the engine drives it: prepare, prefill, decode steps."""
    from server.engine.conversation import audio_question
    from server.engine.interface import PrefillInput
    from server.engine.request import SamplingParams

    runner = model.runner
    runner.run_probe(model.processor.probe_prompt())  # warm-up, as the engine does at start
    runner.reset_peak_memory()
    request = Workload(1, clip_seconds, output_tokens, ("transcribe",)).build()[0]
    prompt = model.processor.prepare(audio_question(request.instruction), [request.samples])
    params = SamplingParams(max_tokens=output_tokens, temperature=0.0, ignore_eos=True)
    first = runner.prefill([PrefillInput(0, prompt, params)])
    decode_s = sum(runner.decode().seconds for _ in range(output_tokens - 1))
    kv_tokens = runner.kv_tokens
    runner.release([0])
    return {
        "prompt_tokens": prompt.num_tokens,
        "output_tokens": output_tokens,
        "kv_gib": round(kv_tokens * model.info.kv_bytes_per_token / GiB, 3),
        "prefill_s": round(first.seconds, 3),
        "decode_tokens_per_s": round((output_tokens - 1) / decode_s, 2) if decode_s else None,
        "tokens_per_s": round(output_tokens / (first.seconds + decode_s), 2),
    }


class _AnonPeak:
    """Peak anonymous RSS of this process, sampled in a thread (the kernel keeps a high-water mark only for the
    whole RSS, which also counts the checkpoint's mmapped pages, reclaimable page cache)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _status_kib("RssAnon") * 1024)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status_kib("RssAnon") * 1024)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def markdown(summary: dict) -> str:
    meta = summary["meta"]
    lines = [
        f"Model `{meta['model']}` ({meta['preset'] or 'folder'}), "
        + (f"one request of a {meta['clip_seconds']} s clip, {meta['output_tokens']} output tokens"
           if meta["output_tokens"] else "loading only (--output-tokens 0)") + f", {platform.machine()}.",
        "",
        "| quantization | backend | device | weights (GiB) | peak GPU (GiB) | peak RSS (GiB) | peak private RSS (GiB) "
        "| KV cache (GiB) | prefill (s) | decode tok/s | tok/s end to end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        if "error" in r:
            lines.append(f"| {r['quantization']} | failed: {r['error']} | | | | | | | | | |")
            continue
        cell = {k: "-" if r.get(k) is None else r[k] for k in
                ("peak_gpu_gib", "kv_gib", "prefill_s", "decode_tokens_per_s", "tokens_per_s")}
        lines.append(
            f"| {r['quantization']} | {r['backend'] or '-'} | {r['device']} ({r['dtype']}) | {r['weights_gib']} "
            f"| {cell['peak_gpu_gib']} | {r['peak_rss_gib']} | {r['peak_anon_rss_gib']} | {cell['kv_gib']} "
            f"| {cell['prefill_s']} | {cell['decode_tokens_per_s']} | {cell['tokens_per_s']} |"
        )
    return "\n".join(lines) + "\n"
