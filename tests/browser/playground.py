"""Driving the playground page as a person would, and reading what it shows: shared by the browser tests."""

import base64
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM
from tests.support.app import MODEL
from tests.support.audio_samples import wav

if not CHROMIUM.exists():  # before any server process starts
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/system-deps does) to test the playground",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: scripts/setup test")
expect = sync_api.expect

TIME = re.compile(r"^(\d+) ms$|^(\d+\.\d\d) s$")
RUN_S = 60  # generous: two CPU cores shared with the rest of the suite
PRESETS = {"describe": "Describe this sound", "music": "Analyse this music", "emotion": "What emotion"}
# The random model's end ids are rare (server/tiny_model._spread_weights): on clip() it describes the sound for
# the 3,000 tokens ask_for_a_long_answer asks, seconds on two cores: long enough to stop it, or to pass a short
# time limit, midway.
LONG_ANSWER_TOKENS = 3000


def clip(tmp_path: Path, seconds: float = 2.0, name: str = "clip.wav") -> Path:
    path = tmp_path / name
    path.write_bytes(wav(seconds, seed=7))
    return path


def open_page(page, base: str) -> None:
    page.goto(base + "/")
    expect(page.locator("#model-id")).to_have_text(MODEL)
    expect(page.locator("#random-badge")).to_be_visible()


def use_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button")


def choose(page, task: str) -> None:
    page.locator(f'label:has(input[value="{task}"])').click()


def drop(page, path: Path) -> None:
    """Drag and drop a file onto the drop zone, as the browser delivers it."""
    transfer = page.evaluate_handle("""([name, data]) => {
        const transfer = new DataTransfer();
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type: "audio/wav"}));
        return transfer;
    }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#clip-name")).to_have_text(path.name)


def run(page) -> str:
    """Press Run, wait for the answer to finish, and return its text."""
    page.click("#run")
    expect(page.locator("#stop")).to_be_hidden(timeout=RUN_S * 1000)
    expect(page.locator("#error")).to_be_hidden()
    return page.eval_on_selector("#output", "e => e.textContent")


def ask_for_a_long_answer(page) -> None:
    choose(page, "describe")
    page.fill("#max-tokens", str(LONG_ANSWER_TOKENS))
    page.click("#run")
    expect(page.locator("#output")).not_to_have_class(re.compile("empty"), timeout=RUN_S * 1000)


def count_output_changes(page) -> None:
    page.evaluate("""() => {
        window.outputChanges = 0;
        new MutationObserver((records) => { window.outputChanges += records.length; })
            .observe(document.getElementById("output"), {childList: true, characterData: true, subtree: true});
    }""")


def record_requests(page) -> None:
    """Keep what the page hands to fetch (Chromium does not show a multipart body built from a Blob to Playwright)."""
    page.evaluate("""() => {
        const fetch = window.fetch;
        window.sent = [];
        window.fetch = (url, init = {}) => {
            const body = init.body instanceof FormData
                ? Object.fromEntries([...init.body.entries()].map(([k, v]) => [k, typeof v === "string" ? v : v.name]))
                : init.body && JSON.parse(init.body);
            window.sent.push({url: String(url), body});
            return fetch(url, init);
        };
    }""")


def sent(page, path: str) -> dict:
    return [r["body"] for r in page.evaluate("window.sent") if r["url"] == path][-1]


def seconds(label: str) -> float:
    match = TIME.match(label)
    assert match, f"not a time: {label!r}"
    return int(match[1]) / 1000 if match[1] else float(match[2])


def assert_timing(page, audio_seconds: float) -> None:
    first, total = seconds(page.inner_text("#t-first")), seconds(page.inner_text("#t-total"))
    assert 0 < first <= total
    assert page.inner_text("#t-audio") == f"{audio_seconds:.1f} s"
    rtf = float(page.inner_text("#t-rtf").removesuffix("×"))
    assert rtf == pytest.approx(audio_seconds / total, rel=0.05, abs=0.1)  # the page divides by the unrounded total
    assert re.fullmatch(r"\d+ \(\d+/s\)", page.inner_text("#t-tokens"))


def download(page, fmt: str) -> tuple[str, str]:
    with page.expect_download() as info:
        page.click(f'#downloads [data-format="{fmt}"]')
    file = info.value
    return file.suggested_filename, Path(file.path()).read_text(encoding="utf-8")


def words(text: str) -> list[str]:
    return text.replace("-->", "->").split()  # subtitles keep the words; cue syntax rules change the spacing


def run_shell(script: str, cwd: Path, env: dict) -> str:
    return subprocess.run(["bash", "-euc", script], cwd=cwd, env=env, capture_output=True, text=True, check=True,
                          timeout=RUN_S).stdout


def run_python(script: str, cwd: Path, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                         encoding="utf-8", timeout=RUN_S)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_until(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
