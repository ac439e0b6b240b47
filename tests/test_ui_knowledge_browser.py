"""The Knowledge tab in Chromium against a real server with the real embedding model: a collection is made,
a PDF and a text file are uploaded, a question finds the right page, a document is removed, and all of it is
still there after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.documents import write_pdf
from tests.support.embedding_models import embedding_server
from tests.support.page import choose, goto_chat
from tests.support.servers import Server, open_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PAGES = [
    f"Page {n} of the field guide. " + fact
    for n, fact in enumerate(
        [
            "The harbour lighthouse of Veldmark is painted green and white and was built in 1887.",
            "Quince jam from the Orrin valley is cooked with star anise and a little black pepper.",
            "The glass bridge over the Tessel gorge carries only bicycles and pedestrians.",
            "Copper beetles of the northern marsh glow faintly after a thunderstorm.",
        ],
        start=1,
    )
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = embedding_server(tmp_path_factory.mktemp("ui-knowledge"), default_model_path)
    yield server
    server.stop()


def open_knowledge(page: Page, server: Server) -> None:
    goto_chat(page, server.url)
    page.get_by_role("tab", name="Knowledge").click()
    page.locator("#knowledge-create").wait_for()


def wait_status(page: Page, text: str) -> None:
    page.wait_for_function(
        "(text) => document.querySelector('#knowledge-status')?.innerText.includes(text)", arg=text
    )


def wait_table(page: Page, text: str) -> None:
    page.wait_for_function(
        "(text) => document.querySelector('#knowledge-documents')?.innerText.includes(text)", arg=text
    )


def test_a_collection_is_filled_searched_and_kept(browser: Browser, server: Server, tmp_path: Path) -> None:
    guide = write_pdf(tmp_path / "field-guide.pdf", PAGES)
    note = tmp_path / "note.txt"
    note.write_text("The spare key of the boathouse hangs behind the barometer.", encoding="utf-8")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really a pdf")

    server.start()
    with open_page(browser, server.url) as page:
        open_knowledge(page, server)
        page.locator("#knowledge-new-name input, #knowledge-new-name textarea").first.fill("travel")
        page.locator("#knowledge-create").click()
        wait_status(page, "travel")
        with page.expect_file_chooser() as chooser:
            page.locator("#knowledge-add-files").click()
        chooser.value.set_files([str(guide), str(note), str(broken)])
        wait_status(page, "Added")
        status = page.locator("#knowledge-status").inner_text()
        assert "field-guide.pdf" in status and "note.txt" in status
        assert "broken.pdf" in status and "⚠️" in status  # a bad file is named, the others still added
        wait_table(page, "field-guide.pdf")

        page.locator("#knowledge-query input, #knowledge-query textarea").first.fill(
            "Which bridge may cars not cross?"
        )
        page.locator("#knowledge-search").click()
        page.wait_for_function(
            "() => document.querySelector('#knowledge-results')?.innerText.includes('[1]')"
        )
        first = page.locator("#knowledge-results").inner_text().split("[2]")[0]
        assert "field-guide.pdf, page 3" in first and "glass bridge" in first

        choose(page, "knowledge-document", "note.txt")
        page.locator("#knowledge-remove").click()
        wait_status(page, "Removed note.txt")
    server.stop()

    server.start()  # a restart keeps the collection and its vectors
    with open_page(browser, server.url) as page:
        open_knowledge(page, server)
        wait_table(page, "field-guide.pdf")
        assert "note.txt" not in page.locator("#knowledge-documents").inner_text()
        page.locator("#knowledge-query input, #knowledge-query textarea").first.fill("jam spices")
        page.locator("#knowledge-search").click()
        page.wait_for_function(
            "() => document.querySelector('#knowledge-results')?.innerText.includes('[1]')"
        )
        assert "page 2" in page.locator("#knowledge-results").inner_text().split("[2]")[0]
