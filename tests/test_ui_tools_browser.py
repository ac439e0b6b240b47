"""Tools in the page, in a real Chromium against the real server: the tiny agent model calls get_weather on an
MCP server (the test server over stdio, listed in user_data/mcp.json, its tool not read-only); the call shows
as a step and waits for Approve (nothing runs before), then its result shows and the model answers from it;
Reject is reported to the model and the tool never runs; "Always for this tool" stops the questions; a
reload shows the steps again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.agent_models import WEATHER, weather_answer, weather_question
from tests.support.mcp_server import stdio_entry
from tests.support.page import choose, goto_chat, start_new_chat
from tests.support.servers import Server, open_page, wait_until_serving
from webui.benchmarks.browser import BOT
from webui.config import PROJECT_ROOT
from webui.core.agent import REJECTED
from webui.core.chats.store import ChatStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEP = "#chatbot .thought-group"
APPROVAL = "#chat-approval"


class AgentServer(Server):
    """``webui serve`` with the tiny agent model loaded (the base class serves the default model)."""

    def __init__(self, root: Path, model: Path) -> None:
        super().__init__(root)
        self.agent_model = model
        self.config = type(self.config)(user_data_dir=self.config.user_data_dir)
        models = self.config.user_data_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / model.name).symlink_to(model)

    def start(self) -> None:
        command = [sys.executable, "-m", "webui", "serve", "--port", str(self.port)]
        command += ["--user-data-dir", str(self.config.user_data_dir)]
        command += ["--model", self.agent_model.name, "--setting", "n_ctx=1024"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_serving(self.url, self.process, self.log)


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-notes") / "calls.txt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path, notes: Path) -> Iterator[Server]:
    running = AgentServer(tmp_path_factory.mktemp("tools-browser"), agent_gguf_path)
    mcp = {"mcpServers": {"weather": stdio_entry(notes, guarded=True)}}
    (running.config.user_data_dir / "mcp.json").write_text(json.dumps(mcp))
    running.start()
    yield running
    running.stop()


def calls_run(notes: Path) -> list[str]:
    return notes.read_text().splitlines() if notes.exists() else []


def set_up_tools(page: Page) -> None:
    """Deterministic sampling; tools on, only the MCP server's get_weather (the tool the model knows)."""
    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.wait_for_function(
        "() => document.querySelector('#params-status')?.innerText.includes('Deterministic')"
    )
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-tools").get_by_text("Tools", exact=True).click()
    page.locator("#chat-tools-servers").get_by_text("weather").wait_for()
    assert "3 tools" in page.locator("#chat-tools-servers").inner_text()
    changed = False
    use = page.locator("#chat-tools-use input[type=checkbox]")
    if not use.is_checked():
        use.check()
        changed = True
    for label in ("Calculator", "Current date and time", "Read a text file (allowed folders only)"):
        box = page.locator("#chat-tools-builtin").get_by_label(label)
        if box.is_checked():
            box.uncheck()
    assert (
        not page.locator("#chat-tools-builtin")
        .get_by_label("Fetch a web page (public addresses only)")
        .is_checked()
    )
    for name in ("save_note", "explode"):
        box = page.locator("#chat-tools-mcp").get_by_label(f"{name} (weather, asks first)")
        if box.is_checked():
            box.uncheck()
            changed = True
    assert page.locator("#chat-tools-mcp").get_by_label("get_weather (weather, asks first)").is_checked()
    if changed:  # the choices are saved as they are made (and kept for the next page)
        page.wait_for_function(
            "() => document.querySelector('#chat-tools-status')?.innerText.includes('Saved')"
        )


def ask(page: Page, question: str) -> None:
    page.locator("#chat-input textarea").fill(question)
    page.locator("#chat-send").click()
    page.locator('#chatbot [data-testid="user"]').filter(has_text=question).last.wait_for()


def wait_approval(page: Page, timeout: float = 120) -> None:
    """Until the approval prompt shows (the status line says why when it never does)."""
    deadline = time.monotonic() + timeout
    while not page.locator(APPROVAL).is_visible():
        status = page.locator("#chat-status").inner_text()
        assert time.monotonic() < deadline, f"no approval prompt; status {status!r}"
        time.sleep(0.05)


