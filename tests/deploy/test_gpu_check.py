"""scripts/gpu-check runs through on the CPU (its CUDA parts skipped): the run a GPU machine gets is not its
first. The dry run uses the tiny model and a small workload; every phase must pass and leave its files, and every
package the project's code imports on the way must be one the GPU machine has or is carried to it."""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_lock", ROOT / "scripts" / "gpu_lock.py")
gpu_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_lock)
PHASES = ("model", "gpu-tests", "roofline", "bench", "memory", "realtime", "long-audio")


def test_the_gpu_check_dry_run_passes_every_phase_and_leaves_its_results(tmp_path):
    out, work, imports = tmp_path / "out", tmp_path / "work", tmp_path / "imports"
    imports.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(work),
           "GPU_CHECK_MODEL_DIR": str(tmp_path / "model"), "QWEN2_AUDIO_IMPORTS_DIR": str(imports),
           "PYTHONPATH": str(ROOT / "tests" / "deploy" / "import_audit")}
    run = subprocess.run([str(ROOT / "scripts" / "gpu-check")], env=env, capture_output=True, text=True, timeout=900)
    summary = (out / "gpu-check.md").read_text()
    assert run.returncode == 0, summary + run.stdout[-3000:] + run.stderr[-3000:]
    for phase in PHASES:
        assert f"- {phase}: exit 0 after" in summary
    assert sorted(p.name for p in out.iterdir()) == [  # within the 8 files the device tool returns (+ gpu-tests.jsonl)
        "bench.json", "gpu-check.md", "gpu-tests.xml", "long_audio.json", "memory.json", "realtime.json",
        "roofline.json"]
    bench = json.loads((out / "bench.json").read_text())
    systems = {row["system"] for row in bench["results"]}
    assert systems == {"recipe", "qwen2-audio-server", "qwen2-audio-server (--no-enforce-eager)"}
    assert all(row["requests"] == 8 for row in bench["results"] if row["system"] != "recipe")
    roofline = json.loads((out / "roofline.json").read_text())
    assert [row["mode"] for row in roofline["results"]] == ["eager", "static step"]  # no graphs without CUDA
    assert all(row["tokens_per_s"] > 0 for row in roofline["results"])
    assert [row["sessions"] for row in json.loads((out / "realtime.json").read_text())["results"]] == [1, 2]
    assert json.loads((out / "long_audio.json").read_text())[0]["segments"] > 0

    imported = {name for path in imports.iterdir() for name in path.read_text().split()}
    assert {"fastapi", "torch", "transformers", "websockets", "httpx"} <= imported  # every phase was seen
    assert _missing_on_the_gpu_machine(imported) == {}


def _missing_on_the_gpu_machine(modules: set[str]) -> dict[str, str]:
    """module -> its distribution, for each module neither the image (scripts/gpu-image.txt) nor the carried wheels
    (scripts/gpu-check.lock) hold."""
    there = gpu_lock.image_names() | {gpu_lock.normalize(pin.split("==")[0]) for pin in gpu_lock.lock_section("carried")}
    owners = importlib.metadata.packages_distributions()
    missing = {}
    for module in modules - set(sys.stdlib_module_names) - {"server", "tests"}:
        distributions = {gpu_lock.normalize(d) for d in owners.get(module, [module])}
        if not distributions & there:
            missing[module] = ", ".join(sorted(distributions))
    return missing


def test_the_lock_was_derived_from_the_requirements_and_image_as_they_are():
    assert gpu_lock.lock_digest() == gpu_lock.inputs_digest(), (
        "pyproject.toml's requirements, scripts/gpu-image.txt or docker/constraints.txt changed since "
        "scripts/gpu-check.lock was derived: run scripts/gpu-wheels --derive, then scripts/gpu-image")


def test_only_what_the_image_lacks_is_carried_and_its_transformers_is_the_lowest_supported():
    """The lock's carried part only holds what the image lacks, and the transformers the image has is the lowest
    this server supports (pyproject.toml), which scripts/test runs the model-side tests on."""
    carried = {gpu_lock.normalize(pin.split("==")[0]) for pin in gpu_lock.lock_section("carried")}
    assert not carried & gpu_lock.image_names()
    assert {"fastapi", "uvicorn", "av", "websockets", "pytest-asyncio"} <= carried
    image = dict(pin.split("==") for pin in gpu_lock.lock_section("image"))
    requirement = next(r for r in gpu_lock.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                       ["dependencies"] if r.startswith("transformers"))
    assert f">={image['transformers'].removesuffix('.0')}," in requirement
