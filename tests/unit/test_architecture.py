"""The layers keep to their rooms: only the model side (server.runner) imports torch or transformers, and nothing
above the engine reaches the model runner."""

import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"

# Imports every module of the packages with torch and transformers made unimportable.
_IMPORT_ALL_BLOCKED = """
import importlib, importlib.abc, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Blocked())
for package in sys.argv[1:]:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
        print(info.name)
"""


def test_the_engine_serving_api_and_audio_import_without_torch_or_transformers():
    packages = ["server.engine", "server.serving", "server.api", "server.audio"]
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL_BLOCKED, *packages], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    assert {"server.engine.engine", "server.engine.scheduler", "server.engine.sequence", "server.serving.chat",
            "server.serving.transcription", "server.api.routes"} <= set(imported)


def test_the_block_does_stop_torch():
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL_BLOCKED, "server.runner"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_only_the_engine_holds_the_model_runner():
    """Serving and the API see the engine and the model's description (ModelInfo), never the runner."""
    above = [*(SERVER / "api").glob("*.py"), *(SERVER / "serving").glob("*.py"), SERVER / "app.py"]
    reaching = [path.name for path in above if "runner" in path.read_text().replace("server.runner.loader", "")]
    assert reaching == []


def test_every_file_of_the_server_is_small():
    sizes = {str(path.relative_to(SERVER)): len(path.read_text().splitlines()) for path in SERVER.rglob("*.py")}
    assert max(sizes.values()) <= 300, {name: lines for name, lines in sizes.items() if lines > 300}
