"""The docs stay true to the tree: the settings table is the one Settings writes, every document a file cites is
in the repository, the architecture diagram names every package, the README stays short, and CI runs the README's
test command."""

import re
import subprocess
from pathlib import Path

from server.config import Settings, settings_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def test_every_setting_is_in_the_configuration_table():
    table = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        flag, env = "--" + name.replace("_", "-"), "QWEN2_AUDIO_" + name.upper()
        assert f"| `{flag}` | `{env}` |" in table, f"{flag} is missing from docs/configuration.md"


def test_the_configuration_table_is_the_one_settings_writes():
    assert settings_table() in (DOCS / "configuration.md").read_text(), "run scripts/config-doc"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```bash\nscripts/test\n```" in readme and "\nscripts/test\n" in ci


def test_the_readme_is_short_and_docs_hold_the_rest():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300  # a five-minute read; docs/ holds the rest
    for name in ("api", "realtime", "configuration", "deployment", "performance", "gpu", "architecture", "qwen2-audio"):
        assert (DOCS / f"{name}.md").is_file(), name


_DOC_CITATION = re.compile(r"(?<![\w/.-])docs/[\w./-]*\w")  # a docs/ path anywhere, in code comments too
_MD_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)")  # [text](relative/path#anchor) in markdown
_PATH_IN_MD = re.compile(r"(?<![\w/.$-])(?:server|tests|scripts|docker|docs)/[\w./-]*\w")


def test_no_file_cites_a_document_the_repository_does_not_hold():
    missing = set()
    for path in _tracked():
        if path.suffix in (".png", ".json") and path.parent.name != "support":
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        where = path.relative_to(ROOT)
        cited = {(ROOT / found, found) for found in _DOC_CITATION.findall(text)}
        if path.suffix == ".md":
            cited |= {((path.parent / link).resolve(), link) for link in _MD_LINK.findall(text)}
            cited |= {(ROOT / found, found) for found in _PATH_IN_MD.findall(text)}
        missing |= {f"{where}: {name}" for target, name in cited if not target.exists()}
    assert not missing, sorted(missing)


def test_the_architecture_diagram_names_every_package():
    doc = (DOCS / "architecture.md").read_text()
    diagram = doc[doc.index("```mermaid"):doc.index("```", doc.index("```mermaid") + 3)]
    packages = {path.name for path in (ROOT / "server").iterdir() if (path / "__init__.py").exists()}
    named = set(re.findall(r"^\s*(?:\w+ --> )?(\w+)\[", diagram, flags=re.M)) | set(re.findall(r"--> (\w+)\[", diagram))
    named |= set(re.findall(r"-\.-> (\w+)\[", diagram))
    assert packages <= named, packages - named
    tree = doc[doc.index("## The tree"):doc.index("## The threads")]
    assert all(f"{package}/" in tree for package in packages), packages
