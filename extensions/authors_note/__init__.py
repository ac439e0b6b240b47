"""Author's note: a note inserted at a chosen depth in the conversation on every turn.

Depth 0 puts it after the latest message, 1 before the latest message, 2 before the one before, and so on
(never above the leading system message). It steers the next reply more strongly than the system message
because it sits close to the end of the prompt.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from webui.core.extensions.api import ChatMessage, hookimpl


class AuthorsNoteSettings(BaseModel):
    """The author's note extension's settings."""

    text: str = Field("", description="The note (empty: nothing is inserted).")
    depth: int = Field(1, ge=0, le=1000, description="How many messages from the end it is inserted.")
    role: Literal["system", "user"] = Field("system", description="The role the note is sent with.")


@hookimpl
def palabre_settings_model() -> type[BaseModel]:
    return AuthorsNoteSettings


def insert_note(messages: list[ChatMessage], note: ChatMessage, depth: int) -> list[ChatMessage]:
    """``messages`` with ``note`` ``depth`` messages from the end, below the leading system messages and
    never after a reply being continued (the last message when it is the assistant's)."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    at = max(head, len(messages) - depth)
    if at == len(messages) and messages and messages[-1].role == "assistant":
        at -= 1
    return [*messages[:at], note, *messages[at:]]


@hookimpl
def palabre_modify_history(
    messages: list[ChatMessage], settings: AuthorsNoteSettings
) -> list[ChatMessage] | None:
    text = settings.text.strip()
    if not text:
        return None
    return insert_note(messages, ChatMessage(settings.role, text), settings.depth)
