"""Helpers that drive the page in Chromium (Playwright): dropdowns, sending a message and watching the reply,
the Parameters and Character tabs."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page

from webui.benchmarks.browser import BOT


def choose(page: Page, dropdown: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown with elem_id ``dropdown``."""
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


# Records every text the newest bot message shows (a MutationObserver sees each DOM update, however fast).
RECORD_BOT_TEXTS = """
(start) => {
  window.__botTexts = [];
  const root = document.querySelector('#chatbot');
  const record = () => {
    const bots = root.querySelectorAll('[data-testid="bot"]');
    if (bots.length <= start) return;
    const text = bots[bots.length - 1].innerText.trim();
    const log = window.__botTexts;
    if (text && log[log.length - 1] !== text) log.push(text);
  };
  window.__botObserver?.disconnect();
  window.__botObserver = new MutationObserver(record);
  window.__botObserver.observe(root, {subtree: true, childList: true, characterData: true});
}
"""


def send_and_watch(
    page: Page, text: str, *, press_enter: bool = False, timeout: float = 120
) -> tuple[list[str], str]:
    """Send ``text`` (Send button or Enter); return every text the reply showed while streaming, and the last.

    The reply is over when the status line shows new stats: "Generating…" holds it from Send until then.
    """
    status = page.locator("#chat-status")
    before = status.inner_text()
    bots = page.locator(BOT)
    replies_before = bots.count()
    page.evaluate(RECORD_BOT_TEXTS, replies_before)
    page.locator("#chat-input textarea").fill(text)
    if press_enter:
        page.locator("#chat-input textarea").press("Enter")
    else:
        page.locator("#chat-send").click()
    generating_seen = False
    deadline = time.monotonic() + timeout
    while True:
        now = status.inner_text()
        generating_seen = generating_seen or now.startswith("Generating")
        if "tokens/s" in now and (generating_seen or now != before):
            break
        assert time.monotonic() < deadline, f"no finished reply after {timeout} s; status {now!r}"
        time.sleep(0.02)
    page.wait_for_function(f"() => document.querySelectorAll('{BOT}').length > {replies_before}")
    final = bots.last.inner_text().strip()
    while True:  # let the chatbot finish rendering the last update
        time.sleep(0.2)
        settled = bots.last.inner_text().strip()
        if settled == final:
            break
        final = settled
    return page.evaluate("() => window.__botTexts"), final


def goto_chat(page: Page, url: str) -> None:
    """Go to ``url`` and wait until the Chat tab shows the loaded model."""
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")


def start_new_chat(page: Page) -> None:
    """Click New chat and wait until its update has come back.

    New chat cancels the session's running reply when it is handled: a message sent before its update arrives
    could be cancelled by it. The update empties the message box, so a marker typed there first tells when.
    """
    box = page.locator("#chat-input textarea")
    box.fill("(waiting for New chat)")
    page.locator("#chat-clear").click()
    page.wait_for_function("() => document.querySelector('#chat-input textarea')?.value === ''")


def set_max_new_tokens(page: Page, tokens: int) -> None:
    """Set max_new_tokens on the Parameters tab, then come back to the Chat tab."""
    page.get_by_role("tab", name="Parameters").click()
    number = page.locator("#param-max_new_tokens input[type=number]")
    number.fill(str(tokens))
    number.press("Tab")
    page.get_by_role("tab", name="Chat").click()


def open_character_tab(page: Page) -> None:
    """Open the Character tab and wait until its widgets are drawn."""
    page.get_by_role("tab", name="Chat", exact=True).wait_for()
    tab = page.get_by_role("tab", name="Character", exact=True)
    if tab.count() == 0:
        pytest.fail("The page has no Character tab: webui/ui/app.py must build CharacterTab.")
    tab.click()  # Gradio draws a tab when first shown
    page.locator("#character-dropdown input").wait_for()


def wait_character_status(page: Page, text: str) -> None:
    """Wait until the Character tab's status line includes ``text``."""
    page.wait_for_function(
        "(text) => document.querySelector('#character-status')?.innerText.includes(text)", arg=text
    )
