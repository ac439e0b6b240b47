"""The Model tab's embedding-model panel, in Chromium against a real server: the model chosen there serves the
embeddings API (no --embedding-model given)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.support.embedding_models import MINILM_DIMENSIONS, MINILM_NAME, minilm_folder
from tests.support.page import choose, goto_chat
from tests.support.servers import Server, open_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("ui-embedding"), model=default_model_path)
    (server.config.models_dir / MINILM_NAME).symlink_to(minilm_folder(), target_is_directory=True)
    with server.running() as running:
        yield running


def embed(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}v1/embeddings", json={"input": "a cat on a mat"}, timeout=120)


def test_the_embedding_model_chosen_in_the_model_tab_serves_the_api(browser: Browser, server: Server) -> None:
    refused = embed(server)
    assert refused.status_code == 400 and "--embedding-model" in refused.text  # nothing chosen yet

    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        page.get_by_role("tab", name="Model").click()
        page.locator("#embedding-panel").get_by_text("Embedding model").first.click()  # open the accordion
        choose(page, "embedding-dropdown", MINILM_NAME)
        page.locator("#embedding-load").click()
        page.wait_for_function(
            "(name) => document.querySelector('#embedding-status')?.innerText.includes(name)", arg=MINILM_NAME
        )
        assert f"{MINILM_DIMENSIONS} dimensions" in page.locator("#embedding-status").inner_text()

        answer = embed(server)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == MINILM_NAME and len(body["data"][0]["embedding"]) == MINILM_DIMENSIONS

        page.locator("#embedding-unload").click()
        page.wait_for_function(
            "() => document.querySelector('#embedding-status')?.innerText.includes('No embedding model')"
        )
    assert embed(server).status_code == 400
