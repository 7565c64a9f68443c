"""`bench --step-split`: where a decode step's time goes, in this server's engine and in `model.generate`.

The server side runs the engine in-process on the model as `serve` loads it (its kept CPU step settings
included), with the requests of the main bench (--requests clips of --clip-seconds, tasks in turn, greedy, forced to
--output-tokens, the sampling settings serving gives them) at each --concurrency level, and splits every decode step
into the language model's layers, the output projection, sampling, and the rest: what passes between one step's
end and the next one's start (the engine's hand-off through the event loop and its bookkeeping; no HTTP here).
The recipe side runs `model.generate` one request at a time in a child process, as the main bench's recipe does,
with hooks timing its language model and its output projection; its rest is everything else between two tokens
(logits processors, the argmax, the cache, the streamer). Medians over the steps, per row bucket.
"""

import asyncio
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from server.bench import machine
from server.bench.workload import BenchRequest

PARTS = ("layers", "projection", "sampling", "rest")


def run_step_split(model_dir: str, requests: list[BenchRequest], levels: list[int], args, out: Path) -> dict:
    recipe_requests = requests[: args.recipe_requests or len(requests)]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        recipe = pool.submit(recipe_split, model_dir, recipe_requests, args.output_tokens, args.device,
                             args.dtype).result()
    ours = server_split(model_dir, requests, levels, args)
    summary = {"meta": {"model": model_dir, "machine": machine.describe(args.device),
                        "step_settings": machine.step_settings(model_dir, args.device, args.dtype, args.cpu_threads),
                        "requests": len(requests), "recipe_requests": len(recipe_requests),
                        "output_tokens": args.output_tokens, "date": time.strftime("%Y-%m-%d %H:%M")},
               "results": [recipe, *ours]}
    (out / "step_split.json").write_text(json.dumps(summary, indent=2))
    (out / "step_split.md").write_text(table(summary))
    return summary


def server_split(model_dir: str, requests: list[BenchRequest], levels: list[int], args) -> list[dict]:
    from server.config import STEP_SETTINGS_DIR
    from server.runner.loader import LoadConfig, load_model

    model = load_model(LoadConfig(model_dir, device=args.device, dtype=args.dtype, max_batch_size=max(levels),
                                  cpu_threads=args.cpu_threads, step_settings_dir=STEP_SETTINGS_DIR))
    return asyncio.run(_engine_levels(model, requests, levels, args.output_tokens))


async def _engine_levels(model, requests: list[BenchRequest], levels: list[int], output_tokens: int) -> list[dict]:
    from server.engine.engine import Engine, EngineConfig
    from server.metrics import Metrics
    from server.runner.step_threads import StepSplit

    engine = Engine(model, EngineConfig(max_batch_size=max(levels)), Metrics())
    await engine.start()
    rows = []
    try:
        for level in levels:
            split = model.runner.step_split = StepSplit()
            gate = asyncio.Semaphore(level)
            await asyncio.gather(*(_one(engine, gate, r, _params(r, output_tokens, model.info)) for r in requests))
            model.runner.step_split = None
            for bucket, parts in sorted(split.buckets.items()):
                rows.append(_row("qwen2-audio-server engine", level, bucket, {part: getattr(parts, part)
                                                                            for part in PARTS}))
    finally:
        await engine.stop()
    return rows


async def _one(engine, gate: asyncio.Semaphore, request: BenchRequest, params) -> None:
    """One request through the engine as serving sends it, its events read as they come."""
    from server.engine.conversation import audio_question

    async with gate:
        prompt = await engine.prepare(audio_question(request.instruction), [request.samples])
        async for _ in engine.submit(prompt, params):
            pass


def _params(request: BenchRequest, output_tokens: int, info):
    """What serving makes of the main bench's requests: greedy (temperature 0), the checkpoint's repetition
    penalty (as model.generate applies it), top_k/top_p from it too, forced to output_tokens; a transcription
    also asks for the sampled token's logprob (verbose_json's segment averages)."""
    from server.engine.request import SamplingParams

    defaults = info.sampling_defaults
    return SamplingParams(output_tokens, temperature=0.0, top_p=defaults.get("top_p", 1.0),
                          top_k=max(0, int(defaults.get("top_k", 0))),
                          repetition_penalty=defaults.get("repetition_penalty", 1.0), min_tokens=output_tokens,
                          ignore_eos=True, logprobs=0 if request.task == "transcribe" else None)


def recipe_split(model_dir: str, requests: list[BenchRequest], output_tokens: int, device: str, dtype: str) -> dict:
    """In a child process: model.generate per request (as the recipe), each decode step split by hooks."""
    from server.bench.recipe import generate, load_recipe

    processor, model, device = load_recipe(model_dir, device, dtype)
    calls: dict[str, list[float]] = {"layers": [], "projection": []}
    for part, module in (("layers", model.model.language_model), ("projection", model.lm_head)):
        _time_calls(module, calls[part])
    generate(processor, model, requests[0], 2, device)  # warm-up, as the recipe
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    for request in requests:
        tokens = _TokenTimes()
        for times in calls.values():
            times.clear()
        generate(processor, model, request, output_tokens, device, streamer=tokens)
        # call 0 is the prefill (the first token); decode call k gives token k, put at tokens.times[k]
        for k in range(1, len(tokens.times)):
            interval = tokens.times[k] - tokens.times[k - 1]
            layers, projection = calls["layers"][k], calls["projection"][k]
            for part, value in (("layers", layers), ("projection", projection), ("sampling", 0.0),
                                ("rest", interval - layers - projection)):
                parts[part].append(value)
    return _row("model.generate (recipe)", 1, 1, parts, sampling_in_rest=True)


def _time_calls(module, into: list[float]) -> None:
    started: list[float] = []
    module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    module.register_forward_hook(lambda *_: into.append(time.perf_counter() - started.pop()))


class _TokenTimes:
    """A generate() streamer noting when each new token comes (the first put is the prompt); `at` is the first's,
    as the recipe's own streamer has it."""

    def __init__(self) -> None:
        self.puts = 0
        self.times: list[float] = []

    def put(self, value) -> None:
        self.puts += 1
        if self.puts >= 2:
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    @property
    def at(self) -> float | None:
        return self.times[0] if self.times else None


def _row(system: str, concurrency: int, bucket: int, parts: dict[str, list[float]],
         sampling_in_rest: bool = False) -> dict:
    medians = {f"{part}_ms": round(1000 * statistics.median(values), 3) if values else None
               for part, values in parts.items()}
    if sampling_in_rest:
        medians["sampling_ms"] = None
    steps = [sum(step) for step in zip(*(parts[part] for part in PARTS))]  # one entry per step in every part
    return {"system": system, "concurrency": concurrency, "rows": bucket, "steps": len(parts["layers"]),
            "step_ms": round(1000 * statistics.median(steps), 3) if steps else None, **medians}


def table(summary: dict) -> str:
    meta = summary["meta"]
    lines = [f"{machine.line(meta['machine'], meta['step_settings'])}. Model `{meta['model']}`, "
             f"{meta['output_tokens']} forced tokens a request; medians per decode step (ms). Recipe: "
             f"{meta['recipe_requests']} requests one at a time, its sampling counted in the rest.", "",
             "| system | concurrency | rows (bucket) | steps | step | layers | projection | sampling | rest |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["results"]:
        cells = [r["step_ms"], *(r[f"{part}_ms"] for part in PARTS)]
        lines.append(f"| {r['system']} | {r['concurrency']} | {r['rows']} | {r['steps']} | "
                     + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
