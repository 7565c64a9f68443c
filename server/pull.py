"""`qwen2-audio-server pull MODEL`: put a checkpoint into the Hugging Face cache ahead of time.

A container, a cluster node or an air-gapped machine then starts `serve` with HF_HUB_OFFLINE=1 and loads the model
from the cache through the same `from_pretrained(hub id)` calls, without touching the network.
"""

from pathlib import Path

# What serving reads: config, safetensors weights and their index, tokenizer, processor and chat templates (also
# under additional_chat_templates/: fnmatch's * crosses "/"). Not the other weight formats some repos ship beside
# the safetensors (.bin, .pt, .h5, .msgpack, .onnx, .gguf), nor images and docs.
SERVING_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]


class PullError(RuntimeError):
    """The model could not be put in the cache; the message says why and what to do, in one sentence."""


def pull(model: str, revision: str | None = None) -> tuple[Path, bool]:
    """Download what serving needs of `model` into the cache. Returns the snapshot folder and whether the Hub was
    consulted (False: offline mode, the cached snapshot was taken as it is). tqdm shows one bar per file."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError

    offline = constants.is_offline_mode()
    try:
        path = Path(snapshot_download(model, revision=revision, allow_patterns=SERVING_PATTERNS))
    except HFValidationError as exc:
        raise PullError(f"{model!r} is not a Hugging Face hub id (org/name): {exc}") from exc
    except Exception as exc:  # every hub failure becomes one sentence; its type picks which
        raise PullError(_advice(model, revision, offline, exc)) from exc
    _check_servable(model, path)
    return path, not offline


def _advice(model: str, revision: str | None, offline: bool, exc: Exception) -> str:
    from huggingface_hub import constants, errors
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # newer releases tell a partial snapshot apart
    cache = constants.HF_HUB_CACHE
    if isinstance(exc, GatedRepoError):
        return f"{model} is gated: accept its terms on huggingface.co, then log in (`hf auth login` or HF_TOKEN)"
    if isinstance(exc, RepositoryNotFoundError):
        return (f"{model} is not a model repository on the Hugging Face Hub (or it is private and no valid token "
                "was given: `hf auth login` or HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return f"{model} has no revision {revision!r} on the Hugging Face Hub"
    if isinstance(exc, incomplete):
        return f"only part of {model} is in the cache {cache}, and the Hub cannot be reached to finish it: run pull again with network"
    if isinstance(exc, LocalEntryNotFoundError) and offline:
        return (f"{model} is not in the Hugging Face cache {cache}, and HF_HUB_OFFLINE is set: run pull where the "
                "Hub is reachable (or unset HF_HUB_OFFLINE), then copy or mount that cache here")
    if isinstance(exc, LocalEntryNotFoundError):
        return (f"could not reach the Hugging Face Hub ({constants.ENDPOINT}) and {model} is not in the cache "
                f"{cache}: check the network or proxy (HTTPS_PROXY), or pull on a machine with network and copy the cache")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        return f"the Hugging Face Hub answered {status} for {model}; try again later"
    if isinstance(exc, OSError):
        return f"could not write {model} to the cache {cache}: {exc.strerror or exc}"
    return f"could not download {model}: {type(exc).__name__}: {exc}"


def _check_servable(model: str, path: Path) -> None:
    """A snapshot serve can load has a config and safetensors weights (this server loads no other format)."""
    if not (path / "config.json").is_file():
        raise PullError(f"{model} has no config.json at {path}: it is not a transformers checkpoint")
    if not any(path.glob("*.safetensors")):
        raise PullError(f"{model} has no .safetensors weights at {path}; this server loads safetensors checkpoints")


def snapshot_size(path: Path) -> int:
    """Bytes of the snapshot's files (symlinks into the cache's blobs followed)."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
