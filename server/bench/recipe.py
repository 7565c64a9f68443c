"""The seed recipe every Qwen2-Audio tutorial shows: processor + `model.generate`, one request at a time.

Runs in a child process, so its memory is measured on its own.
"""

import time

from server.audio.clip import SAMPLE_RATE
from server.bench.workload import BenchRequest
from server.engine.conversation import audio_question


class _FirstToken:
    """A generate() streamer that notes when the first new token comes (the first put is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def run_recipe(model_dir: str, requests: list[BenchRequest], output_tokens: int, device: str, dtype: str) -> dict:
    import torch

    processor, model, device = load_recipe(model_dir, device, dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    generate(processor, model, requests[0], 2, device)  # warm-up, as the server warms up at start
    rows, started = [], time.perf_counter()
    for request in requests:
        rows.append(generate(processor, model, request, output_tokens, device))
    wall = time.perf_counter() - started
    gpu_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"wall_s": wall, "requests": rows, "gpu_peak_bytes": gpu_peak}


def load_recipe(model_dir: str, device: str, dtype: str):
    """The processor and model as the recipe loads them, and the device they are on."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    torch_dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16, "float32": torch.float32}[dtype]
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch_dtype, device_map=device).eval()
    return processor, model, device


def generate(processor, model, request: BenchRequest, output_tokens: int, device: str, streamer=None) -> dict:
    import torch

    started = time.perf_counter()
    text = processor.apply_chat_template(audio_question(request.instruction), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[request.samples], sampling_rate=SAMPLE_RATE, return_tensors="pt").to(device)
    streamer = streamer or _FirstToken()
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=output_tokens, min_new_tokens=output_tokens,
                             streamer=streamer)
    done = time.perf_counter()
    return {"ttft_s": (streamer.at or done) - started, "latency_s": done - started,
            "output_tokens": out.shape[1] - inputs["input_ids"].shape[1], "audio_s": request.seconds}
