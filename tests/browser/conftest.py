"""The playground in a real headless Chromium (Debian's), driven by Playwright, against real server processes."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.servers import output, start

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tmp" / "artifacts"
KEY = "playground-secret"
TIME_LIMIT_S = 2
INSECURE_HOST = "playground.test"  # mapped to 127.0.0.1, but not a secure context as localhost is
# Chromium reaches out to Google's services unless told not to; on a closed network those connections are refused.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",  # a microphone that beeps, no prompt
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
]


# Per module, not per session: Playwright's sync API marks its own event loop as the thread's running loop for as
# long as it lives, and the async tests that come after could not start theirs.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # the test modules skip without it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def serving(model_dir: str, *flags: str) -> Iterator[str]:
    """A `serve` process on loopback, ready; stopped with SIGTERM at the end, which it must take cleanly."""
    process, base = start(model_dir, "--max-batch-size", "4", *flags)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, output(process)


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    with serving(tiny_model_dir) as base:
        yield base


@pytest.fixture(scope="session")
def keyed_server(tiny_model_dir):
    """With an API key, and a time limit that a long answer passes midway (its tests' other answers are short)."""
    with serving(tiny_model_dir, "--api-key", KEY, "--request-timeout-s", str(TIME_LIMIT_S)) as base:
        yield base


@pytest.fixture
def page(browser):
    """A fresh browser profile (empty localStorage) per test; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1000, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"

