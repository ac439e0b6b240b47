"""Lorebook entries, matching and selection (plain functions, so they test without a model)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webui.core.extensions.api import ChatMessage, describe_validation_error, files_by_stem, path_in

LOREBOOK_SUFFIXES = (".yaml", ".yml", ".json")


class LorebookError(ValueError):
    """A lorebook file that cannot be used (the message names it)."""


class Entry(BaseModel):
    """One entry: its ``content`` goes into the prompt when one of its ``keys`` appears in the recent
    messages (Character Card V2 ``character_book`` entry fields; unknown ones are ignored)."""

    model_config = ConfigDict(extra="ignore")

    keys: list[str] = Field(default_factory=list)
    content: str = ""
    secondary_keys: list[str] = Field(default_factory=list)
    selective: bool = False  # also needs one of the secondary keys
    case_sensitive: bool = False
    constant: bool = False  # always inserted
    enabled: bool = True
    priority: int = 0  # higher is kept first when the token budget is short
    insertion_order: int = 0  # lower comes first in the prompt
    name: str = ""

    @field_validator("keys", "secondary_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):  # "a, b" as well as ["a", "b"]
            return [part.strip() for part in value.split(",")]
        return value


class Lorebook(BaseModel):
    """A lorebook: entries plus optional scan depth and token budget (a card's ``character_book`` shape)."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    scan_depth: int | None = Field(None, ge=1)
    token_budget: int | None = Field(None, ge=1)
    entries: list[Entry] = Field(default_factory=list)

    @field_validator("entries", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        if isinstance(value, Mapping):  # some editors store entries by id
            return list(value.values())
        return value


def parse_book(data: Any, source: str) -> Lorebook:
    """A Lorebook from parsed YAML/JSON data; LorebookError naming ``source`` if it does not fit."""
    if isinstance(data, list):
        data = {"entries": data}
    if not isinstance(data, Mapping):
        raise LorebookError(
            f"{source} should hold a lorebook (a mapping with entries), not {type(data).__name__}."
        )
    try:
        return Lorebook.model_validate(data)
    except ValidationError as exc:
        raise LorebookError(f"{source} is not a valid lorebook: {describe_validation_error(exc)}") from exc


def available_books(folder: Path) -> list[str]:
    """The names of the user's lorebooks (``user_data/lorebooks/<name>.yaml|yml|json``)."""
    return sorted(files_by_stem(folder, LOREBOOK_SUFFIXES))


def load_book(folder: Path, name: str) -> Lorebook:
    """The user's lorebook ``name``; LorebookError if it is missing or unreadable."""
    try:
        for suffix in LOREBOOK_SUFFIXES:
            path = path_in(folder, name, suffix, what="lorebook name")
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
                return parse_book(data, path.name)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, LorebookError):
            raise
        raise LorebookError(f'The lorebook "{name}" cannot be read: {exc}') from exc
    raise LorebookError(f'There is no lorebook "{name}" in {folder}.')


def _mentions(key: str, text: str, case_sensitive: bool) -> bool:
    key = key.strip()
    if not key:
        return False
    # Whole words where the key starts/ends with a word character ("cat" is not in "category").
    pattern = (
        ("" if not key[0].isalnum() else r"(?<!\w)")
        + re.escape(key)
        + (r"(?!\w)" if key[-1].isalnum() else "")
    )
    return re.search(pattern, text, 0 if case_sensitive else re.IGNORECASE) is not None


def triggered(entry: Entry, text: str) -> bool:
    """Whether ``entry`` is to be inserted for the scanned ``text``."""
    if not entry.enabled or not entry.content.strip():
        return False
    if entry.constant:
        return True
    if not any(_mentions(key, text, entry.case_sensitive) for key in entry.keys):
        return False
    return (
        not entry.selective
        or not entry.secondary_keys
        or any(_mentions(key, text, entry.case_sensitive) for key in entry.secondary_keys)
    )


def scanned_text(messages: Sequence[ChatMessage], depth: int) -> str:
    """The last ``depth`` messages that are not system messages, joined."""
    recent = [message.content for message in messages if message.role != "system"][-depth:]
    return "\n".join(recent)


def select(
    books: Iterable[tuple[Lorebook, int]],
    messages: Sequence[ChatMessage],
    budget: int,
    count_tokens: Callable[[str], int],
) -> list[Entry]:
    """The entries to insert: triggered within each book's scan depth (given with the book), the highest
    priority first while they fit in ``budget`` tokens, returned in insertion order."""
    candidates = []
    for book, depth in books:
        text = scanned_text(messages, book.scan_depth or depth)
        candidates += [entry for entry in book.entries if triggered(entry, text)]
    chosen: list[Entry] = []
    used = 0
    for entry in sorted(candidates, key=lambda e: (-e.priority, e.insertion_order)):
        cost = count_tokens(entry.content)
        if used + cost > budget or any(entry.content == kept.content for kept in chosen):
            continue
        chosen.append(entry)
        used += cost
    return sorted(chosen, key=lambda e: e.insertion_order)
