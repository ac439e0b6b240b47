"""Tool calls as the chat shows them (no gradio import): each call a collapsible step with the tool, its
arguments, its result and how long it ran; a call waiting for approval open, saying so.

The history keeps a reply's rounds under ``"tool_rounds"`` as ToolRoundRecords (stored, or the live loop's).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from webui.core.chats.records import ToolCallRecord, ToolRoundRecord

UPDATE_INTERVAL_S = 0.1  # as the plain replies' (webui.ui.convert)
STATUS_TITLES = {
    "pending": "Calling {name}…",
    "awaiting": "⏸ {name} is waiting for your approval",
    "running": "Running {name}…",
    "done": "🔧 {name}",
    "error": "⚠️ {name} failed",
    "rejected": "🚫 {name} rejected",
    "unknown": "⚠️ {name}: no such tool",
}
_BACKTICKS = re.compile(r"`+")


def fenced(text: str, language: str = "") -> str:
    """``text`` in a code block whose fence no backtick run inside it can close (so it shows as written)."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def pretty_arguments(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


_UNSAFE_NAME = re.compile(r"[^\w.-]+")


def step_title(call: ToolCallRecord) -> str:
    """The step's title; the name is model output (a call to a tool that does not exist), so only word
    characters of it show."""
    name = _UNSAFE_NAME.sub("_", call.name)[:64] or "tool"
    return STATUS_TITLES.get(call.status, "🔧 {name}").format(name=name)


def step_entry(call: ToolCallRecord) -> dict[str, Any]:
    """One call as a Chatbot entry: a collapsible block (open while it waits or runs)."""
    body = f"**Arguments**\n\n{fenced(pretty_arguments(call.arguments), 'json')}"
    if call.result:
        body += f"\n\n**Result**\n\n{fenced(call.result)}"
    elif call.status == "awaiting":
        body += (
            "\n\nApprove, always allow or reject this call below the chat: it does not run until you answer."
        )
    metadata: dict[str, Any] = {"title": step_title(call)}
    if call.status in ("pending", "awaiting", "running"):
        metadata["status"] = "pending"
    else:
        metadata["status"] = "done"
        if call.seconds is not None:
            metadata["duration"] = round(call.seconds, 2)
    return {"role": "assistant", "content": body, "metadata": metadata}


def round_entries(rounds: Sequence[ToolRoundRecord], reasoning_entry: Any) -> Iterator[dict[str, Any]]:
    """Each round's reasoning block (through ``reasoning_entry(text)``), its text, then its calls."""
    for round_ in rounds:
        if round_.reasoning:
            yield reasoning_entry(round_.reasoning)
        if round_.text.strip():
            yield {"role": "assistant", "content": round_.text}
        for call in round_.calls:
            yield step_entry(call)


def approval_text(call: ToolCallRecord | None) -> str:
    """The approval prompt: the tool and its full arguments."""
    if call is None:
        return ""
    return (
        f"**The model wants to run `{call.name}`**, which can change things. Its arguments:\n\n"
        f"{fenced(pretty_arguments(call.arguments), 'json')}"
    )


def agent_ticks(
    updates: Iterable[Any], interval: float = UPDATE_INTERVAL_S, clock: Callable[[], float] = time.monotonic
) -> Iterator[str]:
    """When to redraw a reply that uses tools: at once for a step or an approval, at most every ``interval``
    for text, and always at the end."""
    last = -math.inf
    pending = False
    for update in updates:
        now = clock()
        if getattr(update, "kind", "text") != "text" or now - last >= interval:
            last, pending = now, False
            yield ""
        else:
            pending = True
    if pending:
        yield ""
