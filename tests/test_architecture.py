"""The layers keep to their rooms, checked over every file of server/, recursively: a request flows one way, HTTP ->
api -> serving -> engine -> runner, with the OpenAI schema (protocol) and audio beneath; only the model side
(server.runner) imports torch or transformers, and nothing above the engine reaches the model runner."""

import ast
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"

# What each package may not import (server.<name>): the arrows only point down.
FORBIDDEN = {
    "api": {"runner"},
    "serving": {"api", "runner"},
    "engine": {"api", "serving", "protocol", "runner", "audio"},
    "runner": {"api", "serving", "protocol"},
    "protocol": {"api", "serving", "engine", "runner", "audio"},
    "audio": {"api", "serving", "engine", "runner", "protocol"},
}
# Who may import the HTTP edge: the app that mounts it (and the edge itself).
EDGE_USERS = {"app.py"}

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
    packages = ["server.engine", "server.serving", "server.api", "server.protocol", "server.audio"]
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
    above = [*(SERVER / "api").rglob("*.py"), *(SERVER / "serving").rglob("*.py"), SERVER / "app.py"]
    reaching = [path.name for path in above if "server.runner" in path.read_text().replace("server.runner.loader", "")]
    assert reaching == []


def test_every_file_of_the_server_is_small():
    sizes = {str(path.relative_to(SERVER)): len(path.read_text().splitlines()) for path in SERVER.rglob("*.py")}
    assert max(sizes.values()) <= 300, {name: lines for name, lines in sizes.items() if lines > 300}


def _imports(path: Path) -> set[str]:
    """The server packages (or top-level modules) a file imports, at any depth of the file: `server.x.y` -> `x`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("server.") and name.count(".") >= 1}


def test_a_request_flows_one_way_in_every_file():
    wrong = {}
    for path in SERVER.rglob("*.py"):
        package = path.relative_to(SERVER).parts[0]
        if package.endswith(".py"):
            continue  # the wiring at the top (app, config, metrics, CLI) may use every layer
        if bad := _imports(path) & FORBIDDEN.get(package, set()):
            wrong[str(path.relative_to(SERVER))] = sorted(bad)
    assert wrong == {}


def test_only_the_app_mounts_the_http_edge():
    users = {str(path.relative_to(SERVER)) for path in SERVER.rglob("*.py")
             if "api" in _imports(path) and path.relative_to(SERVER).parts[0] != "api"}
    assert users <= EDGE_USERS, users


def test_the_rules_cover_every_package_and_reach_nested_folders():
    packages = {path.name for path in SERVER.iterdir() if (path / "__init__.py").exists()}
    assert packages - {"bench", "playground"} == set(FORBIDDEN)
    nested = {str(path.relative_to(SERVER)) for path in SERVER.rglob("*.py") if len(path.relative_to(SERVER).parts) > 2}
    assert "serving/realtime/session.py" in nested
