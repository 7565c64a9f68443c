"""The Dockerfile: hadolint, what the image promises (non-root, 0.0.0.0, /ready health, pinned torch), and the CPU
variant's install commands run verbatim in a clean virtual environment (no Docker engine runs here)."""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import Settings
from tests.deploy.dockerfile import Stage, chain, run_command, stages

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _tool(name: str) -> str:
    """A console script of the test extra: next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extra (scripts/setup test)"
    return found


def _all(stages: list[Stage], keyword: str) -> list[str]:
    return [rest for stage in stages for kw, rest in stage.instructions if kw == keyword]


def _env(stages: list[Stage]) -> dict[str, str]:
    pairs = " ".join(_all(stages, "ENV"))
    return dict(re.findall(r"(\w+)=(\S+)", pairs))


def test_hadolint_finds_nothing():
    result = subprocess.run([_tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_the_image_serves_as_a_non_root_user_on_all_interfaces(variant):
    stages = chain(DOCKERFILE, "server", {"VARIANT": variant})
    user = _all(stages, "USER")[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0  # numeric: runAsNonRoot can verify it
    env = _env(stages)
    assert env["QWEN2_AUDIO_HOST"] == "0.0.0.0"
    assert env["QWEN2_AUDIO_PORT"] in _all(stages, "EXPOSE")
    # configuration is QWEN2_AUDIO_* variables only: each one the image sets must be a real setting
    assert {k for k in env if k.startswith("QWEN2_AUDIO_")} <= {"QWEN2_AUDIO_" + f.upper() for f in Settings.model_fields}
    assert _all(stages, "ENTRYPOINT") == ['["qwen2-audio-server"]'] and _all(stages, "CMD") == ['["serve"]']


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_the_hugging_face_cache_is_on_a_volume(variant):
    stages = chain(DOCKERFILE, "server", {"VARIANT": variant})
    volumes = [v.strip('[]" ') for v in _all(stages, "VOLUME")]
    hf_home = _env(stages)["HF_HOME"]
    assert any(hf_home.startswith(volume.rstrip("/") + "/") for volume in volumes), (hf_home, volumes)
    # the folder exists and belongs to the server's user, so a fresh named volume is created writable for it
    setup = " ".join(_all(stages, "RUN"))
    assert f"mkdir -p {hf_home}" in setup and "chown -R app:app /cache" in setup


def test_the_healthcheck_asks_for_readiness():
    stages = chain(DOCKERFILE, "server", {"VARIANT": "gpu"})
    (healthcheck,) = _all(stages, "HEALTHCHECK")
    script = re.search(r'"(/opt/qwen2-audio-server/docker/[\w.]+)"', healthcheck).group(1)
    source = ROOT / "docker" / Path(script).name
    assert f"COPY docker/{source.name} docker/" in [f"COPY {c}" for c in _all(stages, "COPY")]
    assert "/ready" in source.read_text()
    assert "--start-period=30m" in healthcheck  # a first start downloads 16 GB


def test_both_variants_install_torch_2_13_0_and_only_the_cpu_one_from_the_cpu_index():
    gpu = [run_command(r) for r in _all(chain(DOCKERFILE, "server", {"VARIANT": "gpu"}), "RUN") if "torch==" in r]
    cpu = [run_command(r) for r in _all(chain(DOCKERFILE, "server", {"VARIANT": "cpu"}), "RUN") if "torch==" in r]
    assert gpu == ["pip install -c docker/constraints.txt torch==2.13.0"]
    assert cpu == ["pip install -c docker/constraints.txt --no-deps --index-url https://download.pytorch.org/whl/cpu "
                   "torch==2.13.0"]
    assert chain(DOCKERFILE, "server", {"VARIANT": "gpu"})[0].base.startswith("nvidia/cuda:13.0.")  # torch's CUDA
    assert "torch==2.13.0" in (ROOT / "docker" / "constraints.txt").read_text().splitlines()


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    ignored = False
    parents = [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts) + 1)]
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if any(_matches(parent, pattern) for parent in parents):
            ignored = not negate
    return ignored


def _matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):  # at any depth
        return fnmatch.fnmatch(Path(path).name, pattern[3:]) or fnmatch.fnmatch(path, pattern[3:])
    return fnmatch.fnmatch(path, pattern)


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_heavy():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, every_stage = stages(DOCKERFILE)
    sources = [src for copy in _all(every_stage, "COPY") for src in copy.split()[:-1]]
    for source in sources:
        for file in [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py"):
            relative = str(file.relative_to(ROOT))
            if "__pycache__" not in relative:
                assert not _dockerignored(relative, patterns), f"{relative} is copied but .dockerignore leaves it out"
    for heavy in [".venv/bin/python", ".git/HEAD", "tests/conftest.py", "server/__pycache__/app.cpython-311.pyc",
                  "bench-results/bench.json", "compose.yaml"]:
        assert _dockerignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


@pytest.mark.slow
def test_the_cpu_image_install_commands_work_in_a_clean_virtual_environment(tmp_path):
    """Every pip command of the CPU image's stages, verbatim, in a fresh venv laid out like the image."""
    stages = chain(DOCKERFILE, "server", {"VARIANT": "cpu"})
    venv, image_root = tmp_path / "venv", tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PIP_RETRIES": "0",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    workdir, ran = image_root, []
    for keyword, rest in [i for stage in stages for i in stage.instructions]:
        if keyword == "WORKDIR":
            workdir = image_root / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = rest.split()
            for source in sources:
                target = workdir / dest / Path(source).name if dest.endswith("/") and (ROOT / source).is_file() \
                    else workdir / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"),
                                    dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(ROOT / source, target)
        elif keyword == "RUN" and run_command(rest).startswith("pip "):
            result = subprocess.run(["bash", "-c", run_command(rest)], cwd=workdir, env=env, capture_output=True,
                                    text=True, timeout=1200)
            assert result.returncode == 0, f"{run_command(rest)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            ran.append(run_command(rest))
    assert len(ran) == 2 and "--index-url https://download.pytorch.org/whl/cpu" in ran[0], ran

    cli = subprocess.run([str(venv / "bin" / "qwen2-audio-server"), "--help"], capture_output=True, text=True)
    assert cli.returncode == 0 and "pull" in cli.stdout and "serve" in cli.stdout, cli.stderr
    # the speaker encoder is package data: the installed (not editable) package loads it
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import server.app, server.runner.model_runner, "
                               "server.pull; from server.audio.diarization import SpeakerEncoder; SpeakerEncoder(); "
                               "import torch; print(torch.__version__)"], capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0 and imported.stdout.startswith("2.13.0"), imported.stderr
    # the lock is complete: every installed distribution is pinned in it, at the version installed
    locked = dict(_pins((ROOT / "docker" / "constraints.txt").read_text()))
    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True,
                            text=True, check=True).stdout
    for name, version in _pins(freeze):
        if name not in ("pip", "qwen2-audio-server"):
            assert locked.get(name) == version.split("+")[0], f"{name}=={version} is installed but locked as {locked.get(name)}"


def _pins(text: str) -> list[tuple[str, str]]:
    pins = []
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins.append((re.sub(r"[-_.]+", "-", name).lower(), version.strip()))
    return pins
