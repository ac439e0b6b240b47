"""The Character tab in a real Chromium against the real server (``python -m webui serve``, no model needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.cards import CARD_FILE, write_card_png
from tests.support.page import choose, open_character_tab, wait_character_status
from tests.support.servers import Server, open_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def text_box(elem_id: str) -> str:
    return f"#{elem_id} textarea, #{elem_id} input"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``webui serve --no-model`` on a free port over a temporary user_data."""
    server = Server(tmp_path_factory.mktemp("characters-browser"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with open_page(browser, server, timeout_ms=30_000) as page:
        open_character_tab(page)
        yield page


def test_create_save_reload_and_pick_again(page: Page) -> None:
    page.locator("#character-new").click()
    wait_character_status(page, "New personality")
    page.locator(text_box("character-name")).fill("Ada Browser")
    page.locator(text_box("character-greeting")).fill("Hello {{user}}, I am Ada.")
    page.locator(text_box("character-context")).fill("You are Ada, a careful mathematician.")
    page.locator(text_box("character-parameters")).fill("temperature: 0.3")
    page.locator("#character-save").click()
    wait_character_status(page, "Ada Browser saved")

    page.reload()
    open_character_tab(page)
    choose(page, "character-dropdown", "Ada Browser")
    wait_character_status(page, "Ada Browser loaded")
    assert page.locator(text_box("character-name")).input_value() == "Ada Browser"
    assert page.locator(text_box("character-greeting")).input_value() == "Hello {{user}}, I am Ada."
    assert (
        page.locator(text_box("character-context")).input_value() == "You are Ada, a careful mathematician."
    )
    assert page.locator(text_box("character-parameters")).input_value() == "temperature: 0.3"

    # The new personality is in the Chat tab's list; picking it starts a chat with its greeting.
    page.get_by_role("tab", name="Chat", exact=True).click()
    choose(page, "chat-personality", "Ada Browser")
    page.wait_for_function(
        "() => document.querySelector('#chatbot')?.innerText.includes('Hello You, I am Ada.')"
    )
    page.get_by_role("tab", name="Character", exact=True).click()

    page.locator(text_box("character-parameters")).fill("temprature: 0.3")
    page.locator("#character-save").click()
    wait_character_status(
        page, "did you mean 'temperature'"
    )  # a clear error, and the fields keep what was typed
    assert page.locator(text_box("character-parameters")).input_value() == "temprature: 0.3"


def test_import_a_card_png_and_pick_it(page: Page, tmp_path: Path) -> None:
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    card["data"]["name"] = "Mira Png"
    png = tmp_path / "mira.png"
    write_card_png(png, card)
    page.locator("#character-import input[type=file]").set_input_files(str(png))
    wait_character_status(page, "Imported Mira Png")
    assert page.locator("#character-dropdown input").input_value() == "Mira Png"
    assert page.locator(text_box("character-name")).input_value() == "Mira Png"
    assert page.locator("#character-avatar img").count() >= 1  # the card's image is the avatar

    page.locator("#character-dropdown input").click()
    assert page.get_by_role("option", name="Mira Png", exact=True).is_visible()
    page.keyboard.press("Escape")

    page.locator("#character-import-button").click()  # the same file again: asks before overwriting
    wait_character_status(page, "already exists")
