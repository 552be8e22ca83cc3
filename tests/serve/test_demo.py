"""The web demo in headless Chromium (Debian's chromium + the playwright package; no browser download)."""

from __future__ import annotations

import os
import shutil

import pytest

from ..conftest import AUDIO
from .conftest import API_KEY

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield page
            assert not errors, errors
        finally:
            browser.close()


def answer_of(server, clip_name: str, text: str, max_tokens: int) -> str:
    from .conftest import audio_message, b64
    status, body, _ = server.request("POST", "/v1/chat/completions", {
        "model": "salmonn", "temperature": 0, "num_beams": 1, "max_tokens": max_tokens, "lora_scale": 1.0,
        "messages": audio_message(b64(AUDIO / clip_name), text)})
    assert status == 200, body
    return body["choices"][0]["message"]["content"]


def test_upload_submit_and_see_the_streamed_answer(page, server):
    assert page.locator("#key-label").is_visible()  # the server wants a key: the page asks for it
    page.fill("#api-key", API_KEY)
    page.set_input_files("#file", str(AUDIO / "mountain.wav"))
    page.wait_for_selector("#submit:not([disabled])")
    assert "mountain.wav" in page.inner_text("#audio-status")
    page.fill("#instruction", "What is the speaker asking?")
    page.fill("#beams", "1")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "6")
    page.fill("#lora-scale", "1")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    shown = page.inner_text("#answer")
    assert shown and shown == answer_of(server, "mountain.wav", "What is the speaker asking?", 6)
    assert "finish_reason: length" in page.inner_text("#status")
    assert "6 tokens" in page.inner_text("#status")


def test_example_clip_and_a_refused_request(page, server):
    buttons = page.locator("#examples button")
    assert sorted(buttons.all_inner_texts()) == sorted(f"▶ {p.name}" for p in AUDIO.glob("*.wav"))
    page.click("button[data-example='excitement.wav']")
    page.wait_for_function("document.getElementById('audio-status').textContent.startsWith('excitement.wav')")
    page.fill("#instruction", "Please describe the audio.")
    page.fill("#max-tokens", "4")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    assert page.inner_text("#answer") == answer_of(server, "excitement.wav", "Please describe the audio.", 4)
    page.fill("#api-key", "wrong")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')", timeout=30_000)
    assert "401" in page.inner_text("#status") and "API key" in page.inner_text("#status")
