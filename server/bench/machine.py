"""What a figure was measured on: the CPU (or GPU), cores, torch and transformers, and the CPU step settings the
server chose (runner/step_settings.py), so that a figure is quoted with the line that makes it reproducible."""

import os


def describe(device: str) -> dict:
    import torch
    import transformers

    from server.runner.step_settings import cpu_name

    gpu = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "gpu": gpu}


def step_settings(model_dir: str, device: str, dtype: str, cpu_threads: int = 0) -> dict | None:
    """The CPU step settings a server on this machine keeps for this model (None on a GPU): packing and thread
    counts per shape, as far as they have settled."""
    import torch
    from transformers import AutoConfig

    from server.config import STEP_SETTINGS_DIR
    from server.runner.cpu import THREADS_AT_START, settings_key
    from server.runner.step_settings import SettingsFile

    if device == "cuda" or device == "auto" and torch.cuda.is_available():
        return None
    torch_dtype = {"auto": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                   "float32": torch.float32}[dtype]
    key = settings_key(AutoConfig.from_pretrained(model_dir), torch_dtype, None, cpu_threads or THREADS_AT_START)
    return SettingsFile(STEP_SETTINGS_DIR, key).values or None


def line(machine: dict, settings: dict | None = None) -> str:
    """One line for a table's caption: `AMD EPYC (family 25, model 17), 2 cores; torch 2.13.0, transformers 5.25.0`."""
    where = machine["gpu"] or f"{machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads)"
    text = f"{where}; torch {machine['torch']}, transformers {machine['transformers']}"
    if settings:
        text += f"; step settings {settings_text(settings)}"
    return text


def settings_text(settings: dict) -> str:
    """`threads prefill 2, layers@1 1, layers@16 2, projection@1 2, ...; packed/plain time layers 0.82x, ...`."""
    threads = ", ".join(f"{shape} {count}" for shape, count in sorted(settings.get("threads", {}).items(), key=_order))
    packing = ", ".join(f"{group} {ratio:.2f}x" for group, ratio in settings.get("packed_over_plain", {}).items())
    return "; ".join(part for part in (f"threads {threads}" if threads else "",
                                       f"packed/plain time {packing}" if packing else "") if part)


def _order(item: tuple[str, int]) -> tuple[int, str, int]:
    """The prefill first, then each part of a decode step by rows: layers, projection, sampling."""
    shape, _ = item
    part, _, rows = shape.partition("@")
    return ("prefill", "layers", "projection", "sampling").index(part), part, int(rows or 0)
