"""Documents in the page, in Chromium against a real server (SmolLM2, the real MiniLM embedding model):

- a 30-page PDF attached to a message is answered through retrieval, its passages given as numbered sources,
  and the reply's [n] opens the passage it came from;
- a short text file is given whole;
- a conversation answers from a collection chosen in the Chat tab;
- all of it is still there after a reload and a restart.

The tiny model does not cite on its own: "Start reply with" makes the reply begin with a citation, which is
what the page then shows as a source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.documents import write_pdf
from tests.support.embedding_models import embedding_server
from tests.support.page import choose, goto_chat, set_max_new_tokens, start_new_chat
from tests.support.servers import Server, open_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

USER = '#chatbot [data-testid="user"]'
SOURCE_TITLE = re.compile(r"\[1\] almanac\.pdf, page 17")


def almanac_page(number: int) -> str:
    places = ["Veldmark", "Orrin", "Tessel", "Skellan", "Marrowind", "Brenna", "Quillon", "Dastor", "Ferrow"]
    crafts = ["basket weaving", "salt drying", "bell casting", "rope making", "amber polishing"]
    place, craft = places[number % len(places)], crafts[number % len(crafts)]
    line = (
        f"In {place} the {craft} season opens after market day {number}. Elders of {place} teach {craft} "
        f"in the long hall by the harbour, and the guild keeps a ledger of every {craft} order. "
    )
    return f"Chapter {number}: {place}. " + line * 4


PAGES = [almanac_page(n + 1) for n in range(30)]
PAGES[16] = "The night train to Oskarvik is pulled by a blue steam engine named Greta. " + PAGES[16]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = embedding_server(tmp_path_factory.mktemp("ui-documents"), default_model_path)
    yield server
    server.stop()


def send_with_files(page: Page, text: str, files: list[Path], start_with: str = "") -> None:
    page.locator("#chat-start-with input, #chat-start-with textarea").first.fill(start_with)
    if files:
        page.locator("#chat-input input[type=file]").set_input_files([str(f) for f in files])
        page.wait_for_function(
            "(count) => document.querySelectorAll('#chat-input .thumbnail-item, #chat-input .thumbnail-image')"
            ".length >= count && !document.querySelector('#chat-input .loader, #chat-input .uploading')",
            arg=len(files),
        )
    replies = page.locator(USER).count()
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()
    page.wait_for_function(  # the question is shown, then the reply is over
        "(count) => document.querySelectorAll('#chatbot [data-testid=\"user\"]').length > count", arg=replies
    )
    page.wait_for_function(
        "() => { const s = document.querySelector('#chat-status')?.innerText ?? '';"
        " return !s.startsWith('Generating') && s.includes('tokens/s'); }",
        timeout=180_000,
    )


def chatbot_text(page: Page) -> str:
    return page.locator("#chatbot").inner_text()


def check_conversation(page: Page) -> None:
    """What the page shows for the conversation: the notes, the source that opens its passage, the chips."""
    page.get_by_text(SOURCE_TITLE).first.wait_for()
    shown = chatbot_text(page)
    assert "through retrieval" in shown and "given whole: recipe.txt" in shown
    assert "Greta" not in shown  # the passage is closed until opened
    page.get_by_text(SOURCE_TITLE).first.click()
    page.wait_for_function("() => document.querySelector('#chatbot')?.innerText.includes('Greta')")


def test_a_pdf_through_retrieval_a_file_whole_and_a_collection(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    almanac = write_pdf(tmp_path / "almanac.pdf", PAGES)
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("Quince jam from Orrin is cooked with star anise.", encoding="utf-8")

    server.start()
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        start_new_chat(page)
        set_max_new_tokens(page, 6)
        send_with_files(
            page, "Which engine pulls the night train?", [almanac], start_with="According to [1],"
        )
        # The reply cites [1]: the source opens the passage of page 17.
        page.get_by_text(SOURCE_TITLE).first.wait_for()
        assert "through retrieval" in chatbot_text(page)

        send_with_files(page, "What is the jam cooked with?", [recipe])
        page.get_by_text(re.compile("given whole: recipe.txt")).first.wait_for()
        check_conversation(page)

        # A collection chosen for this conversation answers too (made with the CLI's core, here the tab).
        page.get_by_role("tab", name="Knowledge").click()
        page.locator("#knowledge-new-name input, #knowledge-new-name textarea").first.fill("ferries")
        page.locator("#knowledge-create").click()
        page.wait_for_function(
            "() => document.querySelector('#knowledge-status')?.innerText.includes('ferries')"
        )
        timetable = tmp_path / "timetable.txt"
        timetable.write_text("The ferry to Skellan island leaves at seven and at noon.", encoding="utf-8")
        with page.expect_file_chooser() as chooser:
            page.locator("#knowledge-add-files").click()
        chooser.value.set_files(str(timetable))
        page.wait_for_function(
            "() => document.querySelector('#knowledge-status')?.innerText.includes('timetable.txt')"
        )
        page.get_by_role("tab", name="Chat").click()
        choose(page, "chat-knowledge", "ferries")
        page.keyboard.press("Escape")  # a multiple choice stays open after a pick
        page.wait_for_function(
            "() => document.querySelector('#chat-status')?.innerText.includes('Answers from ferries')"
        )
        send_with_files(page, "When does the Skellan ferry leave?", [], start_with="[1]")
        page.get_by_text(re.compile(r"\[1\] timetable\.txt")).first.wait_for()

        page.reload()  # everything comes back from the store
        page.wait_for_selector("#chat-input textarea")
        check_conversation(page)
        page.get_by_text(re.compile(r"\[1\] timetable\.txt")).first.wait_for()
        assert "ferries" in page.locator("#chat-knowledge").inner_text()
    server.stop()

    server.start()  # and after a restart
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        check_conversation(page)
        texts = [t.strip() for t in page.locator(USER).all_inner_texts() if t.strip()]
        assert any(t.startswith("Which engine pulls the night train?") for t in texts)