def wait_finished(page: Page, timeout: float = 120) -> str:
    """Until the status line shows the reply's stats; the last bot message's text."""
    deadline = time.monotonic() + timeout
    while "tokens/s" not in page.locator("#chat-status").inner_text():
        assert time.monotonic() < deadline, (
            f"no finished reply; status {page.locator('#chat-status').inner_text()!r}"
        )
        time.sleep(0.05)
    time.sleep(0.3)
    return page.locator(BOT).last.inner_text().strip()


def step_titles(page: Page) -> list[str]:
    return [t.strip() for t in page.locator(f"{STEP} [role=button]").all_inner_texts()]


def last_message(server: Server):  # type: ignore[no-untyped-def]
    with ChatStore(server.config.user_data_dir / "palabre.db") as store:
        newest = store.conversations(limit=1)[0]
        return store.get(newest.id).messages[-1]


def test_a_call_waits_for_approve_then_its_result_shows_as_a_step(
    browser: Browser, server: Server, notes: Path
) -> None:
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        set_up_tools(page)
        ask(page, weather_question("Paris"))
        wait_approval(page)
        page.wait_for_function(
            "() => document.querySelector('#chat-approval-text')?.innerText.includes('get_weather')"
        )
        prompt = page.locator("#chat-approval-text").inner_text()
        assert "get_weather" in prompt and '"city": "Paris"' in prompt  # the full arguments
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chatbot .thought-group [role=button]')]"
            ".some(b => b.innerText.includes('waiting for your approval'))"
        )
        time.sleep(1.0)
        assert calls_run(notes) == []  # nothing runs while the question is open
        page.locator("#chat-approve").click()
        answer = wait_finished(page)
        assert answer == weather_answer("Paris")
        assert calls_run(notes) == ["get_weather Paris"]
        assert not page.locator(APPROVAL).is_visible()
        assert any("get_weather" in title and "🔧" in title for title in step_titles(page))
        step = page.locator(STEP).filter(has_text="get_weather").last
        step.locator("[role=button]").click()  # open it: arguments and result
        body = step.inner_text()
        assert '"city": "Paris"' in body and json.dumps(WEATHER["Paris"]) in body

        page.reload()  # the steps are saved with the reply
        page.wait_for_selector("#chat-input textarea")
        page.locator(STEP).filter(has_text="get_weather").first.wait_for()
        assert page.locator(BOT).last.inner_text().strip() == weather_answer("Paris")
    saved = last_message(server)
    assert saved.tool_rounds[0].calls[0].status == "done"


def test_reject_is_reported_to_the_model_and_nothing_runs(
    browser: Browser, server: Server, notes: Path
) -> None:
    before = calls_run(notes)
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        set_up_tools(page)
        start_new_chat(page)
        ask(page, weather_question("London"))
        wait_approval(page)
        page.locator("#chat-reject").click()
        # The model is asked again with the rejection as the result; it calls again, and is rejected again.
        deadline = time.monotonic() + 120
        while "tokens/s" not in page.locator("#chat-status").inner_text():
            if page.locator(APPROVAL).is_visible():
                page.locator("#chat-reject").click()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert any("rejected" in title for title in step_titles(page))
    assert calls_run(notes) == before  # the tool never ran
    saved = last_message(server)
    calls = [call for round_ in saved.tool_rounds for call in round_.calls]
    assert calls and all((c.status, c.result) == ("rejected", REJECTED) for c in calls)


def test_always_for_this_tool_stops_asking(browser: Browser, server: Server, notes: Path) -> None:
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        set_up_tools(page)
        start_new_chat(page)
        ask(page, weather_question("Tokyo"))
        wait_approval(page)
        page.locator("#chat-approve-always").click()
        assert wait_finished(page) == weather_answer("Tokyo")
        start_new_chat(page)
        ask(page, weather_question("Berlin"))  # same page session: no question this time
        assert wait_finished(page) == weather_answer("Berlin")
        assert not page.locator(APPROVAL).is_visible()
    assert calls_run(notes)[-2:] == ["get_weather Tokyo", "get_weather Berlin"]
