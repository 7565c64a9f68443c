"""scripts/gpu-check.lock: what scripts/gpu-check uses on a lent GPU machine, split into what the machine's image has
and what is carried to it as wheels. Derived, never kept by hand:

    python scripts/gpu_lock.py derive    resolve pyproject.toml (with its gpu-check extra) for CPython 3.12 on
                                         manylinux x86-64 with uv, the image's packages (scripts/gpu-image.txt) at
                                         their recorded versions and everything else as docker/constraints.txt pins
                                         it (what CI and the Docker images run), and write the lock
    python scripts/gpu_lock.py carried   the [carried] pins (scripts/gpu-wheels downloads them)
    python scripts/gpu_lock.py image     the [image] pins (scripts/gpu-image installs them to emulate the image)

tests/deploy/test_gpu_check.py checks that the lock was derived from the inputs as they are now, and that every
distribution a gpu-check phase imports is in it.
"""

import hashlib
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "scripts" / "gpu-image.txt"
LOCK = ROOT / "scripts" / "gpu-check.lock"
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
EXTRA = "gpu-check"


def normalize(name: str) -> str:
    """PEP 503: the name pip and uv compare."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")]


def image_names() -> set[str]:
    lines = [line.strip() for line in IMAGE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {normalize(line.split("==")[0]) for line in lines}


def inputs_digest() -> str:
    """What the lock depends on: the project's requirements and the gpu-check extra, the image, CI's pins."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    parts = [*project["dependencies"], *project["optional-dependencies"][EXTRA], *_pins(IMAGE),
             *sorted(image_names()), *_pins(CONSTRAINTS)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def lock_section(section: str) -> list[str]:
    """The pins of one part of the lock: 'carried' or 'image'."""
    pins, current = [], None
    for line in LOCK.read_text().splitlines():
        if line.startswith("# ["):
            current = line[3:].rstrip("]")
        elif "==" in line and current == section:
            pins.append(line.strip())
    return pins


def lock_digest() -> str:
    return next(line.split(":", 1)[1].strip() for line in LOCK.read_text().splitlines()
                if line.startswith("# inputs:"))


def derive() -> None:
    image = image_names()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        outside = [pin for pin in _pins(CONSTRAINTS) if normalize(pin.split("==")[0]) not in image]
        constraints.write_text("\n".join([*_pins(IMAGE), *outside]) + "\n")
        resolved = Path(tmp) / "resolved.txt"
        subprocess.run([sys.executable, "-m", "uv", "pip", "compile", "-q", str(PYPROJECT), "--extra", EXTRA,
                        "-c", str(constraints), "--python-version", "3.12", "--python-platform",
                        "x86_64-manylinux_2_28", "--no-header", "--no-annotate", "-o", str(resolved)], check=True)
        pins = sorted(_pins(resolved), key=str.lower)
    carried = [pin for pin in pins if normalize(pin.split("==")[0]) not in image]
    from_image = [pin for pin in pins if normalize(pin.split("==")[0]) in image]
    LOCK.write_text("\n".join([
        "# Derived by `scripts/gpu-wheels --derive` (scripts/gpu_lock.py): never edit by hand. What scripts/gpu-check",
        "# uses on a lent GPU machine: pyproject.toml with its gpu-check extra, for CPython 3.12 on manylinux x86-64,",
        "# split into what the machine's image has (scripts/gpu-image.txt) and what is carried to it as wheels.",
        f"# inputs: {inputs_digest()}",
        "# [carried]", *carried,
        "# [image]", *from_image,
    ]) + "\n")
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(carried)} carried, {len(from_image)} from the image")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "derive":
        derive()
    elif command in ("carried", "image"):
        print("\n".join(lock_section(command)))
    else:
        sys.exit(__doc__)
