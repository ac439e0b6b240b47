"""The page in a real Chromium, against the real server (``python -m webui serve``) and the real default model."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import choose, send_and_watch, start_new_chat
from tests.support.servers import Server, open_page
from webui.benchmarks.browser import BOT
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[tuple[str, Path]]:
    """``webui serve`` on a free port over a temporary user_data holding the default model."""
    server = Server(tmp_path_factory.mktemp("browser"), default_model_path)
    server.start()
    try:
        yield server.url, server.config.models_dir
    finally:
        server.stop()


@pytest.fixture
def page(browser: Browser, server: tuple[str, Path]) -> Iterator[Page]:
    with open_page(browser, server[0]) as page:
        page.wait_for_selector("#chat-input textarea")
        page.wait_for_function(
            "() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')"
        )  # the page-load refresh has run
        start_new_chat(page)  # the page shows the last conversation: start each test with a new one
        yield page


def test_chat_reply_streams_into_the_page(page: Page) -> None:
    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.wait_for_function(
        "() => document.querySelector('#param-temperature input[type=number]')?.value === '0'"
    )
    assert "Deterministic" in page.locator("#params-status").inner_text()

    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("instruct", exact=True).check()
    # A long reply shows partial texts before the final one (a short one may arrive within one redraw).
    story, _ = send_and_watch(page, "Tell me a long story about the sea.")
    assert len(set(story)) >= 2, f"the reply did not stream: {story!r}"
    assert all(story[-1].startswith(partial) for partial in story)
    shown, final = send_and_watch(page, QUESTION)

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


# Records every value a text box shows (polled: a textarea's value is not a DOM mutation) and every text a
# status line shows, so a test can tell partial updates and the end of a generation apart.
RECORD_GENERATION = """
([box, status]) => {
  clearInterval(window.__recorder);
  window.__values = [];
  window.__statuses = [];
  window.__recorder = setInterval(() => {
    const value = document.querySelector(box)?.value ?? '';
    const text = document.querySelector(status)?.innerText ?? '';
    if (window.__values[window.__values.length - 1] !== value) window.__values.push(value);
    if (window.__statuses[window.__statuses.length - 1] !== text) window.__statuses.push(text);
  }, 5);
}
"""
GENERATION_DONE = """
() => {
  const statuses = window.__statuses || [];
  const started = statuses.findIndex((text) => text.startsWith('Generating'));
  return started >= 0 && statuses.slice(started).some((text) => text.includes('tokens/s'));
}
"""


def generate_and_watch(page: Page, box: str, status: str, button: str) -> list[str]:
    """Click ``button`` and wait for the generation to end; returns every value ``box`` showed meanwhile."""
    page.evaluate(RECORD_GENERATION, [box, status])
    page.locator(button).click()
    page.wait_for_function(GENERATION_DONE)
    time.sleep(0.1)  # the final value lands with the final status
    values: list[str] = page.evaluate("() => { clearInterval(window.__recorder); return window.__values; }")
    return values


def set_max_new_tokens(page: Page, tokens: int) -> None:
    """Parameters tab: ``tokens`` new tokens, end-of-text banned (so every generation has that many)."""
    page.get_by_role("tab", name="Parameters").click()
    number = page.locator("#param-max_new_tokens input[type=number]")
    number.fill(str(tokens))
    number.press("Tab")
    page.get_by_text("Control", exact=True).click()  # open the accordion holding ban_eos_token
    page.locator("#param-ban_eos_token input[type=checkbox]").check()


def test_default_tab_streams_then_continue_appends(page: Page) -> None:
    set_max_new_tokens(page, 40)
    page.get_by_role("tab", name="Default").click()
    prompt = "The capital of France is"
    page.locator("#default-input textarea").fill(prompt)
    page.wait_for_function(
        "() => /Prompt: \\d+ tokens?$/.test(document.querySelector('#default-tokens')?.innerText)"
    )

    output = "#default-output textarea"
    shown = [v for v in generate_and_watch(page, output, "#default-status", "#default-generate") if v]
    first = page.locator(output).input_value()
    assert len(shown) >= 2, f"the output did not stream: {shown!r}"
    assert all(first.startswith(partial) for partial in shown) and shown[-1] == first
    assert "prompt + output:" in page.locator("#default-tokens").inner_text()

    shown = generate_and_watch(page, output, "#default-status", "#default-continue")
    second = page.locator(output).input_value()
    assert second.startswith(first) and len(second) > len(first), (first, second)
    assert all(value.startswith(first) for value in shown)  # appended to, never replaced
    assert page.locator("#default-input textarea").input_value() == prompt


def test_notebook_streams_and_undo_restores(page: Page) -> None:
    set_max_new_tokens(page, 40)
    page.get_by_role("tab", name="Notebook").click()
    box = "#notebook-text textarea"
    start = "The capital of France is"
    page.locator(box).fill(start)
    shown = generate_and_watch(page, box, "#notebook-status", "#notebook-generate")
    text = page.locator(box).input_value()
    grown = [value for value in shown if value.startswith(start) and len(value) > len(start)]
    assert len(grown) >= 2, f"the notebook did not stream: {shown!r}"
    assert text.startswith(start) and len(text) > len(start)
    assert re.search(r"Text: \d+ tokens", page.locator("#notebook-tokens").inner_text())

    page.locator("#notebook-undo").click()
    page.wait_for_function(f"() => document.querySelector('{box}').value === {start!r}")
    assert "Restored" in page.locator("#notebook-status").inner_text()


def test_edit_renders_code_and_reaches_the_prompt(page: Page) -> None:
    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-start-with textarea, #chat-start-with input").fill("The capital of France is")
    _, final = send_and_watch(page, QUESTION)
    assert final.startswith("The capital of France is"), final  # the reply began with the given text
    assert page.locator("#chat-context").inner_text().startswith("Context: ")

    page.locator(f"{BOT} >> nth=-1").hover()
    page.locator('#chatbot button[aria-label="Edit"]').last.click()
    page.locator("#chatbot textarea").last.fill("Like this:\n\n```python\nprint('edited')\n```\n")
    page.locator('#chatbot button[aria-label="Submit"]').click()
    code = page.locator(f"{BOT} >> nth=-1").locator("pre code")
    code.wait_for()
    assert code.inner_text().strip() == "print('edited')"
    assert code.locator(".token").count() > 0  # highlighted
    page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('edited')")

    page.locator("#chat-start-with textarea, #chat-start-with input").fill("")
    page.locator("#chat-to-notebook").click()
    notebook = page.locator("#notebook-text textarea")
    notebook.wait_for(state="visible")  # the Notebook tab is shown
    page.wait_for_function("() => document.querySelector('#notebook-text textarea').value.includes('edited')")
    prompt = notebook.input_value()
    assert QUESTION in prompt and "print('edited')" in prompt and "The capital of France is" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_template_editor_previews_live(page: Page) -> None:
    page.get_by_role("tab", name="Parameters").click()
    page.get_by_text("Instruction template editor").click()
    preview = "#template-editor-preview textarea"
    page.wait_for_function(f"() => document.querySelector('{preview}')?.value.includes('<|im_start|>user')")
    assert "example" in page.locator("#template-editor-note").inner_text()

    page.locator("#template-editor-source .cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("MARKER {{ messages | length }}")
    page.wait_for_function(f"() => document.querySelector('{preview}').value.endsWith('MARKER 3')")
    page.keyboard.type("{% if %}")
    page.wait_for_function(f"() => document.querySelector('{preview}').value.includes('syntax error')")
    page.locator("#template-editor-new-name textarea, #template-editor-new-name input").fill("Broken")
    page.locator("#template-editor-save").click()
    page.wait_for_function(
        "() => document.querySelector('#template-editor-status')?.innerText.includes('Not saved')"
    )


def test_settings_survive_a_reload(page: Page) -> None:
    try:
        page.get_by_role("tab", name="Parameters").click()
        choose(page, "preset-dropdown", "Creative")
        page.wait_for_function(
            "() => document.querySelector('#params-status')?.innerText.includes('Creative')"
        )
        page.get_by_role("tab", name="Chat").click()
        page.get_by_label("chat", exact=True).check()
        page.get_by_role("tab", name="Session").click()
        page.get_by_label("dark", exact=True).check()
        page.wait_for_function("() => document.body.classList.contains('dark')")
        page.wait_for_function(
            "() => document.querySelector('#session-status')?.innerText.includes('settings.yaml')"
        )

        page.reload()
        page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")
        page.wait_for_function("() => document.body.classList.contains('dark')")
        assert page.get_by_label("chat", exact=True).is_checked()
        page.get_by_role("tab", name="Parameters").click()  # tabs are drawn when first shown
        page.wait_for_function("() => document.querySelector('#preset-dropdown input')?.value === 'Creative'")
        assert page.locator("#param-temperature input[type=number]").input_value() == "1.1"
    finally:  # the server is shared with the other tests: back to the defaults
        page.get_by_role("tab", name="Parameters").click()
        choose(page, "preset-dropdown", "Default")
        page.get_by_role("tab", name="Chat").click()
        page.get_by_label("instruct", exact=True).check()
        page.get_by_role("tab", name="Session").click()
        page.get_by_label("system", exact=True).check()
        page.locator("#session-save").click()
        page.wait_for_function("() => document.querySelector('#session-status')?.innerText.includes('saved')")
