"""Orchestration of one benchmark run: every system on the same model folder, the same workload, one machine."""

import argparse
import asyncio
import logging
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from server.bench import machine
from server.bench.http_load import ServerProcess, free_port, run_load
from server.bench.recipe import run_recipe
from server.bench.report import figures, write
from server.bench.workload import Workload

logger = logging.getLogger(__name__)
SYSTEMS = ("recipe", "server", "transformers")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qwen2-audio-server bench", description=__doc__)
    p.add_argument("--model", help="model folder (default: a random-weight model of --preset, written once)")
    p.add_argument("--preset", choices=["tiny", "small", "full"], default="small",
                   help="size of the random-weight model when --model is not given; full = the published 7B config")
    p.add_argument("--layout", choices=["instruct", "base"], default="instruct",
                   help="the random-weight model's files: as Qwen2-Audio-7B-Instruct's (a chat template) or the base's")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--clip-seconds", type=float, help="length of every clip (default 5; 30 with --memory)")
    p.add_argument("--output-tokens", type=int, default=32, help="forced output length of every request")
    p.add_argument("--tasks", default="transcribe,chat", help="task mix, taken in turn")
    p.add_argument("--concurrency", default="1,4,16", help="concurrency levels for this server")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="any of: recipe, server, transformers")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--out", default="bench-results", help="folder for bench.json, bench.md and bench.png")
    p.add_argument("--long-audio", metavar="MINUTES",
                   help="instead: memory and speed of one upload per length, e.g. 10,60 (needs espeak-ng)")
    p.add_argument("--memory", action="store_true",
                   help="instead: weights, peak memory and tokens/s of one request per --quantization "
                        "(memory.json, memory.md)")
    p.add_argument("--structured", action="store_true",
                   help="instead: the decode step time of --requests rows with none, half and all of them under a "
                        "json_object grammar (structured.json)")
    p.add_argument("--quantization", default="none,int8,int4", help="with --memory: the quantizations to measure")
    p.add_argument("--roofline", action="store_true",
                   help="instead: batch-1 decode tokens/s, eager and through CUDA graphs, against the memory-bandwidth "
                        "roofline (roofline.json, roofline.md)")
    p.add_argument("--recipe-requests", type=int,
                   help="run the recipe on only the first N requests (it runs them one at a time; its per-request "
                        "figures scale)")
    p.add_argument("--graphs", action="store_true",
                   help="also run this server with --no-enforce-eager (CUDA graphs on a GPU; the static step on a CPU)")
    p.add_argument("--realtime", metavar="SESSIONS",
                   help="instead: live transcription sessions at once over /v1/realtime, e.g. 1,4,8, each streaming "
                        "--clip-seconds (default 30) of speech at real-time pace (realtime.json, realtime.md)")
    p.add_argument("--diarization", action="store_true",
                   help="instead: speaker diarization's accuracy on synthetic conversations (anonymous and with known "
                        "speakers) and its cost on one --diarization-minutes file against transcribing it "
                        "(diarization.json, diarization.md; needs espeak-ng)")
    p.add_argument("--diarization-minutes", type=float, default=10.0, help="with --diarization: the cost file's length")
    p.add_argument("--calibrate", action="store_true",
                   help="with --diarization: only sweep its thresholds on the calibration voices (calibration.md)")
    p.add_argument("--quantize-audio-encoder", action="store_true",
                   help="with --memory: quantize the audio encoder too (as serve --quantize-audio-encoder)")
    p.add_argument("--step-split", action="store_true",
                   help="instead: where a decode step's time goes (layers, output projection, sampling, the rest), in "
                        "this server's engine at each --concurrency and in model.generate (step_split.json, .md)")
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="run this server with serve --cpu-threads N (default: the step settings it measures)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    if args.diarization:
        return _diarization(args)
    model_dir = args.model or str(_preset_model(args.preset, args.layout))
    if args.memory:
        from server.bench.memory import run_memory

        args.clip_seconds = args.clip_seconds or 30.0
        return run_memory(model_dir, None if args.model else args.preset, args.quantization.split(","), args)
    if args.roofline:
        from server.bench.roofline import run_roofline

        print(run_roofline(model_dir, args.device, args.dtype, max(args.output_tokens, 16), Path(args.out))["markdown"])
        return 0
    if args.structured:
        from server.bench.structured import run_structured

        args.clip_seconds = args.clip_seconds or 5.0
        return run_structured(model_dir, args)
    if args.realtime:
        from server.bench.realtime import run_realtime
        from server.bench.realtime import table as realtime_table

        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(realtime_table(run_realtime(model_dir, [int(n) for n in args.realtime.split(",")], args.clip_seconds or 30,
                                          args.output_tokens, args.device, args.dtype, Path(args.out))))
        return 0
    if args.step_split:
        from server.bench.step_split import run_step_split

        args.clip_seconds = args.clip_seconds or 5.0
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        requests = Workload(args.requests, args.clip_seconds, args.output_tokens, tuple(args.tasks.split(","))).build()
        run_step_split(model_dir, requests, [int(c) for c in args.concurrency.split(",")], args, out)
        print((out / "step_split.md").read_text())
        return 0
    if args.long_audio:
        from server.bench.long_audio import run_long_audio, table

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        minutes = [float(m) for m in args.long_audio.split(",")]
        print(table(run_long_audio(model_dir, minutes, args.output_tokens, args.device, args.dtype, out)))
        return 0
    args.clip_seconds = args.clip_seconds or 5.0
    workload = Workload(args.requests, args.clip_seconds, args.output_tokens, tuple(args.tasks.split(",")))
    requests = workload.build()
    levels = [int(c) for c in args.concurrency.split(",")]
    systems = args.systems.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    if "recipe" in systems:
        few = requests[: args.recipe_requests or len(requests)]
        logger.info("recipe: sequential model.generate on %d requests", len(few))
        results.append(_recipe(model_dir, few, args))
    if "server" in systems:
        results += _ours(model_dir, requests, levels, args, out)
        if args.graphs:
            results += _ours(model_dir, requests, levels, args, out, graphs=True)
    if "transformers" in systems:
        results += _transformers_serve(model_dir, requests, max(levels), args, out)
    meta = {"model": model_dir, "preset": None if args.model else args.preset, "device": _device_name(args.device),
            "requests": args.requests, "clip_seconds": args.clip_seconds, "output_tokens": args.output_tokens,
            "tasks": workload.tasks, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine.describe(args.device),
            "step_settings": machine.step_settings(model_dir, args.device, args.dtype, args.cpu_threads),
            "command": "qwen2-audio-server bench " + " ".join(argv)}
    summary = write(out, meta, results)
    print((out / "bench.md").read_text())
    return 0 if summary["results"] else 1


