"""The page in a real Chromium, against the real server (``python -m webui serve``) and the real default model."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import make_config
from webui.config import PROJECT_ROOT
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "What is the capital of France?"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOT = '#chatbot [data-testid="bot"]'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}health", timeout=2) as response:
                if b'"model":null' not in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the server did not start in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[tuple[str, Path]]:
    """``webui serve`` on a free port over a temporary user_data holding the default model."""
    root = tmp_path_factory.mktemp("browser")
    config = make_config(root / "user_data", default_model_path)
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(root / "gradio-tmp"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = root / "server.log"
    command = [
        sys.executable,
        "-m",
        "webui",
        "serve",
        "--port",
        str(port),
        "--user-data-dir",
        str(config.user_data_dir),
        "--model",
        DEFAULT_MODEL_FILE,
        "--setting",
        "n_ctx=2048",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield url, config.models_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "the browser tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, server: tuple[str, Path]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server[0])
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_function(
        "() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')"
    )  # the page-load refresh has run
    yield page
    context.close()


def choose(page: Page, dropdown: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown with elem_id ``dropdown``."""
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


# Records every text the newest bot message shows (a MutationObserver sees each DOM update, however fast).
RECORD_BOT_TEXTS = """
(start) => {
  window.__botTexts = [];
  const root = document.querySelector('#chatbot');
  const record = () => {
    const bots = root.querySelectorAll('[data-testid="bot"]');
    if (bots.length <= start) return;
    const text = bots[bots.length - 1].innerText.trim();
    const log = window.__botTexts;
    if (text && log[log.length - 1] !== text) log.push(text);
  };
  window.__botObserver?.disconnect();
  window.__botObserver = new MutationObserver(record);
  window.__botObserver.observe(root, {subtree: true, childList: true, characterData: true});
}
"""


def send_and_watch(
    page: Page, text: str, *, press_enter: bool = False, timeout: float = 120
) -> tuple[list[str], str]:
    """Send ``text`` (Send button or Enter); return every text the reply showed while streaming, and the last.

    The reply is over when the status line shows new stats: "Generating…" holds it from Send until then.
    """
    status = page.locator("#chat-status")
    before = status.inner_text()
    bots = page.locator(BOT)
    replies_before = bots.count()
    page.evaluate(RECORD_BOT_TEXTS, replies_before)
    page.locator("#chat-input textarea").fill(text)
    if press_enter:
        page.locator("#chat-input textarea").press("Enter")
    else:
        page.locator("#chat-send").click()
    generating_seen = False
    deadline = time.monotonic() + timeout
    while True:
        now = status.inner_text()
        generating_seen = generating_seen or now.startswith("Generating")
        if "tokens/s" in now and (generating_seen or now != before):
            break
        assert time.monotonic() < deadline, f"no finished reply after {timeout} s; status {now!r}"
        time.sleep(0.02)
    page.wait_for_function(f"() => document.querySelectorAll('{BOT}').length > {replies_before}")
    final = bots.last.inner_text().strip()
    while True:  # let the chatbot finish rendering the last update
        time.sleep(0.2)
        settled = bots.last.inner_text().strip()
        if settled == final:
            break
        final = settled
    return page.evaluate("() => window.__botTexts"), final


def test_chat_reply_streams_into_the_page(page: Page) -> None:
    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.wait_for_function(
        "() => document.querySelector('#param-temperature input[type=number]')?.value === '0'"
    )
    assert "Deterministic" in page.locator("#params-status").inner_text()

    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("instruct", exact=True).check()
    shown, final = send_and_watch(page, QUESTION)

    assert len(set(shown)) >= 2, f"the reply did not stream: {shown!r}"  # partial text(s), then the final
    assert shown[-1] == final
    assert all(final.startswith(partial) for partial in shown)
    assert "Paris" in final, final
    user_messages = page.locator('#chatbot [data-testid="user"]')
    assert user_messages.last.inner_text().strip() == QUESTION
    assert page.locator("#chat-input textarea").input_value() == ""
    page.get_by_role("tab", name="Model").click()
    assert "tokens/s" in page.locator("#model-status").inner_text()


def test_corrupt_model_shows_an_error_and_chat_keeps_working(page: Page, server: tuple[str, Path]) -> None:
    broken = server[1] / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    try:
        page.get_by_role("tab", name="Model").click()
        page.locator("#model-refresh").click()
        choose(page, "model-dropdown", "broken.gguf")
        page.wait_for_function(
            "() => document.querySelector('#loader-dropdown input')?.value === 'llama.cpp'"
        )
        page.locator("#model-load").click()
        status = page.locator("#model-status")
        page.wait_for_function("() => document.querySelector('#model-status')?.innerText.includes('failed')")
        text = status.inner_text()
        assert "Loading broken.gguf failed" in text
        assert f"Loaded: {DEFAULT_MODEL_FILE}" in text  # the previous model is still loaded

        page.get_by_role("tab", name="Chat").click()
        _, final = send_and_watch(page, QUESTION, press_enter=True)
        assert final
    finally:
        broken.unlink(missing_ok=True)


def test_stop_ends_this_reply_early(page: Page) -> None:
    page.get_by_role("tab", name="Parameters").click()
    number = page.locator("#param-max_new_tokens input[type=number]")
    number.fill("300")
    number.press("Tab")
    page.get_by_text("Control", exact=True).click()  # open the accordion holding ban_eos_token
    page.locator("#param-ban_eos_token input[type=checkbox]").check()

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("Tell me a very long story about a dragon.")
    page.locator("#chat-send").click()
    page.wait_for_function(
        f"() => (document.querySelector('{BOT}:last-of-type')?.innerText || '').length > 20"
    )
    page.locator("#chat-stop").click()
    page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('tokens/s')")
    match = re.search(r"Last reply: (\d+) tokens", page.locator("#chat-status").inner_text())
    assert match, page.locator("#chat-status").inner_text()
    assert 0 < int(match.group(1)) < 300
    assert page.locator(BOT).last.inner_text().strip()  # the partial reply is kept


def test_notebook_appends_the_completion(page: Page) -> None:
    page.get_by_role("tab", name="Notebook").click()
    box = page.locator("#notebook-text textarea")
    box.fill("The capital of France is")
    page.locator("#notebook-generate").click()
    page.wait_for_function("() => document.querySelector('#notebook-status')?.innerText.includes('tokens/s')")
    text = box.input_value()
    assert text.startswith("The capital of France is") and len(text) > len("The capital of France is")
