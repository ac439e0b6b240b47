"""Stored conversations in a real Chromium against the real server and default model: a personality's greeting,
two conversations, regenerated versions with ◀ / ▶, a page reload and a server restart on the same user_data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import choose, goto_chat, send_and_watch, set_max_new_tokens, start_new_chat
from tests.support.servers import Server
from webui.benchmarks.browser import BOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GREETING = "How can I help you today?"
FIRST = "Tell me about the city of Paris."
SECOND = "Name three colors."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("chats-browser"), default_model_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bot_texts(page: Page) -> list[str]:
    return [text.strip() for text in page.locator(BOT).all_inner_texts()]


def user_texts(page: Page) -> list[str]:
    return [text.strip() for text in page.locator('#chatbot [data-testid="user"]').all_inner_texts()]


def wait_for_bots(page: Page, count: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('{BOT}').length === {count}")


def regenerate_and_wait(page: Page) -> None:
    """Click Regenerate and wait until the new version is complete.

    A short reply can finish within one page update, so the "Generating…" status may never be drawn: wait for
    what must be true at the end instead (a second version exists, nothing is generating, the text is stable).
    """
    page.locator("#chat-regenerate").click()
    page.wait_for_function("() => document.querySelector('#chat-alt-label')?.innerText.includes('2/2')")
    page.wait_for_function(
        "() => { const s = document.querySelector('#chat-status')?.innerText ?? '';"
        " return !s.startsWith('Generating') && s.includes('tokens/s'); }"
    )
    last = None
    while (now := bot_texts(page)[-1]) != last:
        last = now
        time.sleep(0.5)


def conversation_entry(page: Page, title: str) -> object:
    return page.locator("#chat-conversations label", has_text=title)


def test_conversations_are_stored_switched_and_survive_a_restart(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    goto_chat(page, server.url)

    page.get_by_role("tab", name="Parameters").click()
    choose(page, "preset-dropdown", "Deterministic")
    page.wait_for_function(
        "() => document.querySelector('#params-status')?.innerText.includes('Deterministic')"
    )
    set_max_new_tokens(page, 40)

    # A personality: its greeting is the first message of a new conversation.
    choose(page, "chat-personality", "Assistant")
    wait_for_bots(page, 1)
    assert bot_texts(page) == [GREETING]
    shown, first_reply = send_and_watch(page, FIRST)
    assert len(set(shown)) >= 2, f"the reply did not stream: {shown!r}"
    assert first_reply and user_texts(page) == [FIRST]
    assert bot_texts(page) == [GREETING, first_reply]

    # Regenerate (a shorter reply): both versions are kept, ◀ / ▶ switch between them.
    set_max_new_tokens(page, 6)
    regenerate_and_wait(page)
    second_reply = bot_texts(page)[-1]
    assert second_reply and second_reply != first_reply
    page.locator("#chat-alt-prev").click()
    page.wait_for_function("() => document.querySelector('#chat-alt-label')?.innerText.includes('1/2')")
    assert bot_texts(page)[-1] == first_reply
    page.locator("#chat-alt-next").click()
    page.wait_for_function("() => document.querySelector('#chat-alt-label')?.innerText.includes('2/2')")
    assert bot_texts(page)[-1] == second_reply

    # A second conversation; the list switches between the two.
    set_max_new_tokens(page, 20)
    start_new_chat(page)
    wait_for_bots(page, 1)
    _, color_reply = send_and_watch(page, SECOND)
    assert user_texts(page) == [SECOND]
    conversation_entry(page, FIRST[:20]).wait_for()
    conversation_entry(page, SECOND[:15]).wait_for()
    conversation_entry(page, FIRST[:20]).click()
    wait_for_bots(page, 2)
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({FIRST!r})")
    assert user_texts(page) == [FIRST] and bot_texts(page) == [GREETING, second_reply]
    conversation_entry(page, SECOND[:15]).click()
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({SECOND!r})")
    assert user_texts(page) == [SECOND] and bot_texts(page) == [GREETING, color_reply]

    # A reload shows the conversation this browser showed last, and the list.
    page.reload()
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({SECOND!r})")
    assert bot_texts(page) == [GREETING, color_reply]
    conversation_entry(page, FIRST[:20]).wait_for()
    assert page.locator("#chat-personality input").input_value() == "Assistant"

    # A server restart on the same user_data: every message is still there.
    server.stop()
    server.start()
    goto_chat(page, server.url)
    conversation_entry(page, FIRST[:20]).click()
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({FIRST!r})")
    wait_for_bots(page, 2)
    assert user_texts(page) == [FIRST] and bot_texts(page) == [GREETING, second_reply]
    assert "2/2" in page.locator("#chat-alt-label").inner_text()
    conversation_entry(page, SECOND[:15]).click()
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({SECOND!r})")
    assert bot_texts(page) == [GREETING, color_reply]
    context.close()


def test_killing_the_server_mid_reply_loses_no_earlier_message(browser: Browser, server: Server) -> None:
    from webui.core.chats.store import ChatStore

    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    goto_chat(page, server.url)
    choose(page, "chat-personality", "(none)")
    start_new_chat(page)
    set_max_new_tokens(page, 24)
    question = "What is the capital of France?"
    _, answer = send_and_watch(page, question)
    assert answer

    # A long reply; the server is killed (SIGKILL) while it streams.
    set_max_new_tokens(page, 800)
    long_question = "Write a very long story about a dragon who learns to cook."
    page.locator("#chat-input textarea").fill(long_question)
    page.locator("#chat-send").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('{BOT}').length === 2 && "
        f"document.querySelectorAll('{BOT}')[1].innerText.length > 20"
    )
    assert server.process is not None
    server.process.kill()  # SIGKILL: no shutdown code runs
    server.process.wait(timeout=10)
    server.process = None

    store = ChatStore(server.config.user_data_dir / "palabre.db")
    try:
        (conversation,) = [c for c in store.conversations() if c.title.startswith("What is the capital")]
        messages = store.get(conversation.id).messages
        assert [(m.role, m.content) for m in messages[:3]] == [
            ("user", question),
            ("assistant", answer),
            ("user", long_question),
        ]
    finally:
        store.close()

    # The old tab's Gradio client retries its dead connection and reloads itself once
    # the server is back, which would abort our own navigation: use a fresh tab, as a
    # user reopening the page would.
    page.close()
    server.start()
    page = context.new_page()
    page.set_default_timeout(60_000)
    goto_chat(page, server.url)
    conversation_entry(page, question[:20]).click()
    page.wait_for_function(f"() => document.querySelector('#chatbot')?.innerText.includes({long_question!r})")
    assert user_texts(page) == [question, long_question]
    assert bot_texts(page)[0] == answer
    context.close()
