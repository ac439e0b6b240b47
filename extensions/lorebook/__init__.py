"""Lorebook (World Info): entries whose keys appear in the recent messages are put into the prompt.

Sources: the personality's Character Card V2 ``character_book`` (automatically) and the lorebooks named in
the settings, files in ``user_data/lorebooks/<name>.yaml|json`` (a mapping with ``entries``, each with
``keys``, ``content`` and optionally ``secondary_keys``/``selective``, ``case_sensitive``, ``priority``,
``insertion_order``, ``constant``, ``enabled``). The last ``scan_depth`` messages are searched (a book's own
``scan_depth`` wins); the chosen entries, highest priority first, must fit ``token_budget`` tokens of the
loaded model's tokenizer. Its own tab (ui.py) edits the books and imports SillyTavern World Info and Character
Card V2 books (editor.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from webui.core.extensions.api import ChatContext, ChatMessage, ExtensionState, hookimpl

from .book import Lorebook, LorebookError, load_book, parse_book, select


class LorebookSettings(BaseModel):
    """The lorebook extension's settings."""

    use_character_book: bool = Field(
        True, description="Use the personality's own lorebook (card character_book)."
    )
    lorebooks: list[str] = Field(
        default_factory=list, description="Your lorebooks to use (names in user_data/lorebooks)."
    )
    scan_depth: int = Field(
        4, ge=1, le=1000, description="How many of the last messages are searched for keys."
    )
    token_budget: int = Field(
        512, ge=1, le=65536, description="At most this many tokens of entries are inserted."
    )
    position: Literal["after_context", "before_last_message"] = Field(
        "after_context",
        description="after_context: after the system message / character context; before_last_message: "
        "at the start of the latest message.",
    )


@hookimpl
def palabre_settings_model() -> type[BaseModel]:
    return LorebookSettings


@hookimpl
def palabre_setup(state: ExtensionState, user_data_dir: Path | None) -> None:
    state["user_data_dir"] = user_data_dir  # where the Lorebook tab edits the books


@hookimpl
def palabre_ui(gr: Any, state: ExtensionState) -> None:
    """The Lorebook tab: edit your books' entries and import SillyTavern / Character Card books."""
    user_data_dir = state.get("user_data_dir")
    if user_data_dir is None:
        gr.Markdown("No user data folder: lorebooks cannot be edited here.")
        return
    from .ui import LorebookTab  # gradio is imported only when the page is built

    LorebookTab(Path(user_data_dir) / "lorebooks").build()


def books_for(settings: LorebookSettings, chat: ChatContext) -> list[tuple[Lorebook, int]]:
    """The books in use with their scan depth; LorebookError for a named book that cannot be read."""
    books: list[tuple[Lorebook, int]] = []
    character = chat.character
    if settings.use_character_book and character is not None and character.character_book:
        books.append(
            (
                parse_book(character.character_book, f'the character_book of "{character.name}"'),
                settings.scan_depth,
            )
        )
    if settings.lorebooks:
        if chat.user_data_dir is None:
            raise LorebookError("No user data folder: your lorebooks cannot be read.")
        folder = chat.user_data_dir / "lorebooks"
        books += [(load_book(folder, name), settings.scan_depth) for name in settings.lorebooks]
    return books


def insert_lore(messages: list[ChatMessage], lore: str, position: str) -> list[ChatMessage]:
    """``messages`` with ``lore`` after the leading system message(s), or before the latest message's text."""
    if position == "before_last_message" and messages and messages[-1].role != "system":
        last = messages[-1]
        return [*messages[:-1], ChatMessage(last.role, f"{lore}\n\n{last.content}")]
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    if head:
        system = messages[head - 1]
        return [
            *messages[: head - 1],
            ChatMessage("system", f"{system.content}\n\n{lore}".strip()),
            *messages[head:],
        ]
    return [ChatMessage("system", lore), *messages]


@hookimpl
def palabre_modify_history(
    messages: list[ChatMessage], settings: LorebookSettings, chat: ChatContext
) -> list[ChatMessage] | None:
    books = books_for(settings, chat)
    if not books:
        return None
    budget = min(settings.token_budget, *(book.token_budget or settings.token_budget for book, _ in books))
    entries = select(books, messages, budget, chat.count_tokens)
    if not entries:
        return None
    lore = "\n".join(entry.content.strip() for entry in entries)
    return insert_lore(messages, lore, settings.position)
