"""A thinking model in a real Chromium against the real server: the reasoning streams into a "Thinking…" block
above the answer, which closes as "Thought for N s" once the answer begins; the saved reply is the answer alone;
a reload shows the block again; the next turn's prompt (Send to Notebook) holds no earlier reasoning; and
HTML in a reasoning is shown as text, never run.

The default SmolLM2 model thinks through an instruction template that opens its reply inside <think>
(tests/support/thinking.py); a thinking budget makes the engine close the block after a few tokens, and the model
then writes its answer: real reasoning, then a real answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import choose, goto_chat, send_and_watch
from tests.support.servers import Server, open_page
from tests.support.thinking import THINKING_CHATML, THINKING_TEMPLATE_NAME
from webui.benchmarks.browser import BOT
from webui.core.chats.store import ChatStore
from webui.core.templates.store import TemplateStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "Explain how a bicycle works."  # the model reasons past the budget, then answers
BUDGET = 32
THOUGHT = "#chatbot .thought-group"

# Records each state the (last) reasoning block shows: its title, whether it is open, and its text.
RECORD_THOUGHTS = """
() => {
  window.__thoughts = [];
  const root = document.querySelector('#chatbot');
  const record = () => {
    const groups = root.querySelectorAll('.thought-group');
    if (!groups.length) return;
    const group = groups[groups.length - 1];
    const title = group.querySelector('[role=button]')?.innerText.trim() ?? '';
    const open = group.children.length > 1;
    const text = open ? group.children[1].innerText.trim() : '';
    const log = window.__thoughts;
    const last = log[log.length - 1];
    if (!last || last.title !== title || last.open !== open || last.text !== text) log.push({title, open, text});
  };
  window.__thoughtObserver?.disconnect();
  window.__thoughtObserver = new MutationObserver(record);
  window.__thoughtObserver.observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""
HOSTILE_REASONING = '<img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script>'
SCRIPTABLE = """() => {
    const found = [];
    for (const el of document.querySelectorAll('#chatbot *')) {
        for (const attr of el.attributes) if (attr.name.toLowerCase().startsWith('on')) found.push(el.tagName);
        if (['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED'].includes(el.tagName)) found.push(el.tagName);
    }
    return found;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("thinking-browser"), default_model_path)
    config = running.config
    TemplateStore(config.bundled_templates_dir, config.user_templates_dir).save(
        THINKING_TEMPLATE_NAME, THINKING_CHATML
    )
    running.start()
    yield running
    running.stop()


def words(text: str) -> str:
    return " ".join(text.split())


def last_reply(server: Server) -> tuple[str, str, float | None]:
    """(answer, reasoning, seconds) of the newest conversation's last message, read from the database."""
    with ChatStore(server.config.user_data_dir / "palabre.db") as store:
        newest = store.conversations(limit=1)[0]
        message = store.get(newest.id).messages[-1]
    assert message.role == "assistant"
    return message.content, message.reasoning, message.reasoning_seconds


def thought_state(page: Page) -> tuple[str, bool]:
    group = page.locator(THOUGHT).last
    return group.locator("[role=button]").inner_text().strip(), group.locator(":scope > div").count() > 1


def test_reasoning_streams_above_the_answer_and_stays_out_of_the_next_prompt(
    browser: Browser, server: Server
) -> None:
    with open_page(browser, server.url) as page:
        goto_chat(page, server.url)
        assert not page.locator("#param-enable_thinking").is_visible()  # SmolLM2's own template: no thinking

        page.get_by_role("tab", name="Parameters").click()
        choose(page, "preset-dropdown", "Deterministic")
        page.wait_for_function(
            "() => document.querySelector('#params-status')?.innerText.includes('Deterministic')"
        )
        choose(page, "template-dropdown", THINKING_TEMPLATE_NAME)
        tokens = page.locator("#param-max_new_tokens input[type=number]")
        tokens.fill("48")
        tokens.press("Tab")
        page.get_by_role("tab", name="Chat").click()

        # The template reads enable_thinking and thinks: the Think switch and the budget show, no effort.
        page.locator("#param-enable_thinking").wait_for(state="visible")
        assert page.locator("#param-enable_thinking input[type=checkbox]").is_checked()
        assert not page.locator("#param-reasoning_effort").is_visible()
        budget = page.locator("#param-thinking_budget input[type=number]")
        budget.fill(str(BUDGET))
        budget.press("Tab")

        page.evaluate(RECORD_THOUGHTS)
        send_and_watch(page, QUESTION)
        seen = page.evaluate("() => window.__thoughts")
        thinking = [state for state in seen if state["title"].startswith("Thinking")]
        assert thinking and thinking[-1]["open"] and thinking[-1]["text"], f"no open Thinking… block: {seen}"
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chatbot .thought-group [role=button]')]"
            ".some(t => t.innerText.includes('Thought for'))"
        )
        title, is_open = thought_state(page)
        assert re.fullmatch(r"Thought for \d+(\.\d)? s", title) and not is_open, (title, seen)
        done = next(i for i, state in enumerate(seen) if state["title"].startswith("Thought for"))
        assert not any(state["title"].startswith("Thinking") for state in seen[done:])

        # The saved reply is the answer alone; the reasoning is kept beside it, and shown when opened.
        answer, reasoning, seconds = last_reply(server)
        assert answer.strip() and reasoning.strip() and seconds is not None and "think>" not in answer
        bubble = page.locator(BOT).last.inner_text()  # the answer's bubble, below the block
        assert words(bubble) == words(
            re.sub(r"^\d+\.\s*", "", answer, flags=re.M)
        )  # list numbers drawn apart
        page.locator(THOUGHT).last.locator("[role=button]").click()
        page.wait_for_function("() => document.querySelector('#chatbot .thought-group')?.children.length > 1")
        assert words(reasoning)[:30] in words(page.locator(THOUGHT).last.inner_text())

        # A reload draws the same closed block, from the database.
        goto_chat(page, server.url)
        page.locator(THOUGHT).last.wait_for()
        title, is_open = thought_state(page)
        assert title.startswith("Thought for") and not is_open

        # The next turn's prompt holds the answer but not the reasoning.
        page.locator("#chat-to-notebook").click()
        notebook = page.locator("#notebook-text textarea")
        notebook.wait_for(state="visible")
        page.wait_for_function(
            "() => document.querySelector('#notebook-text textarea').value.includes('<|im_start|>assistant')"
        )
        prompt = notebook.input_value()
        # The earlier turn is the answer alone (the model may repeat its reasoning in it: compare the turn).
        assert (
            f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n" in prompt
        )
        assert prompt.count("<think>") == 1 and prompt.endswith("<|im_start|>assistant\n<think>\n")


def test_html_in_a_stored_reasoning_is_shown_as_text(browser: Browser, server: Server) -> None:
    with ChatStore(server.config.user_data_dir / "palabre.db") as store:
        conversation = store.create(title="Hostile thoughts")
        store.append(conversation.id, "user", "Hi")
        store.append(
            conversation.id, "assistant", "Hello.", reasoning=HOSTILE_REASONING, reasoning_seconds=1.0
        )
    with open_page(browser, server.url) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        goto_chat(page, server.url)
        page.locator("#chat-conversations label", has_text="Hostile thoughts").click()
        page.locator(THOUGHT).last.wait_for()
        page.locator(THOUGHT).last.locator("[role=button]").click()
        page.wait_for_function("() => document.querySelector('#chatbot .thought-group')?.children.length > 1")
        shown = page.locator(THOUGHT).last.inner_text()
        assert '<img src=x onerror="window.__xss=1">' in shown and "<script>" in shown
        time.sleep(0.5)  # give a payload the chance to run
        assert page.evaluate("() => window.__xss") is None and dialogs == []
        assert page.evaluate(SCRIPTABLE) == []
