"""Command line: `qwen2-audio-server serve|pull|bench|tiny-model` (also `python -m server`)."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import CliApp

from server.config import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="qwen2-audio-server", description="OpenAI-compatible server for Qwen2-Audio.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="start the HTTP server (see `serve --help`)", add_help=False)
    commands.add_parser("bench", help="benchmark against the recipe and transformers serve (see `bench --help`)",
                        add_help=False)
    pull = commands.add_parser("pull", help="download a model into the Hugging Face cache, for serving offline")
    pull.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"hub id (default: {DEFAULT_MODEL})")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    tiny = commands.add_parser("tiny-model", help="write a random-weight Qwen2-Audio of the real architecture")
    tiny.add_argument("out_dir", help="folder to write (a hub-like snapshot that `serve --model` loads)")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed")
    tiny.add_argument("--layout", choices=["instruct", "base"], default="instruct",
                      help="instruct: with a chat template, as Qwen2-Audio-7B-Instruct; base: without, as Qwen2-Audio-7B")
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    if argv[:1] == ["bench"]:
        from server.bench.run import main as bench

        return bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "pull":
        return pull_model(args.model, args.revision)
    if args.command == "tiny-model":
        return tiny_model(args.out_dir, args.seed, args.layout)
    return 2


def serve(argv: list[str]) -> int:
    import uvicorn

    from server.app import create_app, load
    from server.config import Settings
    from server.request_context import configure_logging
    from server.runner.loader import ModelLoadError

    try:
        settings = CliApp.run(Settings, cli_args=argv)
    except ValidationError as exc:
        print(f"qwen2-audio-server serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler found at start:
    # make that handler a clean exit, so `docker stop` and Kubernetes see status 0. Set before the (minutes long)
    # model load too: as a container's PID 1 the process would otherwise ignore SIGTERM until it is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        model = load(settings)  # before binding the port, so a bad --model fails at once and clearly
    except ModelLoadError as exc:
        logging.getLogger("server").error("%s", exc)
        return 1
    uvicorn.run(create_app(settings, model), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=settings.shutdown_grace_s or None)
    return 0


def pull_model(model: str, revision: str | None) -> int:
    from server.pull import PullError, pull, snapshot_size

    if Path(model).is_dir():
        print(f"{model} is a local folder: serve loads it as it is (--model {model}); nothing to pull")
        return 0
    try:
        path, checked = pull(model, revision)
    except PullError as exc:
        print(f"qwen2-audio-server pull: {exc}", file=sys.stderr)
        return 1
    how = "is in the Hugging Face cache" if checked else "is in the Hugging Face cache (HF_HUB_OFFLINE is set: not checked for updates)"
    print(f"{model} {how}: {path} ({snapshot_size(path) / 1e9:.2f} GB). "
          f"Serve it without network: HF_HUB_OFFLINE=1 qwen2-audio-server serve --model {model}")
    return 0


def tiny_model(out_dir: str, seed: int, layout: str = "instruct") -> int:
    from server.request_context import configure_logging
    from server.tiny_model import write_tiny_model

    configure_logging("info")

    path = write_tiny_model(out_dir, seed=seed, layout=layout)
    print(f"wrote a random-weight Qwen2-Audio to {path}; serve it with: qwen2-audio-server serve --model {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
