"""A Transformers folder loaded from the Model tab in a real Chromium, then chatted with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import choose, send_and_watch, start_new_chat
from tests.support.servers import Server, open_page
from tests.support.tiny_models import reference_greedy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path, tiny_llama_dir: Path
) -> Iterator[Server]:
    """``webui serve`` with the default GGUF loaded and the tiny Transformers folder beside it."""
    server = Server(tmp_path_factory.mktemp("transformers-browser"), default_model_path)
    (server.config.models_dir / "tiny-llama").symlink_to(tiny_llama_dir, target_is_directory=True)
    with server.running():
        yield server


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with open_page(browser, server.url, timeout_ms=120_000) as page:
        page.wait_for_function(
            "() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')"
        )  # the page-load refresh has run
        yield page


def test_load_a_transformers_folder_in_the_model_tab_and_chat(page: Page, tiny_llama_dir: Path) -> None:
    page.get_by_role("tab", name="Model").click()
    choose(page, "model-dropdown", "tiny-llama")
    # The loader follows the files: a folder without a quantization_config is a Transformers model.
    page.wait_for_function("() => document.querySelector('#loader-dropdown input')?.value === 'transformers'")
    page.locator("#model-load").click()
    page.wait_for_function(
        "() => document.querySelector('#model-status')?.innerText.includes('Loaded tiny-llama with transformers')"
    )
    status = page.locator("#model-status").inner_text()
    assert "ChatML" in status, f"the template from the folder's tokenizer config was not detected: {status}"

    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.wait_for_function(
        "() => document.querySelector('#param-temperature input[type=number]')?.value === '0'"
    )
    page.get_by_role("tab", name="Chat").click()
    start_new_chat(page)
    page.get_by_label("instruct", exact=True).check()
    shown, final = send_and_watch(page, QUESTION)

    # This 7-token reply may arrive within one redraw; the page's streaming is shown on a long reply in
    # test_ui_browser, the loader's token-by-token chunks in test_loader_transformers. What it showed, it kept.
    assert shown and all(final.startswith(partial) for partial in shown), shown
    # The page's reply is transformers' own greedy reply to the ChatML prompt the tokenizer itself renders.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    # The reply may use what is left of the 512-token context after the prompt.
    room = 512 - len(tokenizer(str(prompt))["input_ids"])
    expected, _ = reference_greedy(tiny_llama_dir, str(prompt), max_new_tokens=room)
    assert " ".join(final.split()) == " ".join(expected.split())
