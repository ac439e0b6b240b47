"""The page in a real Chromium (Playwright + Debian's chromium) against the API, on the same server.

In the page: Send -> the first reply text visible, and tokens/s as the page shows them (a MutationObserver
timestamps every change of the reply). Through the API: the same kind of request, timed by the client. The two
alternate (page, API, page, API ...), each with its own opener so neither reuses the other's prompt.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import httpx

from webui.benchmarks.figures import Figure, Target, figure, interleave, median, paired_ratio
from webui.benchmarks.llama import OPENERS
from webui.benchmarks.server import ServeProcess, stream_timed

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOT = '#chatbot [data-testid="bot"]'
# Timestamps (performance.now(), ms) of every change of the newest reply's text; Send's click time in __sentAt.
WATCH_REPLY = """
(start) => {
  window.__seen = [];
  window.__generating = false;
  const root = document.querySelector('#chatbot');
  const status = document.querySelector('#chat-status');
  // textContent, not innerText: innerText forces a layout on every mutation, which would cost the page (and the
  // model on the same cores) CPU that a user's browser never spends.
  const record = () => {
    const bots = root.querySelectorAll('[data-testid="bot"]');
    if (bots.length <= start) return;
    const text = bots[bots.length - 1].textContent.trim();
    const log = window.__seen;
    if (text && (!log.length || log[log.length - 1].text !== text)) log.push({t: performance.now(), text});
  };
  window.__watch?.disconnect();
  window.__watch = new MutationObserver(record);
  window.__watch.observe(root, {subtree: true, childList: true, characterData: true});
  window.__watchStatus?.disconnect();
  window.__watchStatus = new MutationObserver(() => {
    if ((status?.textContent || '').includes('Generating')) window.__generating = true;
  });
  if (status) window.__watchStatus.observe(status, {subtree: true, childList: true, characterData: true});
}
"""
# The reply is stored once the status line shows its stats (after showing "Generating…", or at least changing).
REPLY_DONE = """
(before) => {
  const now = document.querySelector('#chat-status')?.textContent || '';
  return now.includes('tokens/s') && (window.__generating || now !== before);
}
"""
CLICK_SEND = "() => { window.__sentAt = performance.now(); document.querySelector('#chat-send').click(); }"


def question(round_number: int) -> str:
    opener = OPENERS[round_number % len(OPENERS)]
    return f"{opener}: write a long story about a lighthouse keeper and the storm."


def _prepare(page: Any, tokens: int) -> None:
    """Deterministic preset, ``tokens`` new tokens with the end token banned, instruct mode."""
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")
    page.get_by_role("tab", name="Parameters").click()
    page.locator("#preset-dropdown input").click()
    page.get_by_role("option", name="Deterministic", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#param-temperature input[type=number]')?.value === '0'"
    )
    box = page.locator("#param-max_new_tokens input[type=number]")
    box.fill(str(tokens))
    box.press("Enter")
    ban = page.locator("#param-ban_eos_token input[type=checkbox]")
    if not ban.count():  # its accordion starts closed, and Gradio draws a closed accordion's content lazily
        page.get_by_text("Control", exact=True).first.click()
    if not ban.is_checked():
        ban.check()
    page.get_by_role("tab", name="Chat").click()
    page.get_by_label("instruct", exact=True).check()


def _page_round(page: Any, text: str, tokens: int, timeout: float = 300) -> dict[str, float]:
    page.locator("#chat-clear").click()
    page.wait_for_function("() => !document.querySelector('#chatbot [data-testid=\"user\"]')")
    before = page.evaluate("() => document.querySelector('#chat-status')?.textContent || ''")
    page.evaluate(WATCH_REPLY, page.locator(BOT).count())
    page.locator("#chat-input textarea").fill(text)
    page.evaluate(CLICK_SEND)
    # Checked in the page every 250 ms: polling from here (a DevTools round trip and a layout each time) would
    # take CPU from the model that the API side of the comparison does not pay.
    page.wait_for_function(REPLY_DONE, arg=before, polling=250, timeout=timeout * 1000)
    time.sleep(0.3)  # the last update may still be rendering
    sent_at = page.evaluate("() => window.__sentAt")
    seen = page.evaluate("() => window.__seen.map(e => e.t)")
    if not seen:
        raise RuntimeError("the page never showed the reply")
    first, last = (seen[0] - sent_at) / 1000, (seen[-1] - sent_at) / 1000
    return {"ttft_s": first, "gen_tps": (tokens - 1) / (last - first) if last > first else 0.0}


def _api_round(client: httpx.Client, server: ServeProcess, text: str, tokens: int) -> dict[str, float]:
    seen = stream_timed(
        client,
        f"{server.url}/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": tokens,
            "temperature": 0,
            "ban_eos_token": True,
        },
    )
    return {"ttft_s": seen.ttft_s, "gen_tps": seen.gen_tps}


def page_vs_api(server: ServeProcess, *, tokens: int, rounds: int) -> tuple[list[Figure], dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if not executable:
        raise RuntimeError("the page benchmark needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright, httpx.Client(timeout=600) as client:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{server.url}/")
            _prepare(page, tokens)
            _page_round(page, question(900), tokens)  # warm-up
            _api_round(client, server, question(901), tokens)
            runs = interleave(
                {
                    "page": lambda n: _page_round(page, question(2 * n), tokens),
                    "api": lambda n: _api_round(client, server, question(2 * n + 1), tokens),
                },
                rounds,
            )
        finally:
            chromium.close()
    page_ttft = median(r["ttft_s"] for r in runs["page"])
    api_ttft = median(r["ttft_s"] for r in runs["api"])
    page_tps = median(r["gen_tps"] for r in runs["page"])
    api_tps = median(r["gen_tps"] for r in runs["api"])
    figures = [
        figure(
            "page",
            "Send to first visible token",
            page_ttft,
            "s",
            reference=api_ttft,
            reference_name="API first token",
            target=Target("excess_at_most", 0.15),
            samples=rounds,
        ),
        figure(
            "page",
            "tokens/s seen in the page",
            page_tps,
            "tok/s",
            reference=api_tps,
            reference_name="API",
            target=Target("ratio_at_least", 0.9),
            samples=rounds,
            paired_ratio=paired_ratio(runs, "page", "api", "gen_tps"),
        ),
    ]
    return figures, {"runs": runs}
