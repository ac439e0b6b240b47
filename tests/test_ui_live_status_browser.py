"""The page follows the server without a reload: an idle unload, and loads and unloads made through the HTTP API,
in a real Chromium against the real `webui serve` and the real default model. Also the pieces underneath: the
engine's status (what the idle watcher did) and the timer's decision to redraw or to stay quiet."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr
import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.fakes import scripted_service
from tests.support.page import set_max_new_tokens
from tests.support.servers import Server, open_page
from tests.support.waiting import eventually
from webui.benchmarks.browser import BOT
from webui.core.engine import IdleUnload
from webui.core.engine_types import EngineStatus, LoadedModelStatus
from webui.core.service import Service
from webui.provision import DEFAULT_MODEL_FILE
from webui.ui.live_status import LiveStatus, duration_text, fingerprint, idle_unload_line, page_status
from webui.ui.state import CHAT, SessionJobs

IDLE_MINUTES = "0.05"  # 3 seconds: longer than one tick, so the page's own load is seen before the unload
MODEL_STATUS = "#model-status"
CHAT_STATUS = "#chat-status"


# -- the engine's status and the timer's decisions (scripted loader) -------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = scripted_service(tmp_path, {"first-chatml.gguf": "Hello| there|."})
    yield service
    service.close()


def test_the_engine_status_says_when_the_idle_watcher_unloaded_the_model(service: Service) -> None:
    engine = service.engine
    loaded = engine.status()
    assert (loaded.model, loaded.loader, loaded.activity, loaded.idle_unload) == (
        "first-chatml.gguf",
        "llama.cpp",
        "idle",
        None,
    )
    assert engine.status() == loaded  # nothing happened: equal, so the page sends nothing
    assert engine.unload_if_idle(0.0)
    unloaded = engine.status()
    assert unloaded.model is None and unloaded.idle_unload == IdleUnload("first-chatml.gguf", 0.0)
    assert "was unloaded when its last request ended" in page_status(service)
    service.load_model("first-chatml.gguf")  # a load forgets the idle unload ...
    assert engine.status().idle_unload is None and page_status(service).startswith("Loaded: first-chatml")
    engine.unload_if_idle(0.0)
    service.unload_model()  # ... and so does an unload asked for by someone
    assert engine.status().idle_unload is None and page_status(service) == "No model loaded."


def test_idle_times_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (3, 72, 600, 90 * 60, 2 * 3600)] == [
        "3 s",
        "72 s",
        "10 min",
        "1.5 h",
        "2 h",
    ]
    line = idle_unload_line(IdleUnload("smol.gguf", 600))
    assert (
        line.startswith("No model loaded: smol.gguf was unloaded after 10 min idle.")
        and "next message" in line
    )


def test_the_timer_redraws_only_when_the_engine_changed_and_never_during_the_sessions_reply(
    service: Service,
) -> None:
    live = LiveStatus(service)
    jobs = SessionJobs()
    skipped = type(gr.skip())
    seen, shown, news = live.tick(jobs, None)  # a fresh page: everything is new
    assert shown == "first-chatml.gguf (llama.cpp) #1"
    assert live.show(jobs, news, 2) == (service.status_line(),) * 2  # what the status lines then show
    assert all(isinstance(value, skipped) for value in live.tick(jobs, seen))  # nothing changed
    assert live.remember() == (seen, shown)
    service.engine.unload_if_idle(0.0)
    reply = ScriptedJob()
    jobs.start(CHAT, reply)
    assert all(isinstance(value, skipped) for value in live.tick(jobs, seen))  # its reply streams
    jobs.finish(CHAT, reply)
    seen, shown, news = live.tick(jobs, seen)
    assert shown == "" and "was unloaded" in live.show(jobs, news, 1)[0]
    # News found just before this session's own reply began is not shown over its "Generating…".
    jobs.start(CHAT, reply)
    assert all(isinstance(value, skipped) for value in live.show(jobs, news, 2))
    jobs.finish(CHAT, reply)
    # The same text found again after another change is still new news (the hidden box's value changes).
    assert live.tick(jobs, None)[2] != news


def test_another_models_reply_starting_or_ending_is_news_for_the_model_tab() -> None:
    """The Model tab lists every loaded model with what it does; the timer redraws it when any of them changes."""
    page_model = LoadedModelStatus("a.gguf", "llama.cpp", "idle", 1, 0, True)
    other = LoadedModelStatus("b.gguf", "llama.cpp", "generating", 1, 0, False)
    busy = EngineStatus("a.gguf", "llama.cpp", "idle", None, 2, None, (page_model, other))
    ended = replace(other, activity="idle")
    done = replace(busy, models=(page_model, ended))
    assert fingerprint(busy) != fingerprint(done)
    # Its memory alone is no news: it changes only with a load, which is news already.
    assert fingerprint(done) == fingerprint(
        replace(done, models=(page_model, replace(ended, memory_bytes=2)))
    )


class ScriptedJob:
    def cancel(self) -> None:
        pass


# -- the real server in Chromium -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("live-status"), extra_args=["--idle-unload", IDLE_MINUTES])
    (server.config.models_dir / default_model_path.name).symlink_to(default_model_path)
    with server.running():
        yield server


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with open_page(browser, server.url) as page:
        page.wait_for_selector("#chat-input textarea")
        page.wait_for_function(f"() => document.querySelector('{CHAT_STATUS}')?.innerText.trim().length > 0")
        yield page


def shows(page: Page, selector: str, text: str, within_ms: int = 20_000) -> None:
    """Wait until ``selector``'s text contains ``text`` (the page is never reloaded)."""
    page.wait_for_function(
        "([selector, text]) => (document.querySelector(selector)?.innerText ?? '').includes(text)",
        arg=[selector, text],
        timeout=within_ms,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_the_open_page_shows_the_idle_unload_without_a_reload(page: Page) -> None:
    page.evaluate("window.__opened = performance.timeOrigin")
    page.get_by_role("tab", name="Model").click()
    page.locator("#model-load").click()
    shows(page, MODEL_STATUS, f"Loaded {DEFAULT_MODEL_FILE}")  # the page's own load
    idle_line = f"No model loaded: {DEFAULT_MODEL_FILE} was unloaded after 3 s idle."
    shows(page, MODEL_STATUS, idle_line)
    page.get_by_role("tab", name="Chat").click()
    shows(page, CHAT_STATUS, idle_line, within_ms=5_000)
    assert page.evaluate("window.__opened === performance.timeOrigin")  # the same page, not a reload
    # As in Ollama and LM Studio, the next message brings the model back (with its settings) and is answered.
    set_max_new_tokens(page, 8)
    box = page.locator("#chat-input textarea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    shows(page, CHAT_STATUS, "tokens/s", within_ms=120_000)
    assert page.locator(BOT).last.text_content().strip()


@pytest.mark.browser
@pytest.mark.slow
def test_the_open_page_follows_loads_and_unloads_made_through_the_api(page: Page, server: Server) -> None:
    page.evaluate("window.__opened = performance.timeOrigin")
    with httpx.Client(base_url=server.url, timeout=120) as http:
        # Ollama's empty request loads the model; keep_alive -1 keeps it past the 3 s idle limit.
        loaded = http.post("api/generate", json={"model": DEFAULT_MODEL_FILE, "keep_alive": -1})
        assert loaded.status_code == 200, loaded.text
        shows(page, CHAT_STATUS, f"Loaded: {DEFAULT_MODEL_FILE} (llama.cpp).")

        assert http.post("v1/internal/model/unload").json() == {"unloaded": DEFAULT_MODEL_FILE}
        page.wait_for_function(
            f"() => document.querySelector('{CHAT_STATUS}')?.innerText.trim() === 'No model loaded.'"
        )

        page.get_by_role("tab", name="Model").click()
        again = http.post(
            "v1/internal/model/load", json={"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 1024}}
        )
        assert again.status_code == 200, again.text
        shows(page, MODEL_STATUS, f"Loaded: {DEFAULT_MODEL_FILE} (llama.cpp).")
        n_ctx = page.locator("#setting-llama-cpp-n_ctx input")  # the Model tab shows how it was loaded
        eventually(lambda: n_ctx.input_value() == "1024", "the Model tab shows the API's n_ctx", within=10)

        # Back to the --idle-unload limit (a request without keep_alive), so the tests do not depend on order.
        assert http.post("api/generate", json={"model": DEFAULT_MODEL_FILE}).status_code == 200
    assert page.evaluate("window.__opened === performance.timeOrigin")


# Records every text the chat's status line shows (a MutationObserver sees each update, however brief).
RECORD_STATUS = """
() => {
  window.__statuses = [];
  const status = document.querySelector('#chat-status');
  new MutationObserver(() => window.__statuses.push(status.textContent.trim()))
    .observe(status, {childList: true, subtree: true, characterData: true});
}
"""


@pytest.mark.browser
@pytest.mark.slow
def test_the_timer_leaves_a_streaming_reply_and_its_status_alone(page: Page, server: Server) -> None:
    ticks: list[float] = []
    page.on("request", lambda r: ticks.append(time.monotonic()) if r.url.endswith("/run/predict") else None)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        loaded = http.post("api/generate", json={"model": DEFAULT_MODEL_FILE, "keep_alive": -1})
        assert loaded.status_code == 200, loaded.text
        shows(page, CHAT_STATUS, f"Loaded: {DEFAULT_MODEL_FILE}")
        set_max_new_tokens(page, 256)  # long enough for a tick or two while it streams
        # Nothing changes: the ticks (every 2 s) leave the status line untouched, not even a progress timer.
        page.evaluate(RECORD_STATUS)
        before = len(ticks)
        page.wait_for_timeout(4500)
        assert len(ticks) > before, "no tick while idle: nothing was tested"
        assert page.evaluate("window.__statuses") == []
        page.evaluate(RECORD_STATUS)
        box = page.locator("#chat-input textarea")
        box.fill("Write a long story about a dragon who learns to bake bread.")
        box.press("Enter")
        shows(page, CHAT_STATUS, "Generating")
        started = time.monotonic()
        shows(page, CHAT_STATUS, "tokens/s", within_ms=120_000)  # the reply ended
        ended = time.monotonic()
        assert http.post("api/generate", json={"model": DEFAULT_MODEL_FILE}).status_code == 200
    assert any(started < t < ended for t in ticks), "no tick while the reply streamed: nothing was tested"
    # Without Gradio's progress timer ("0.4s") shown while the Send event starts.
    statuses = [re.sub(r"^[\d.]+s\s*", "", s) for s in page.evaluate("window.__statuses")]
    during = statuses[next(i for i, s in enumerate(statuses) if s.startswith("Generating")) :]
    # "Generating…" until the reply's own final status: the timer never wrote in between (a tick just after the
    # reply ended may write the same final status once more).
    end = next(i for i, s in enumerate(during) if "tokens/s" in s)
    assert all(s.startswith("Generating") for s in during[:end] if s), [s[:60] for s in during]
    assert all("tokens/s" in s for s in during[end:]), [s[:60] for s in during]
