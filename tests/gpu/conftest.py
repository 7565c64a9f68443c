"""tests/gpu: the CUDA path, run by scripts/gpu-check on a lent GPU machine; skipped where torch sees no GPU.

The model is QWEN2_AUDIO_GPU_MODEL (scripts/gpu-check writes the full-size random bf16 7B there) or, without it,
the tiny model. Figures the tests measure (agreement rates) go to QWEN2_AUDIO_GPU_REPORT as JSON lines.
"""

import json
import os

import pytest
import torch

from server.runner.loader import LoadConfig, load_model


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device: tests/gpu runs on a GPU machine (scripts/gpu-check)")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_model_dir(tiny_model_dir) -> str:
    return os.environ.get("QWEN2_AUDIO_GPU_MODEL") or tiny_model_dir


@pytest.fixture(scope="session")
def gpu_model(gpu_model_dir):
    return load_model(LoadConfig(gpu_model_dir, device="cuda", dtype="bfloat16"))


def report(name: str, **figures) -> None:
    """One measured figure set, for scripts/gpu-check's summary (and the test log)."""
    line = json.dumps({"test": name, **figures})
    print(line)
    if path := os.environ.get("QWEN2_AUDIO_GPU_REPORT"):
        with open(path, "a") as out:
            out.write(line + "\n")
