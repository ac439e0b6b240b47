"""The download panel in a real Chromium, against the real server and a local stand-in for the Hugging Face Hub."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.support.fake_hub import FakeHub, standard_hub
from tests.support.servers import Server
from webui.core.hardware.estimates import quick_fit

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GGUF = "palabre-test/tiny-GGUF"

# Records every percent the progress bar shows (a MutationObserver sees each update, however fast).
RECORD_PERCENTS = """
() => {
  window.__percents = [];
  window.__texts = [];
  const root = document.querySelector('#download-progress');
  const record = () => {
    const bar = root.querySelector('.download-progress');
    if (!bar) return;
    const value = parseFloat(bar.dataset.percent);
    const log = window.__percents;
    if (log[log.length - 1] !== value) log.push(value);
    window.__texts.push(bar.innerText);
  };
  window.__percentObserver?.disconnect();
  window.__percentObserver = new MutationObserver(record);
  window.__percentObserver.observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
}
"""


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    hub = standard_hub().start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub) -> Iterator[Server]:
    """``webui serve --no-model`` whose huggingface_hub talks to the stand-in Hub."""
    try:
        quick_fit(1_000_000)
    except NotImplementedError:
        pytest.skip("webui.core.hardware.estimates.quick_fit is not implemented yet")
    root = tmp_path_factory.mktemp("download-browser")
    server = Server(root)
    server.env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(root / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
        server.env.pop(name, None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, server: Server, hub: FakeHub) -> Iterator[Page]:
    hub.throttle, hub.die_after = None, None
    context = browser.new_context(viewport={"width": 1280, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#download-repo textarea, #download-repo input")
    yield page
    context.close()


def list_files(page: Page, repo: str) -> None:
    page.locator("#download-repo").get_by_role("textbox").fill(repo)
    page.locator("#download-list").click()
    page.wait_for_function(
        "() => document.querySelector('#download-status')?.innerText.includes('Tick what')"
    )
    # The capabilities line is read after the listing shows, from the GGUF's header on the Hub: wait for it, or
    # its request could take a knob (die_after) the test sets next for the download.
    page.wait_for_function(
        "() => document.querySelector('#download-capabilities')?.innerText.trim().length > 0"
    )


def tick(page: Page, file: str) -> None:
    page.locator("#download-choices label", has_text=file).click()


def status_text(page: Page) -> str:
    return page.locator("#download-status").inner_text()


def wait_for_status(page: Page, text: str, hub: FakeHub) -> None:
    """Wait until the status says ``text``; a timeout says what it said instead (and what the Hub was asked)."""
    try:
        page.wait_for_function(
            "(text) => document.querySelector('#download-status')?.innerText.includes(text)", arg=text
        )
    except PlaywrightTimeoutError:
        asked = hub.requests[-6:]
        raise AssertionError(
            f"the status never said {text!r}: {status_text(page)!r}; Hub requests: {asked}"
        ) from None


def test_list_files_then_download_with_a_moving_progress_bar(
    page: Page, server: Server, hub: FakeHub
) -> None:
    list_files(page, f"https://huggingface.co/{GGUF}")
    table = page.locator("#download-files")
    for text in ("tiny-model-Q4_K_M.gguf", "300.0 kB", "IQ4_XS", "tiny-model-F16-00002-of-00003.gguf"):
        assert table.get_by_text(text).count() >= 1, text
    assert page.locator("#download-choices label", has_text="tiny-model-F16.gguf (3 parts)").count() == 1

    hub.throttle = 250_000  # 500 kB take about two seconds: the bar is redrawn several times
    tick(page, "tiny-model-Q8_0.gguf")
    page.evaluate(RECORD_PERCENTS)
    page.locator("#download-start").click()
    wait_for_status(page, "verified sha256", hub)
    percents = page.evaluate("() => window.__percents")
    moving = [p for p in percents if 0 < p < 100]
    assert len(moving) >= 2 and moving == sorted(moving), percents
    assert percents[-1] == 100.0
    texts = page.evaluate("() => window.__texts")
    assert any(re.search(r"\d+\.\d% · [\d.]+ kB / 500\.0 kB · [\d.]+ kB/s", t) for t in texts), texts
    target = server.config.models_dir / "palabre-test_tiny-GGUF" / "tiny-model-Q8_0.gguf"
    assert target.stat().st_size == 500_000

    # The model list follows: the new file can be chosen at once.
    page.locator("#model-dropdown input").click()
    option = page.get_by_role("option", name="palabre-test_tiny-GGUF/tiny-model-Q8_0.gguf", exact=True)
    assert option.count() == 1


def test_an_interrupted_or_cancelled_download_resumes(page: Page, server: Server, hub: FakeHub) -> None:
    list_files(page, GGUF)
    tick(page, "tiny-model-Q4_K_M.gguf")
    hub.die_after = 100_000
    page.locator("#download-start").click()
    wait_for_status(page, "interrupted", hub)
    assert "Download again to resume" in status_text(page)

    hub.throttle = 40_000  # slow enough to press Cancel in the middle
    page.locator("#download-start").click()
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#download-progress .download-progress')?.dataset.percent) > 40"
    )
    page.locator("#download-cancel").click()
    wait_for_status(page, "Cancelled", hub)

    hub.throttle = None
    page.locator("#download-start").click()
    wait_for_status(page, "verified sha256", hub)
    assert "resumed" in status_text(page)
    ranges = [r for m, path, r in hub.requests if m == "GET" and path.endswith("tiny-model-Q4_K_M.gguf")]
    assert ranges[-2] == "bytes=100000-"  # after the interruption
    assert int(ranges[-1].removeprefix("bytes=").rstrip("-")) > 120_000  # after the cancel, past 40 %
    assert (
        server.config.models_dir / "palabre-test_tiny-GGUF" / "tiny-model-Q4_K_M.gguf"
    ).stat().st_size == 300_000


def test_a_model_in_the_hugging_face_cache_is_added_without_downloading(
    page: Page, server: Server, hub: FakeHub
) -> None:
    from huggingface_hub import hf_hub_download

    cache = Path(server.env["HF_HOME"]) / "hub"
    hf_hub_download(GGUF, "tiny-model-IQ4_XS.gguf", cache_dir=cache, endpoint=hub.url)
    page.locator("#download-cache").get_by_text("Models in the Hugging Face cache").click()
    wait = "() => document.querySelector('#download-cache-status')?.innerText.includes('1 model(s)')"
    page.wait_for_function(wait)
    page.locator("#download-cache-use").click()
    page.wait_for_function(
        "() => document.querySelector('#download-cache-status')?.innerText.includes('now in the models folder')"
    )
    link = server.config.models_dir / "palabre-test_tiny-GGUF" / "tiny-model-IQ4_XS.gguf"
    assert link.is_symlink() and link.stat().st_size == 250_000
