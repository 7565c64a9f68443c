"""What the playground says when something goes wrong, how it stops an answer, and how it is turned off."""

import json

import httpx

from tests.browser import playground as ui
from tests.browser.conftest import KEY, TIME_LIMIT_S, serving
from tests.browser.playground import expect
from tests.support.app import MODEL
from tests.support.servers import process_metric


def test_key_problems_are_said_in_plain_words(keyed_server, page, tmp_path):
    page.goto(keyed_server + "/")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("needs an API key")
    expect(banner).to_contain_text("HTTP 401")
    page.set_input_files("#file-input", ui.clip(tmp_path))
    ui.use_key(page, "wrong-key")
    page.click("#run")
    error = page.locator("#error")
    expect(error).to_contain_text("refused the one given")
    expect(error).to_contain_text("Server said: invalid or missing API key")

    ui.use_key(page, KEY)
    expect(banner).to_be_hidden()
    expect(page.locator("#model-id")).to_have_text(MODEL)
    assert ui.run(page).strip()
    page.reload()  # the key stays in this browser
    expect(page.locator("#api-key")).to_have_value(KEY)
    expect(page.locator("#model-id")).to_have_text(MODEL)


def test_bad_input_is_said_in_plain_words(server, page, tmp_path):
    ui.open_page(page, server)
    notes = tmp_path / "notes.wav"
    notes.write_text("these are meeting notes, not audio")
    page.set_input_files("#file-input", notes)
    page.click("#run")
    error = page.locator("#error")
    expect(error).to_contain_text("could not read this audio")
    expect(error).to_contain_text("HTTP 400")

    page.set_input_files("#file-input", ui.clip(tmp_path))
    ui.choose(page, "ask")
    page.click("#run")
    expect(error).to_have_text("Type a question about the audio first.")
    page.fill("#prompt", "What is it?")
    page.fill("#max-tokens", "100000")
    page.click("#run")
    expect(error).to_contain_text("could not accept this request")
    expect(error).to_contain_text("passes the model's context")


def test_stop_cancels_the_answer_on_the_server(server, page, tmp_path):
    ui.open_page(page, server)
    tokens_before = process_metric(server, "qwen2_audio_generated_tokens_total")
    page.set_input_files("#file-input", ui.clip(tmp_path))
    ui.ask_for_a_long_answer(page)
    assert page.is_visible("#stop"), "the answer ended before it could be stopped"
    page.click("#stop")
    expect(page.locator("#output")).to_contain_text("[stopped]")
    expect(page.locator("#run")).to_be_enabled()
    assert ui.wait_until(lambda: process_metric(server, "qwen2_audio_running_requests") == 0)
    assert process_metric(server, "qwen2_audio_generated_tokens_total") - tokens_before < ui.LONG_ANSWER_TOKENS / 2


def test_an_answer_cut_off_midway_says_why(keyed_server, page, tmp_path):
    page.goto(keyed_server + "/")
    ui.use_key(page, KEY)
    page.set_input_files("#file-input", ui.clip(tmp_path))
    ui.ask_for_a_long_answer(page)
    error = page.locator("#error")
    expect(error).to_contain_text("The server stopped this answer midway", timeout=ui.RUN_S * 1000)
    expect(error).to_contain_text(f"did not finish within the server's limit of {TIME_LIMIT_S} s")
    assert page.inner_text("#output").strip()  # what had arrived stays
    expect(page.locator("#run")).to_be_enabled()


def test_no_playground_turns_the_page_off(tiny_model_dir, browser):
    with serving(tiny_model_dir, "--no-playground") as base:
        page = browser.new_page()
        assert page.goto(base + "/").status == 404
        assert json.loads(page.inner_text("body"))["error"]["type"] == "invalid_request_error"
        page.close()
        assert httpx.get(base + "/playground/app.js").status_code == 404
        assert httpx.get(base + "/v1/models").status_code == 200
