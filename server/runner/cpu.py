"""The CPU path: linear layers through oneDNN with their weights packed once, at load, where that measures faster;
and the threads each part of a step gets (step_threads, step_settings).

torch's default CPU path for nn.Linear (MKL's sgemm) lays the weight matrix out anew on every call; oneDNN
(which torch ships) keeps the weight in its own blocked layout, so a call is the multiplication alone.
Measured on the bench's small preset (2-core AMD EPYC, float32, a process doing nothing else): a prefill of 8
prompts of 208 tokens went from 0.58 to 0.32 s, one of 1 prompt from 75 to 39 ms, a one-row decode step from 7.5 to
5.1 ms, the audio encoder on 16 clips of 5 s from 0.42 to 0.30 s. Another CPU or torch may differ, so at the first
start on a machine the loader times both kernels on the model's largest layer and on its output projection, at
decode and prefill shapes, and packs each group only if packing wins (the ratios are logged and kept). The
arithmetic stays float32; only the order of the additions inside a dot product changes, and the tests check that
greedy answers stay token-identical to plain `model.generate`. Memory: the packed copies replace the layers'
weights, but the checkpoint pages they were read from stay mapped while the rest of the file is in use (page cache
the kernel may reclaim), so RSS counts those weights twice: the small preset's idle server 584 -> 720 MiB.
"""

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from server.runner.step_settings import SettingsFile, cpu_name, fastest_runs, row_bucket
from server.runner.step_threads import StepThreads

logger = logging.getLogger(__name__)

# torch's own choice (physical cores, or OMP_NUM_THREADS), read before any runner changes it
THREADS_AT_START = torch.get_num_threads()
KERNEL_REPS = 5  # timed calls of each kernel per shape (after a warm-up), taken in turn; the fastest counts
PREFILL_ROWS = 256  # a prompt's positions: the shape a prefill gives the layers' linears
MEASUREMENT = 2  # part of the kept settings' key: a change to how they are measured invalidates the old ones


