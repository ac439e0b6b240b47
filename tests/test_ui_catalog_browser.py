"""The Model tab's catalog in a real Chromium, against the real server and the local Hub stand-in: badges and
fit verdicts, one entry downloaded in one click, then picked, its capabilities shown and loaded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.support.agent_models import AgentModels
from tests.support.catalog_hub import QWEN_FILE, catalog_hub
from tests.support.fake_hub import FakeHub
from tests.support.page import choose
from tests.support.servers import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QWEN_MODEL = f"Qwen_Qwen3-0.6B-GGUF/{QWEN_FILE}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, agent_models: AgentModels) -> Iterator[FakeHub]:
    hub = catalog_hub(agent_models.gguf, tmp_path_factory.mktemp("catalog-hub")).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub) -> Iterator[Server]:
    """``webui serve --no-model`` whose huggingface_hub talks to the stand-in Hub."""
    root = tmp_path_factory.mktemp("catalog-browser")
    server = Server(root)
    server.env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(root / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
        server.env.pop(name, None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#catalog-table")
    yield page
    context.close()


def wait_for_text(page: Page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.innerText.includes(text)",
        arg=[selector, text],
    )


def test_the_catalog_shows_models_with_badges_and_fit_verdicts(page: Page) -> None:
    table = page.locator("#catalog-table")  # the table draws the rows in view: the smallest models first
    for text in ("Qwen3 0.6B", "Gemma 3 1B", "Qwen/Qwen3-0.6B-GGUF", "Q8_0"):
        assert table.get_by_text(text, exact=False).count() >= 1, text
    body = table.inner_text()
    assert "🧠 thinking" in body and "🛠️ tools" in body and "fits" in body
    page.locator("#catalog-choice input").click()  # every row is in the download list
    options = page.get_by_role("option").all_inner_texts()
    models = {option.split(" · ")[0] for option in options}
    assert len(models) >= 10 and {"gpt-oss 20B", "Gemma 3 4B", "SmolLM3 3B"} <= models
    verdicts = {option.rsplit(" · ", 1)[-1] for option in options}
    assert verdicts <= {"fits", "tight", "does not fit"} and "fits" in verdicts


def test_one_click_downloads_a_catalog_model_that_then_loads_with_its_capabilities(
    page: Page, server: Server
) -> None:
    page.locator("#catalog-table").get_by_text("Qwen3 0.6B", exact=True).first.click()
    wait_for_text(page, "#catalog-about", "Qwen3-0.6B-Q8_0.gguf")
    page.locator("#catalog-download").click()
    wait_for_text(page, "#catalog-status", "verified sha256")
    assert QWEN_MODEL in page.locator("#catalog-status").inner_text()
    assert (server.config.models_dir / QWEN_MODEL).is_file()
    wait_for_text(page, "#catalog-table", "downloaded")

    choose(page, "model-dropdown", QWEN_MODEL)
    wait_for_text(page, "#model-capabilities", "thinking")
    assert "tools" in page.locator("#model-capabilities").inner_text()
    page.locator("#model-load").click()
    wait_for_text(page, "#model-status", f"Loaded {QWEN_MODEL} with llama.cpp")


def test_the_download_panel_says_what_a_listed_model_can_do(page: Page) -> None:
    page.locator("#download-repo").get_by_role("textbox").fill("Qwen/Qwen3-0.6B-GGUF")
    page.locator("#download-list").click()
    wait_for_text(page, "#download-capabilities", "Can:")
    text = page.locator("#download-capabilities").inner_text()
    assert "🧠 thinking" in text and "🛠️ tools" in text and QWEN_FILE in text


def test_check_sizes_on_the_hub_reads_the_live_listing(page: Page, hub: FakeHub) -> None:
    served = len(hub.repos["Qwen/Qwen3-0.6B-GGUF"].branches["main"][QWEN_FILE])
    page.locator("#catalog-refresh").click()
    wait_for_text(page, "#catalog-status", "⚠️")  # the stand-in serves two of the catalog's repositories
    assert "was not found" in page.locator("#catalog-status").inner_text()
    first = page.locator("#catalog-table").get_by_text("Qwen/Qwen3-0.6B-GGUF").first
    assert first.count() == 1
    wait_for_text(page, "#catalog-table", f"{served / 1e6:.1f} MB")


def test_the_download_panel_marks_a_vision_projector(page: Page) -> None:
    page.locator("#download-repo").get_by_role("textbox").fill("ggml-org/gemma-3-4b-it-GGUF")
    page.locator("#download-list").click()
    wait_for_text(page, "#download-files", "vision projector")
    wait_for_text(page, "#download-capabilities", "Can:")
    assert "👁️ vision" in page.locator("#download-capabilities").inner_text()
