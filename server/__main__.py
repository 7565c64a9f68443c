"""Command line: `qwen2-audio-server serve|tiny-model` (also `python -m server`)."""

import argparse
import logging
import signal
import sys

from pydantic import ValidationError
from pydantic_settings import CliApp


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="qwen2-audio-server", description="OpenAI-compatible server for Qwen2-Audio.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="start the HTTP server (see `serve --help`)", add_help=False)
    commands.add_parser("bench", help="benchmark against the recipe and transformers serve (see `bench --help`)",
                        add_help=False)
    tiny = commands.add_parser("tiny-model", help="write a random-weight Qwen2-Audio of the real architecture")
    tiny.add_argument("out_dir", help="folder to write (a hub-like snapshot that `serve --model` loads)")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed")
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    if argv[:1] == ["bench"]:
        from server.bench.run import main as bench

        return bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "tiny-model":
        return tiny_model(args.out_dir, args.seed)
    return 2


def serve(argv: list[str]) -> int:
    import uvicorn

    from server.app import build_runner, create_app
    from server.config import Settings
    from server.engine.model_runner import ModelLoadError
    from server.request_context import configure_logging

    try:
        settings = CliApp.run(Settings, cli_args=argv)
    except ValidationError as exc:
        print(f"qwen2-audio-server serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        runner = build_runner(settings)  # before binding the port, so a bad --model fails at once and clearly
    except ModelLoadError as exc:
        logging.getLogger("server").error("%s", exc)
        return 1
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler found at start:
    # make that handler a clean exit, so `docker stop` and Kubernetes see status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(settings, runner), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=settings.shutdown_grace_s or None)
    return 0


def tiny_model(out_dir: str, seed: int) -> int:
    from server.request_context import configure_logging
    from server.tiny_model import write_tiny_model

    configure_logging("info")

    path = write_tiny_model(out_dir, seed=seed)
    print(f"wrote a random-weight Qwen2-Audio to {path}; serve it with: qwen2-audio-server serve --model {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
