"""`bench --structured`: what structured outputs cost a decode step, measured on the model runner in-process.

The same batch of --requests rows (one --clip-seconds question each, the checkpoint's sampling settings) decodes
--output-tokens steps with no constrained row, with half of them under a json_object grammar, and with all of
them; the three alternate for three rounds so that a noisy machine weighs on each alike. json_object keeps the
constrained rows in open-ended keys and strings, where most of the vocabulary is allowed: no cheap state.
"""

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from server.audio.clip import SAMPLE_RATE
from server.engine.conversation import audio_question
from server.engine.interface import PrefillInput
from server.engine.request import SamplingParams
from server.runner import grammar as grammar_module
from server.runner.loader import LoadConfig, load_model

ROUNDS = 3
WARMUP_STEPS = 4


def run_structured(model_dir: str, args) -> int:
    model = load_model(LoadConfig(model_dir, device=args.device, dtype=args.dtype, max_batch_size=args.requests))
    runner, processor = model.runner, model.processor
    clip = (np.random.default_rng(0).standard_normal(int(args.clip_seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    prompt = processor.prepare(audio_question("Describe the sound as JSON."), [clip])
    grammar = processor.compile_grammar({"type": "json_object"})
    defaults = model.info.sampling_defaults
    base = SamplingParams(max_tokens=args.output_tokens, temperature=defaults.get("temperature", 1.0),
                          top_p=defaults.get("top_p", 1.0), top_k=int(defaults.get("top_k", 0)),
                          repetition_penalty=defaults.get("repetition_penalty", 1.0))
    rows = args.requests
    cases = {"free": 0, "half constrained": rows // 2, "all constrained": rows}
    steps: dict[str, list[float]] = {name: [] for name in cases}
    in_grammar: dict[str, list[float]] = {name: [] for name in cases}  # the model thread's time in grammar work
    spent = _time_grammar_work()
    for _ in range(ROUNDS):
        for name, constrained in cases.items():
            requests = [PrefillInput(i, prompt, replace(base, seed=i, grammar=grammar if i < constrained else None))
                        for i in range(rows)]
            runner.prefill(requests)
            for step in range(WARMUP_STEPS + args.output_tokens):
                spent.clear()
                seconds = runner.decode().seconds
                if step >= WARMUP_STEPS:
                    steps[name].append(seconds)
                    in_grammar[name].append(sum(spent))
            runner.release(range(rows))
    result = {"model": model_dir, "device": model.info.device, "rows": rows, "clip_seconds": args.clip_seconds,
              "steps_per_case": ROUNDS * args.output_tokens,
              "median_step_ms": {name: round(1000 * statistics.median(s), 2) for name, s in steps.items()},
              "mean_step_ms": {name: round(1000 * statistics.fmean(s), 2) for name, s in steps.items()},
              "median_grammar_ms": {name: round(1000 * statistics.median(s), 3) for name, s in in_grammar.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "structured.json").write_text(json.dumps(result, indent=2))
    print(_table(result))
    return 0


def _time_grammar_work() -> list[float]:
    """Times every call the sampler makes into server.runner.grammar (masks, their application, the matchers'
    advance), into the list returned (the caller clears it each step)."""
    spent: list[float] = []

    def timed(fn: Callable) -> Callable:
        def call(*args):
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent.append(time.perf_counter() - started)
        return call

    for name in ("fill_masks", "apply_masks", "advance"):
        setattr(grammar_module, name, timed(getattr(grammar_module, name)))
    return spent


def _table(result: dict) -> str:
    free = result["median_step_ms"]["free"]
    lines = [f"{result['rows']} rows on {result['device']}, {result['steps_per_case']} decode steps a case",
             "", "| rows | median step (ms) | mean step (ms) | median vs free | grammar work a step, median (ms) |",
             "|---|---|---|---|---|"]
    for name, median in result["median_step_ms"].items():
        lines.append(f"| {name} | {median} | {result['mean_step_ms'][name]} | {median / free:.3f}x | "
                     f"{result['median_grammar_ms'][name]} |")
    return "\n".join(lines)
