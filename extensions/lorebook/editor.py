"""Editing the user's lorebook files (``user_data/lorebooks/<name>.yaml|yml|json``) and importing others' books.

Plain functions, no gradio: the Lorebook tab (ui.py) calls them. A book is edited as its raw mapping, so the
fields Palabre does not use (an editor's own notes, SillyTavern's extras) survive an edit; every change is
validated as a Lorebook before it is written, and written atomically in the file's own format.

Imports understood: SillyTavern World Info JSON (``entries: {"0": {key, keysecondary, content, constant,
selective, order, disable, caseSensitive, comment, ...}}``), a Character Card V2 JSON (its
``data.character_book``), and a bare ``character_book`` / Palabre lorebook (``entries: [...]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webui.core.extensions.api import InvalidNameError, atomic_write_text, load_json, load_yaml, path_in

from .book import LOREBOOK_SUFFIXES, Entry, Lorebook, LorebookError, parse_book

MAX_IMPORT_BYTES = 20 * 1024 * 1024  # a world info file with thousands of entries is a few MB


@dataclass(frozen=True)
class EntryForm:
    """The fields of one entry that the Lorebook tab edits."""

    keys: list[str]
    content: str
    secondary_keys: list[str]
    case_sensitive: bool = False
    priority: int = 0
    enabled: bool = True
    constant: bool = False

    def check(self) -> None:
        """LorebookError when the entry could never be used."""
        if not self.content.strip():
            raise LorebookError("The entry needs some content (the text put into the prompt).")
        if not self.constant and not any(key.strip() for key in self.keys):
            raise LorebookError("The entry needs at least one key (or tick 'always inserted').")

    def fields(self) -> dict[str, Any]:
        return {
            "keys": [key.strip() for key in self.keys if key.strip()],
            "secondary_keys": [key.strip() for key in self.secondary_keys if key.strip()],
            "content": self.content,
            "case_sensitive": self.case_sensitive,
            "priority": self.priority,
            "enabled": self.enabled,
            "constant": self.constant,
        }


def split_keys(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]`` (as the entry's keys are typed)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def book_path(folder: Path, name: str) -> Path:
    """The file of the book ``name``: the existing one (any suffix), else a new ``.yaml``; InvalidNameError
    (a ValueError) for a name that is not a safe file name."""
    for suffix in LOREBOOK_SUFFIXES:
        path = path_in(folder, name, suffix, what="lorebook name")
        if path.is_file():
            return path
    return path_in(folder, name, ".yaml", what="lorebook name")


def read_raw(folder: Path, name: str) -> dict[str, Any]:
    """The book ``name`` as its raw mapping (``entries`` a list); an empty book when there is no such file."""
    path = book_path(folder, name)
    if not path.is_file():
        return {"entries": []}
    try:
        text = path.read_text(encoding="utf-8")
        data = load_json(text) if path.suffix == ".json" else load_yaml(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise LorebookError(f'The lorebook "{name}" cannot be read: {exc}') from exc
    if isinstance(data, list):
        data = {"entries": data}
    parse_book(data, path.name)  # refuses a file that is not a lorebook before it is edited
    data = dict(data)
    entries = data.get("entries") or []
    data["entries"] = [dict(e) for e in (entries.values() if isinstance(entries, Mapping) else entries)]
    return data


def write_raw(folder: Path, name: str, data: Mapping[str, Any]) -> Lorebook:
    """Validate ``data`` as a lorebook and write it atomically (in the existing file's format)."""
    path = book_path(folder, name)
    book = parse_book(dict(data), path.name)
    if path.suffix == ".json":
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    else:
        text = yaml.safe_dump(dict(data), allow_unicode=True, sort_keys=False)
    atomic_write_text(path, text)
    return book


def entry_label(index: int, entry: Entry) -> str:
    """How an entry is listed: its number, keys (or name) and whether it is off."""
    what = ", ".join(entry.keys) or entry.name or ("(always inserted)" if entry.constant else "(no keys)")
    off = "" if entry.enabled else " (disabled)"
    return f"{index + 1}. {what}{off}"


def save_entry(folder: Path, name: str, index: int | None, form: EntryForm) -> tuple[Lorebook, int]:
    """Add (``index`` None) or change the entry ``index`` of book ``name``; the book and the entry's index."""
    form.check()
    data = read_raw(folder, name)
    entries: list[dict[str, Any]] = data["entries"]
    if index is None:
        entries.append({**form.fields(), "insertion_order": len(entries)})
        index = len(entries) - 1
    elif 0 <= index < len(entries):
        entries[index] = {**entries[index], **form.fields()}
    else:
        raise LorebookError(f"The book has no entry {index + 1} (it has {len(entries)}); pick it again.")
    return write_raw(folder, name, data), index


def delete_entry(folder: Path, name: str, index: int) -> Lorebook:
    data = read_raw(folder, name)
    entries: list[dict[str, Any]] = data["entries"]
    if not 0 <= index < len(entries):
        raise LorebookError(f"The book has no entry {index + 1} (it has {len(entries)}).")
    del entries[index]
    return write_raw(folder, name, data)


def _from_world_info(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One SillyTavern World Info entry in the character_book shape (its other fields kept aside)."""
    known = {"key", "keysecondary", "content", "constant", "selective", "order", "disable", "caseSensitive"}
    order = entry.get("order", 100)
    order = order if isinstance(order, int) else 100
    converted = {
        "keys": list(entry.get("key") or []),
        "secondary_keys": list(entry.get("keysecondary") or []),
        "content": str(entry.get("content") or ""),
        "constant": bool(entry.get("constant")),
        "selective": bool(entry.get("selective")),
        "case_sensitive": bool(entry.get("caseSensitive")),  # null: SillyTavern's global default, off
        "enabled": not entry.get("disable"),
        "insertion_order": order,
        "priority": order,  # SillyTavern keeps the higher order first when the budget is short
        "name": str(entry.get("comment") or ""),
    }
    rest = {key: value for key, value in entry.items() if key not in known}
    if rest:
        converted["extensions"] = {"sillytavern": rest}
    return converted


def imported_entries(data: Any, source: str) -> tuple[list[dict[str, Any]], str]:
    """The entries of an imported file (world info, card V2 or a lorebook) and the book's own name."""
    if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping):
        data = data["data"]  # a Character Card V2: {"spec": ..., "data": {..., "character_book": ...}}
    if isinstance(data, Mapping) and isinstance(data.get("character_book"), Mapping):
        data = data["character_book"]
    if not isinstance(data, Mapping) or "entries" not in data:
        raise LorebookError(
            f"{source} holds no lorebook: expected SillyTavern World Info, a Character Card V2 with a "
            "character_book, or a lorebook with entries."
        )
    entries = data["entries"]
    if isinstance(entries, Mapping):  # SillyTavern: entries by uid
        raw = [_from_world_info(e) for e in entries.values() if isinstance(e, Mapping)]
    elif isinstance(entries, Sequence) and not isinstance(entries, str):
        raw = [dict(e) for e in entries if isinstance(e, Mapping)]
    else:
        raise LorebookError(f"{source}: entries should be a list or a mapping, not {type(entries).__name__}.")
    if not raw:
        raise LorebookError(f"{source} has no entries to import.")
    parse_book({"entries": raw}, source)  # every entry valid, or nothing is imported
    return raw, str(data.get("name") or "")


def import_file(folder: Path, name: str | None, path: Path) -> tuple[str, int]:
    """Add the entries of the file at ``path`` to the book ``name`` (a new book named after the file, or the
    book inside it, when no name is given). Returns (the book's name, how many entries were added)."""
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise LorebookError(f"{path.name} is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MB.")
        text = path.read_text(encoding="utf-8")
        data = load_json(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, LorebookError):
            raise
        raise LorebookError(f"{path.name} cannot be read: {exc}") from exc
    entries, own_name = imported_entries(data, path.name)
    target = (name or "").strip() or own_name.strip() or path.stem
    try:
        book_path(folder, target)
    except InvalidNameError as exc:
        raise LorebookError(f"{exc} Type a lorebook name to import into.") from exc
    book = read_raw(folder, target)
    book["entries"] += entries
    if own_name and not book.get("name"):
        book["name"] = own_name
    write_raw(folder, target, book)
    return target, len(entries)