def _diarization(args) -> int:
    from server.bench.diarization import new_diarizer, run_diarization

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        from server.bench.calibration import calibrate, table

        (out / "calibration.md").write_text(report := table(calibrate(new_diarizer())))
        print(report)
        return 0
    model_dir = args.model or str(_preset_model(args.preset, args.layout))
    print(run_diarization(model_dir, args.diarization_minutes, args.output_tokens, args.device, args.dtype, out))
    return 0


def _recipe(model_dir: str, requests, args) -> dict:
    # A child process, so the recipe's memory peak is its own and its torch threads do not compete with ours.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(run_recipe, model_dir, requests, args.output_tokens, args.device, args.dtype)
        watcher = _ChildPeak([p.pid for p in pool._processes.values()])
        run = future.result()
        peak = watcher.stop()
    return figures("recipe", 1, run, peak, run["gpu_peak_bytes"], args.output_tokens)


def _ours(model_dir: str, requests, levels: list[int], args, out: Path, graphs: bool = False) -> list[dict]:
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", "--model", model_dir, "--served-model-name", "bench",
               "--port", str(port), "--device", args.device, "--dtype", args.dtype,
               "--max-batch-size", str(max(levels)), "--log-level", "warning", "--cpu-threads", str(args.cpu_threads),
               ] + (["--no-enforce-eager"] if graphs else [])
    name = "qwen2-audio-server" + (" (--no-enforce-eager)" if graphs else "")
    rows = []
    with ServerProcess(command, f"http://127.0.0.1:{port}", "/ready", out / f"server{'-graphs' if graphs else ''}.log") as server:
        for level in levels:  # untimed: on a CPU the server measures its step settings over its first steps of
            # each batch size (as the recipe gets a warm-up call)
            asyncio.run(run_load(server.base_url, "bench", requests[:level], args.output_tokens, level, "ours"))
        server.peak_rss = 0  # the timed levels' peaks, as before the warm-up
        for level in levels:
            logger.info("qwen2-audio-server: %d requests at concurrency %d", len(requests), level)
            run = asyncio.run(run_load(server.base_url, "bench", requests, args.output_tokens, level, "ours"))
            rows.append(figures(name, level, run, server.peak_rss, _gpu_peak(server.base_url),
                                args.output_tokens))
    return rows


