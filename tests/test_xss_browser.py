"""The page renders model output and chat titles as Markdown: hostile HTML in them must never run script.

The model is made to "say" the payloads (the reply starts with them through *Start reply with*, and the model
continues), the user's own message carries them too (it also becomes the conversation's title), and the page
is reloaded so that the stored conversation is rendered again from the database. Each payload would set a
window flag or open a dialog if it ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page

from tests.support.servers import Server, open_page
from webui.benchmarks.browser import BOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MARKER = "xss-marker"
PAYLOADS = [
    '<img src=x onerror="window.__xss=1;alert(1)">',
    "<script>window.__xss=2;alert(2)</script>",
    "[a markdown link](javascript:window.__xss=3)",
    '<svg onload="window.__xss=4"><circle r="4"/></svg>',
    '<a href="javascript:window.__xss=5">an html link</a>',
    '<iframe srcdoc="<script>parent.__xss=6;parent.alert(6)</script>"></iframe>',
    '<details open ontoggle="window.__xss=7">details</details>',
    '<body onload="window.__xss=8">',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=9">',
    "![image](javascript:window.__xss=10)",
    '<a href="data:text/html,<script>alert(11)</script>">a data link</a>',
    '<input autofocus onfocus="window.__xss=12">',
    '`<img src=x onerror=window.__xss=13>` and <object data="javascript:window.__xss=14"></object>',
]
HOSTILE = f"{MARKER} " + " ".join(PAYLOADS)
SCRIPTABLE = """(selector) => {
    const found = [];
    for (const root of document.querySelectorAll(selector)) {
        for (const el of root.querySelectorAll('*')) {
            for (const attr of el.attributes) {
                const name = attr.name.toLowerCase();
                const value = attr.value.trim().toLowerCase();
                if (name.startsWith('on')) found.push(`${el.tagName} ${name}`);
                if (['href', 'src', 'action', 'formaction', 'data', 'xlink:href'].includes(name)
                    && (value.startsWith('javascript:') || value.startsWith('data:text/html')))
                    found.push(`${el.tagName} ${name}=${value.slice(0, 40)}`);
            }
            if (['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED'].includes(el.tagName)) found.push(el.tagName);
        }
    }
    return found;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("xss"), default_model_path)
    running.start()
    yield running
    running.stop()


def ready(page: Page) -> None:
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")


def assert_nothing_ran(page: Page, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__xss") is None, "a payload ran"
    assert dialogs == [], f"a payload opened a dialog: {dialogs}"
    leftovers = page.evaluate(SCRIPTABLE, "#chatbot, #chat-conversations")
    assert leftovers == [], f"scriptable markup reached the page: {leftovers}"


def test_hostile_markdown_in_replies_and_messages_never_runs(browser: Browser, server: Server) -> None:
    with open_page(browser, server.url) as page:
        dialogs: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        ready(page)
        page.get_by_role("tab", name="Parameters").click()
        number = page.locator("#param-max_new_tokens input[type=number]")
        number.fill("8")
        number.press("Tab")
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-start-with textarea").fill(HOSTILE)
        page.locator("#chat-input textarea").fill(f"Repeat after me: {HOSTILE}")
        page.locator("#chat-send").click()
        page.wait_for_function(f"() => document.querySelectorAll('{BOT}').length === 1")
        page.wait_for_function(  # the reply has ended
            "() => !(document.querySelector('#chat-status')?.innerText ?? '').startsWith('Generating')"
        )
        page.wait_for_timeout(1000)  # any onerror / onload would have fired by now
        reply = page.locator(BOT).last.inner_text()
        assert MARKER in reply  # the model's reply (opened with the payloads) is on the page
        assert "a markdown link" in reply  # ... rendered as Markdown, its text kept
        assert_nothing_ran(page, dialogs)

        page.reload()  # the stored conversation is rendered again, from the database
        ready(page)
        page.wait_for_function(
            f"() => (document.querySelector('{BOT}')?.innerText ?? '').includes('{MARKER}')"
        )
        page.wait_for_timeout(1000)
        assert MARKER in page.locator("#chat-conversations").inner_text()  # the title holds the payloads too
        assert_nothing_ran(page, dialogs)
