"""Bugs found by using the page as a user would (exploratory QA), each shown where the user saw it: in a real
Chromium against the real server and default model, or through the handler when that shows it as well."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import choose, goto_chat
from tests.support.servers import Server

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("qa-browser"), default_model_path).running() as server:  # n_ctx 2048
        yield server


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        goto_chat(page, server.url)
        yield page
    finally:
        context.close()


def inner_text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_for_text(page: Page, selector: str, text: str) -> None:
    page.wait_for_function(
        f"() => (document.querySelector({selector!r})?.innerText ?? '').includes({text!r})"
    )


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_describes_the_model_that_is_loaded(page: Page) -> None:
    # The empty chat used to say "Load a model in the Model tab" with a model loaded.
    wait_for_text(page, "#chatbot", "Type a message below")
    assert "Load a model" not in inner_text(page, "#chatbot")
    # The will-it-fit line used to judge the loader's default context (8192), beside an n_ctx box showing 2048.
    page.get_by_role("tab", name="Model").click()
    assert page.locator("#setting-llama-cpp-n_ctx input").input_value() == "2048"
    wait_for_text(page, "#model-fit", "at n_ctx=2048")
    # parallel is automatic (0): the default model's caches of 4 slots fit any machine that runs the tests.
    assert page.locator("#setting-llama-cpp-parallel input").input_value() == "0"
    wait_for_text(page, "#model-fit", "at n_ctx=2048 (4 slots)")
    wait_for_text(page, "#model-status", "4 slots: up to 4 replies generate together.")
    page.locator("#setting-llama-cpp-parallel input").fill("1")
    page.wait_for_function("() => !document.querySelector('#model-fit').innerText.includes('slots')")
    assert "at n_ctx=2048," in inner_text(page, "#model-fit")


@pytest.mark.browser
@pytest.mark.slow
def test_a_broken_avatar_is_refused_with_its_reason_and_save_still_works(page: Page, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 8)
    page.get_by_role("tab", name="Character").click()
    page.locator("#character-new").click()
    wait_for_text(page, "#character-status", "New personality")
    page.locator("#character-name input, #character-name textarea").first.fill("Avatar QA")
    page.locator("#character-context textarea").fill("Avatar QA checks images.")
    page.locator("#character-avatar input[type=file]").set_input_files(str(broken))
    # Gradio's own image reading used to refuse every Save with "Could not preprocess input component ...".
    wait_for_text(page, "#character-status", "broken.png is not an image that can be read")
    page.locator("#character-save").click()
    wait_for_text(page, "#character-status", "Avatar QA saved")
    assert "preprocess" not in " ".join(page.locator(".toast-body").all_inner_texts())


@pytest.mark.browser
@pytest.mark.slow
def test_deleting_a_preset_shows_and_remembers_the_default(page: Page, server: Server) -> None:
    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")  # picked: remembered for the next visit
    wait_for_text(page, "#params-status", "Deterministic")
    tokens = page.locator("#param-max_new_tokens input[type=number]")
    tokens.fill("77")
    tokens.press("Tab")
    # The context meter used to keep the old reply budget until the next message.
    page.get_by_role("tab", name="Chat").click()
    wait_for_text(page, "#chat-context", "77 kept for the reply")

    page.get_by_role("tab", name="Parameters").click()
    page.get_by_label("Preset name").fill("QA budget")
    page.locator("#save-preset").click()
    wait_for_text(page, "#params-status", "QA budget")
    page.locator("#delete-preset").click()
    wait_for_text(page, "#params-status", "deleted")
    # The widgets used to keep the deleted preset's values under the name "Default".
    assert page.locator("#preset-dropdown input").input_value() == "Default"
    assert tokens.input_value() == "512"
    page.get_by_role("tab", name="Chat").click()
    wait_for_text(page, "#chat-context", "512 kept for the reply")

    # A reload used to bring back the preset picked before (Deterministic), not the one shown.
    goto_chat(page, server.url)
    page.get_by_role("tab", name="Parameters").click()
    page.wait_for_function("() => document.querySelector('#preset-dropdown input')?.value === 'Default'")
    assert (
        page.locator("#param-top_k input[type=number]").input_value() == "40"
    )  # Default's, not Deterministic's


@pytest.mark.browser
@pytest.mark.slow
def test_branching_from_a_message_that_does_not_exist_says_so(page: Page) -> None:
    page.locator("#chat-manage").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#chat-import").click()
    chooser.value.set_files(str(DATA / "tgw_history.json"))
    wait_for_text(page, "#chat-status", "Imported")
    shown = page.locator('#chatbot [data-testid="user"], #chatbot [data-testid="bot"]').count()
    page.locator("#chat-branch-number input").first.fill("99")
    page.locator("#chat-branch").click()
    # It used to say "That message is no longer in the conversation."
    wait_for_text(page, "#chat-status", f"There is no message #99: this conversation shows {shown}.")


@pytest.mark.browser
@pytest.mark.slow
def test_on_a_phone_the_chat_comes_first_with_a_full_width_message_box(
    browser: Browser, server: Server
) -> None:
    context = browser.new_context(viewport={"width": 400, "height": 850})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        goto_chat(page, server.url)
        box = page.locator("#chat-input").bounding_box()  # the box with its attach button
        send = page.locator("#chat-send").bounding_box()
        chat = page.locator("#chatbot").bounding_box()
        sidebar = page.locator("#chat-sidebar").bounding_box()
        assert box and send and chat and sidebar
        # The box used to share its line with Send (about 100 px wide, its placeholder cut off).
        assert box["width"] > 0.7 * 400 and send["y"] > box["y"] + box["height"] / 2
        # The conversation list used to come first: a phone user scrolled past it to reach the chat.
        assert chat["y"] < sidebar["y"]
    finally:
        context.close()


@pytest.mark.slow
def test_a_loader_setting_it_cannot_use_is_a_clear_error(smol_service: object) -> None:
    from webui.core.engine import EngineError
    from webui.core.service import Service
    from webui.provision import DEFAULT_MODEL_FILE

    assert isinstance(smol_service, Service)
    before = smol_service.engine.state
    assert before is not None and before.entry.name == DEFAULT_MODEL_FILE
    # The loader's ValueError used to escape (the Model tab showed only "Error"), after the loaded model had
    # been freed to make room for its reload: now the setting is refused first, naming it and the value.
    with pytest.raises(EngineError, match=r"tensor_split.*'abc' is not a list of numbers"):
        smol_service.load_model(DEFAULT_MODEL_FILE, "llama.cpp", {"n_ctx": 2048, "tensor_split": "abc"})
    assert smol_service.engine.state is before  # the loaded model is still loaded