def _transformers_serve(model_dir: str, requests, level: int, args, out: Path) -> list[dict]:
    port = free_port()
    served = _with_default_template(model_dir, out / "transformers-serve-model")
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(served), "--port", str(port),
               "--host", "127.0.0.1"]
    try:
        with ServerProcess(command, f"http://127.0.0.1:{port}", "/health", out / "transformers-serve.log") as server:
            logger.info("transformers serve: %d requests at concurrency %d", len(requests), level)
            run = asyncio.run(run_load(server.base_url, str(served), requests, args.output_tokens, level, "transformers"))
            return [figures("transformers serve", level, run, server.peak_rss, None, args.output_tokens)]
    except RuntimeError as exc:  # it may refuse the model or the request: report that, do not invent a number
        logger.warning("transformers serve could not be measured: %s", exc)
        return []


def _with_default_template(model_dir: str, folder: Path) -> Path:
    """The model's files (linked, not copied) with transformers' built-in Qwen2-Audio chat template in place of the
    checkpoint's own. transformers serve turns an OpenAI audio part into {"type": "audio", "url": ...}, which the
    published checkpoint's template does not render (it tests 'audio' in content or 'audio_url' in content): every
    audio request would fail. The weights and so the compute are the same."""
    from transformers import Qwen2AudioProcessor

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in Path(model_dir).iterdir():
        if path.name not in ("chat_template.json", "chat_template.jinja"):
            (folder / path.name).symlink_to(path.resolve())
    (folder / "chat_template.jinja").write_text(Qwen2AudioProcessor.default_chat_template.fget(None))
    return folder


class _ChildPeak:
    """Peak RSS of some processes, sampled in a thread."""

    def __init__(self, pids: list[int]) -> None:
        import threading

        import psutil

        self._pids = pids
        self.peak = 0
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, sum(psutil.Process(pid).memory_info().rss for pid in self._pids))
                except psutil.Error:
                    pass
                time.sleep(0.05)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _gpu_peak(base_url: str) -> int | None:
    import httpx

    for line in httpx.get(base_url + "/metrics").text.splitlines():
        if line.startswith("qwen2_audio_gpu_memory_peak_bytes "):
            return int(float(line.split()[1])) or None
    return None


def _preset_model(preset: str, layout: str) -> Path:
    from server.config import RANDOM_MODEL_DIR
    from server.tiny_model import ensure_random_model

    folder = f"bench-{preset}" if layout == "instruct" else f"bench-{preset}-{layout}"
    return ensure_random_model(RANDOM_MODEL_DIR.parent / folder, preset, layout)


def _device_name(device: str) -> str:
    import platform

    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