class OneDnnLinear(torch.nn.Module):
    """nn.Linear's forward over a weight packed in oneDNN's own layout; input and output stay ordinary tensors
    (converting them to oneDNN tensors and back cost a fifth of the audio encoder's time)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the packing and the matmul that torch.compile's CPU backend uses for frozen weights
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()),
                             persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def can_pack(device: torch.device, dtype: torch.dtype, quantized: bool) -> bool:
    """Float32 on the CPU only: a quantizer's own linear layers stay as they are, and on a GPU cuBLAS needs none of this."""
    return (device.type == "cpu" and dtype == torch.float32 and not quantized and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


@torch.no_grad()
def pack_linears(model: torch.nn.Module, layers: bool = True, projection: bool = True) -> int:
    """Swap plain nn.Linear layers of `model` for OneDnnLinear ones: those of the encoder and the language model
    (`layers`) and the output projection (`projection`); returns how many were swapped.

    A layer that shares its weight with the token embeddings (tied lm_head) stays: packing it would keep the
    matrix twice.
    """
    embeddings = model.get_input_embeddings().weight
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            wanted = projection if child is model.lm_head else layers
            if wanted and type(child) is torch.nn.Linear and child.weight is not embeddings:
                setattr(module, name, OneDnnLinear(child))
                swapped += 1
    return swapped


Kernel = Callable[[int], object]  # runs a linear layer's kernel once on a batch of this many rows


def kernel_ratios(groups: dict[str, tuple[Kernel, Kernel, tuple[int, ...]]], reps: int = KERNEL_REPS,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """For each group (plain kernel, packed kernel, row counts): the packed kernel's fastest time over the plain
    one's, geometric mean over the row counts (each count weighs alike, whatever its absolute time). Below 1: pack."""
    ratios = {}
    for group, (plain, packed, shapes) in groups.items():
        logs = []
        for rows in shapes:
            times = fastest_runs({"plain": partial(plain, rows), "packed": partial(packed, rows)}, reps, clock)
            logs.append(math.log(times["packed"] / times["plain"]))
        ratios[group] = math.exp(sum(logs) / len(logs))
    return ratios


@torch.inference_mode()
def measure_packing(model, decode_rows: int) -> dict[str, float]:
    """kernel_ratios of this model: "layers" is its largest linear layer of the language model (1 and `decode_rows`
    rows, and a prefill's PREFILL_ROWS), "projection" its lm_head (1 and `decode_rows` rows; a prefill projects one
    row per prompt), which is left packed when packing wins. A tied lm_head is never packed, so it is not measured. On one thread: what is compared is the
    kernels, not how their threads wait for each other on a busy machine (one that waits for a core another
    process holds costs a scheduler slice, milliseconds), which the thread counts then settle part by part."""
    body = max((m for m in model.model.language_model.modules() if type(m) is torch.nn.Linear),
               key=lambda m: m.weight.numel())
    groups = {"layers": _kernels(body, OneDnnLinear(body), (1, decode_rows, PREFILL_ROWS))}
    projection = None
    if model.lm_head.weight is not model.get_input_embeddings().weight:
        projection = OneDnnLinear(model.lm_head)  # kept if it wins: the 7B's is 2.5 GB, not to be made twice
        groups["projection"] = _kernels(model.lm_head, projection, (1, decode_rows))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = kernel_ratios(groups)
    finally:
        torch.set_num_threads(threads)
    if projection is not None and ratios["projection"] <= 1.0:
        model.lm_head = projection
    return ratios


def _kernels(linear: torch.nn.Linear, packed: OneDnnLinear, shapes: tuple[int, ...]) -> tuple[Kernel, Kernel,
                                                                                               tuple[int, ...]]:
    inputs = {rows: torch.randn(rows, linear.in_features, dtype=linear.weight.dtype) for rows in set(shapes)}
    return (lambda rows: linear(inputs[rows])), (lambda rows: packed(inputs[rows])), tuple(dict.fromkeys(shapes))


def prepare_cpu(model, dtype: torch.dtype, quantization: str | None, max_batch_size: int, cpu_threads: int,
                settings_dir: Path | None) -> StepThreads:
    """The CPU path of a loaded model: its linear layers packed where packing measures faster, and the threads of
    each part of a step (measured over the server's first steps, or `cpu_threads` for all).

    The kernels' timings are kept in a file under `settings_dir` for this model's shape on this CPU (they take
    seconds on a large model and do not change with the machine's load); the thread counts are measured anew at
    every start, since the right count depends on what else runs on the machine, and written to the same file as
    they settle, a record for the bench."""
    cores = cpu_threads or THREADS_AT_START
    settings = SettingsFile(settings_dir, settings_key(model.config, dtype, quantization, cores))
    if can_pack(torch.device("cpu"), dtype, quantization is not None):
        ratios = settings.values.get("packed_over_plain")
        kept = ratios is not None
        if not kept:
            ratios = settings.values["packed_over_plain"] = measure_packing(model, row_bucket(max_batch_size))
        pack_linears(model, layers=ratios["layers"] <= 1.0, projection=ratios.get("projection", 2.0) <= 1.0)
        packed = sum(type(m) is OneDnnLinear for m in model.modules())
        logger.info("%d linear layers packed for oneDNN (packed time over plain, %s: %s)", packed,
                    f"kept in {settings.path}" if kept else "measured now",
                    ", ".join(f"{group} {ratio:.2f}x" for group, ratio in ratios.items()))
    threads = StepThreads(torch.device("cpu"), cores, settings, fixed=cpu_threads or None)
    settings.save()
    logger.info("CPU step threads: %s", f"{cpu_threads} for every part (--cpu-threads)" if cpu_threads else
                "each part's measured over its first steps (logged as each settles)")
    return threads


def settings_key(config, dtype: torch.dtype, quantization: str | None, cores: int) -> dict:
    """What the measured settings depend on: the model's shapes (its Qwen2AudioConfig), its dtype and quantization,
    the CPU, the threads torch may use and torch itself."""
    text, audio = config.text_config, config.audio_config
    return {"text": [text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads,
                     text.num_key_value_heads, text.vocab_size],
            "audio": [audio.d_model, audio.encoder_layers, audio.encoder_ffn_dim],
            "dtype": str(dtype), "quantization": quantization, "cpu": cpu_name(), "cores": cores,
            "torch": torch.__version__, "method": MEASUREMENT}
