"""Summary memory: turns that no longer fit are summarized by the loaded model, not dropped.

When the conversation would be truncated, the oldest turns are summarized and the summary stays in the
prompt (after the system message / character context) instead of those turns. A preview of the prompt (the
context meter) never asks the model: it uses a summary already made, or shows the prompt truncated.

Turns are summarized in blocks of ``block_turns`` (so the start of the prompt stays the same for several turns
and llama.cpp can reuse its cache), and each summary is remembered: a later summary extends the previous one
with the newer turns instead of reading the whole conversation again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pydantic import BaseModel, Field

from webui.core.extensions.api import ChatContext, ChatMessage, ExtensionState, hookimpl

CACHE_SIZE = 64  # summaries remembered (per server run)
Turn = list[ChatMessage]


class SummaryMemorySettings(BaseModel):
    """The summary memory extension's settings."""

    summary_tokens: int = Field(160, ge=16, le=2048, description="Longest summary, in tokens.")
    block_turns: int = Field(4, ge=1, le=100, description="Turns summarized at a time.")
    instruction: str = Field(
        "Summarize the conversation below in a few sentences. Keep names, facts, decisions and open "
        "questions; write only the summary.",
        description="What the model is asked to do.",
    )
    label: str = Field(
        "Summary of the earlier conversation:", description="Put before the summary in the prompt."
    )


@hookimpl
def palabre_settings_model() -> type[BaseModel]:
    return SummaryMemorySettings


def split_turns(messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], list[Turn]]:
    """The leading system messages, and the turns after them (a turn starts at each user message)."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    turns: list[Turn] = []
    for message in messages[head:]:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return list(messages[:head]), turns


def with_summary(system: list[ChatMessage], label: str, summary: str, turns: list[Turn]) -> list[ChatMessage]:
    """The summary appended to the system block (so every template accepts it), then the kept turns."""
    note = f"{label} {summary}".strip()
    if system:
        head = [*system[:-1], ChatMessage("system", f"{system[-1].content}\n\n{note}".strip())]
    else:
        head = [ChatMessage("system", note)]
    return head + [message for turn in turns for message in turn]


def _key(turns: list[Turn]) -> str:
    data = [[message.role, message.content] for turn in turns for message in turn]
    return hashlib.sha256(json.dumps(data).encode("utf-8")).hexdigest()


def _transcript(turns: list[Turn], chat: ChatContext) -> str:
    names = {"user": chat.user_name, "assistant": chat.character_name}
    return "\n".join(
        f"{names.get(message.role, message.role)}: {message.content}" for turn in turns for message in turn
    )


def summarize(
    turns: list[Turn], settings: SummaryMemorySettings, state: ExtensionState, chat: ChatContext
) -> str | None:
    """The summary of ``turns``, from the cache or extending the longest cached summary of their start.

    In a preview (the context meter) the model is not asked: None when no summary is cached yet.
    """
    cache: dict[str, str] = state.setdefault("summaries", {})
    key = _key(turns)
    if key in cache:
        return cache[key]
    if chat.preview:
        return None
    start, earlier = 0, ""
    for done in range(len(turns) - 1, 0, -1):
        found = cache.get(_key(turns[:done]))
        if found is not None:
            start, earlier = done, found
            break
    text = _transcript(turns[start:], chat)
    if earlier:
        text = f"{settings.label} {earlier}\n\n{text}"
    summary = chat.generate(
        [ChatMessage("system", settings.instruction), ChatMessage("user", text)], settings.summary_tokens
    )
    summary = " ".join(summary.split()) or "(nothing to note)"
    cache[key] = summary
    while len(cache) > CACHE_SIZE:
        cache.pop(next(iter(cache)))  # the oldest summary goes first
    state["summarized_turns"] = len(turns)
    return summary


@hookimpl(trylast=True)  # after the other extensions have added to the history: they count towards the fit
def palabre_modify_history(
    messages: list[ChatMessage], settings: SummaryMemorySettings, state: ExtensionState, chat: ChatContext
) -> list[ChatMessage] | None:
    budget = chat.max_prompt_tokens
    if chat.measure(messages) <= budget:
        return None
    system, turns = split_turns(messages)
    if len(turns) < 2:
        return None  # only the last turn: nothing to summarize (the prompt builder reports the overflow)
    room = budget - settings.summary_tokens - chat.count_tokens(settings.label) - 8
    block = settings.block_turns
    cut = block
    while cut < len(turns) - 1 and chat.measure(with_summary(system, settings.label, "", turns[cut:])) > room:
        cut += block
    cut = min(cut, len(turns) - 1)  # the last turn always stays (the prompt builder drops more if needed)
    summary = summarize(turns[:cut], settings, state, chat)
    if summary is None:
        return None  # a preview before the first summary: shown truncated, as without this extension
    return with_summary(system, settings.label, summary, turns[cut:])
