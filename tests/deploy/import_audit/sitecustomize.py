"""Loaded by every Python process of a gpu-check dry run (tests/deploy/test_gpu_check.py puts this folder on
PYTHONPATH): records each top-level module that the project's own code (server/, tests/) imports, one file per
process in $QWEN2_AUDIO_IMPORTS_DIR, so the test can check each against what a GPU machine has.

What those packages import in turn is not recorded here: scripts/gpu-check.lock resolves their requirements."""

import atexit
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
_OURS = (str(_ROOT / "server") + os.sep, str(_ROOT / "tests") + os.sep)
_imported: set[str] = set()


class _Recorder:
    """First on sys.meta_path: sees each module's first import, finds nothing, so the real finders go on."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is None:  # a top-level module
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(_OURS):
                _imported.add(name)
        return None


def _write() -> None:
    Path(os.environ["QWEN2_AUDIO_IMPORTS_DIR"], f"{os.getpid()}.txt").write_text("\n".join(sorted(_imported)))


if os.environ.get("QWEN2_AUDIO_IMPORTS_DIR"):
    sys.meta_path.insert(0, _Recorder())
    atexit.register(_write)
