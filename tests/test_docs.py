"""The README documents every setting, and CI runs the README's test command."""

from pathlib import Path

from server.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        flag, env = "--" + name.replace("_", "-"), "QWEN2_AUDIO_" + name.upper()
        assert f"| `{flag}` | `{env}` |" in readme, f"{flag} is missing from the README's configuration table"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "```bash\nscripts/test\n```" in readme and "\nscripts/test\n" in ci
