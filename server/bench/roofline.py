"""`bench --roofline`: batch-1 decode speed against what the memory bandwidth allows.

At batch 1 a decode step reads every weight once, so its floor is weights bytes / memory bandwidth. This measures
the bandwidth (a device-to-device copy of a large buffer, bytes read plus written), the weights the model stores,
and the server's own decode steps at one row, eager and (on CUDA) through CUDA graphs, each as tokens/s and as a
share of that roofline. All in one process, one run, one machine.
"""

import json
import time
from pathlib import Path

import torch

from server.engine.conversation import audio_question
from server.engine.interface import PrefillInput
from server.engine.request import SamplingParams
from server.runner.loader import LoadConfig, load_model
from server.runner.model_runner import Qwen2AudioRunner

GiB = 2**30


def copy_bandwidth(device: torch.device, nbytes: int = 2 * GiB, repeats: int = 10) -> float:
    """Bytes per second a device-to-device copy moves, counting bytes read and written (as STREAM does)."""
    source = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    _sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - started)


def decode_tokens_per_second(runner: Qwen2AudioRunner, prompt, steps: int) -> float:
    params = SamplingParams(max_tokens=steps + 8, temperature=0.0, ignore_eos=True)
    runner.prefill([PrefillInput(0, prompt, params)])
    for _ in range(3):  # warm-up (with graphs: the capture)
        runner.decode()
    _sync(runner.device)
    started = time.perf_counter()
    for _ in range(steps):
        runner.decode()  # returns the token as a Python int: every step ends synchronised
    seconds = time.perf_counter() - started
    runner.release([0])
    return steps / seconds


def run_roofline(model_dir: str, device: str, dtype: str, steps: int, out: Path) -> dict:
    model = load_model(LoadConfig(model_dir, device, dtype))
    base = model.runner
    prompt = model.processor.prepare(audio_question("Transcribe this."), [torch.zeros(16000 * 5).numpy()])
    bandwidth = copy_bandwidth(base.device, nbytes=(2 * GiB if base.device.type == "cuda" else GiB // 4))
    roofline = bandwidth / model.info.weights_bytes
    modes = {"eager": (False, False), "static step": (True, False)}
    if base.device.type == "cuda":
        modes["CUDA graphs"] = (True, True)
    rows = []
    for name, (static, graphs) in modes.items():
        runner = Qwen2AudioRunner(base.model, base.device, base.dtype, base._pad_token_id, base._eos_token_ids,
                                  static_decode=static, cuda_graphs=graphs)
        speed = decode_tokens_per_second(runner, prompt, steps)
        rows.append({"mode": name, "tokens_per_s": round(speed, 1), "of_roofline": round(speed / roofline, 3)})
    result = {"device": model.info.device, "dtype": model.info.dtype, "weights_gib": round(model.info.weights_bytes / GiB, 2),
              "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1), "roofline_tokens_per_s": round(roofline, 1),
              "steps": steps, "date": time.strftime("%Y-%m-%d %H:%M"), "results": rows}
    out.mkdir(parents=True, exist_ok=True)
    result["markdown"] = markdown(result)
    (out / "roofline.json").write_text(json.dumps(result, indent=2))
    (out / "roofline.md").write_text(result["markdown"])
    return result


def markdown(result: dict) -> str:
    lines = [f"Batch-1 decode on {result['device']} ({result['dtype']}, {result['weights_gib']} GiB of weights): "
             f"copy bandwidth {result['copy_bandwidth_gb_s']} GB/s, roofline {result['roofline_tokens_per_s']} "
             f"tokens/s, {result['steps']} steps timed.", "", "| decode step | tokens/s | of the roofline |",
             "|---|---:|---:|"]
    lines += [f"| {r['mode']} | {r['tokens_per_s']} | {r['of_roofline']:.0%} |" for r in result["results"]]
    return "\n".join(lines) + "\n"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
