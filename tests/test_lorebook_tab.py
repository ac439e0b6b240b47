"""The lorebook extension's Lorebook tab: its handlers on real files in a user_data/lorebooks folder, the
imports (SillyTavern World Info, Character Card V2), and the books it writes used by the extension itself."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.extensions import bundled, bundled_manager, chat_context
from webui.core.prompts import ChatMessage

DATA = Path(__file__).parent / "data" / "extensions"

WORLD_INFO = {
    "entries": {
        "0": {
            "uid": 0,
            "key": ["ferry", "boatman"],
            "keysecondary": [],
            "comment": "The ferry",
            "content": "The ferry crosses the river at dawn.",
            "constant": False,
            "selective": False,
            "order": 50,
            "position": 0,
            "disable": False,
            "caseSensitive": None,
            "depth": 4,
        },
        "1": {
            "uid": 1,
            "key": ["ghost"],
            "content": "A ghost haunts the pier.",
            "order": 10,
            "disable": True,
        },
    }
}


def tab_for(folder: Path) -> Any:
    bundled("lorebook")  # registers the bundled package, so its ui module imports as the page would
    return importlib.import_module("palabre_extensions_bundled.lorebook.ui").LorebookTab(folder)


def entries_of(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["entries"]


def lore_for(user_data: Path, book: str, text: str) -> str:
    manager = bundled_manager("lorebook", lorebooks=[book], use_character_book=False)
    warnings: list[str] = []
    messages = manager.modify_history(
        [ChatMessage("user", text)], chat_context(user_data_dir=user_data), warnings
    )
    assert warnings == []
    return "\n".join(m.content for m in messages)


def test_entries_are_added_edited_and_deleted_and_the_book_works_in_chats(tmp_path: Path) -> None:
    folder = tmp_path / "lorebooks"
    tab = tab_for(folder)
    with pytest.warns(UserWarning, match="not allowed"):
        assert tab.open_book("../escape")[-1].startswith("⚠️")
    assert "is a new lorebook" in tab.open_book("world")[-1]

    picker, status = tab.save("world", "new", "dragon, wyrm", "", "Dragons sleep.", False, 5, True, False)[1:]
    assert status == 'Entry 1 saved in "world".' and picker["value"] == "0"
    tab.save("world", "new", "Moth", "", "Moths gather.", True, 1, True, False)
    path = folder / "world.yaml"
    assert [e["keys"] for e in entries_of(path)] == [["dragon", "wyrm"], ["Moth"]]

    # A field Palabre does not edit (written by hand or by another tool) survives an edit.
    data = yaml.safe_load(path.read_text())
    data["entries"][0]["notes"] = "keep me"
    path.write_text(yaml.safe_dump(data))
    assert tab.pick_entry("world", "0") == ["dragon, wyrm", "", "Dragons sleep.", False, 5, True, False, ""]
    tab.save("world", "0", "dragon, wyrm", "", "Dragons sleep in the north.", False, 7, True, False)
    first = entries_of(path)[0]
    assert first["content"] == "Dragons sleep in the north." and first["priority"] == 7
    assert first["notes"] == "keep me"

    before = path.read_text()
    with pytest.warns(UserWarning, match="needs some content"):
        assert tab.save("world", "0", "dragon", "", "  ", False, 0, True, False)[-1].startswith("⚠️")
    with pytest.warns(UserWarning, match="at least one key"):
        tab.save("world", "new", " , ", "", "Keyless.", False, 0, True, False)
    assert path.read_text() == before  # refused edits change nothing

    row, question = tab.ask_delete("world", "1")
    assert row["visible"] and question == 'Delete entry 2 of "world"?'
    assert len(entries_of(path)) == 2  # asking deletes nothing
    picker, *form, row, status = tab.delete("world", "1")
    assert not row["visible"]
    assert status == "Entry 2 deleted." and [label for label, _ in picker["choices"]] == [
        "New entry",
        "1. dragon, wyrm",
    ]
    assert form == ["", "", "", False, 0, True, False]
    assert "Dragons sleep in the north." in lore_for(tmp_path, "world", "A WYRM!")  # not case sensitive
    assert "Moths" not in lore_for(tmp_path, "world", "Moth")  # deleted


def test_world_info_and_character_card_books_are_imported(tmp_path: Path) -> None:
    folder = tmp_path / "lorebooks"
    tab = tab_for(folder)
    tab.save("harbour", "new", "pier", "", "The pier is old.", False, 0, True, False)
    upload = tmp_path / "World Info.json"
    upload.write_text(json.dumps(WORLD_INFO))
    book, picker, status = tab.import_("harbour", str(upload))
    assert status.startswith('2 entries imported into "harbour".') and book["value"] == "harbour"
    assert [label for label, _ in picker["choices"]][1:] == [
        "1. pier",
        "2. ferry, boatman",
        "3. ghost (disabled)",
    ]
    ferry = entries_of(folder / "harbour.yaml")[1]
    assert ferry["name"] == "The ferry" and ferry["extensions"]["sillytavern"]["depth"] == 4
    text = lore_for(tmp_path, "harbour", "Where is the boatman? A ghost on the pier?")
    assert "The ferry crosses the river at dawn." in text and "The pier is old." in text
    assert "ghost haunts" not in text  # disabled in SillyTavern, disabled here

    # A Character Card V2's character_book, with no book picked: a new book named after the card's book.
    book, picker, status = tab.import_("", str(DATA / "lore_card.json"))
    assert book["value"] == "Varn" and (folder / "Varn.yaml").is_file()
    assert "The Silver Key opens" in lore_for(tmp_path, "Varn", "the silver key")

    not_a_book = tmp_path / "card.json"
    not_a_book.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "No book"}}))
    with pytest.warns(UserWarning, match="holds no lorebook"):
        assert tab.import_("harbour", str(not_a_book))[-1].startswith("⚠️ Not imported")
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.warns(UserWarning, match="cannot be read"):
        tab.import_("harbour", str(broken))
    assert len(entries_of(folder / "harbour.yaml")) == 3  # nothing half-imported


def test_the_lorebook_tab_is_drawn_with_its_widgets(tmp_path: Path) -> None:
    import gradio as gr

    tab = tab_for(tmp_path / "lorebooks")
    tab.save("world", "new", "dragon", "", "Dragons sleep.", False, 0, True, False)
    with gr.Blocks() as page:
        tab.build()
    ids = {block.elem_id for block in page.blocks.values()}
    assert {"lorebook-book", "lorebook-entry", "lorebook-save", "lorebook-import"} <= ids
    book = next(block for block in page.blocks.values() if block.elem_id == "lorebook-book")
    assert ("world", "world") in book.choices
