"""Just enough of a Dockerfile reader for the tests: stages, their instructions, and the chain a build arg picks."""

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str  # image or earlier stage, ${ARG}s still in it
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments and parser directives dropped."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the stages in order."""
    args, found = {}, []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            parts = re.split(r"\s+AS\s+", rest, flags=re.IGNORECASE)
            found.append(Stage(name=parts[1] if len(parts) > 1 else "", base=parts[0]))
        elif not found and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            found[-1].instructions.append((keyword, rest))
    return args, found


def chain(path: Path, target: str, build_args: dict[str, str]) -> list[Stage]:
    """The stages a build of `target` runs, root first, with `build_args` over the global ARG defaults."""
    args, all_stages = stages(path)
    args.update(build_args)
    by_name = {stage.name: stage for stage in all_stages}
    picked, name = [], target
    while name in by_name:
        stage = by_name[name]
        picked.append(stage)
        name = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)
    return picked[::-1]


def run_command(arguments: str) -> str:
    """A RUN's shell command without BuildKit's --mount/--network flags (they only shape the build sandbox)."""
    return re.sub(r"^(--\S+\s+)+", "", arguments)
