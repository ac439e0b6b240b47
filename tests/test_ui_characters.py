"""The Character tab's handlers (no browser): editing, saving, deleting, importing and exporting personalities
against a real CharacterStore in a temporary user folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cards import CARD_FILE
from tests.support.fakes import ScriptedLoader
from webui.config import PROJECT_ROOT
from webui.core.characters.store import CharacterStore
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.templates.store import TemplateStore
from webui.ui.character_tab import EDITOR_FIELDS, MODEL_TEMPLATE, CharacterTab, parse_parameters

DATA = Path(__file__).parent / "data" / "characters"
MODELFILE = DATA / "Mario.Modelfile"


@pytest.fixture
def tab(tmp_path: Path) -> Iterator[CharacterTab]:
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates")
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=tmp_path / "models",
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=templates,
        characters=CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters", templates),
        knowledge_path=tmp_path / "knowledge.sqlite3",  # no embedding model: documents are found by words
    )
    yield CharacterTab(service, scratch_dir=tmp_path / "scratch")
    service.close()


def store(tab: CharacterTab) -> CharacterStore:
    return tab.store


def editor(tab: CharacterTab, name: str) -> list[Any]:
    """The editor values after picking ``name`` (name, greeting, context, user name, parameters, template,
    avatar, knowledge) plus the source name."""
    loaded = tab.load(name)
    assert not str(loaded[-1]).startswith("⚠️"), loaded[-1]
    return loaded[:-1]


def value(update: Any) -> Any:
    return update["value"] if isinstance(update, dict) else update


def test_save_a_new_personality_then_load_it(tab: CharacterTab) -> None:
    cleared = tab.new()
    assert len(cleared) == EDITOR_FIELDS + 3 and cleared[1:5] == ["", "", "", ""]
    dropdown, source, status = tab.save(
        None,
        "Ada",
        "Hello {{user}}!",
        "You are Ada.",
        "Bob",
        "temperature: 0.5\ntop_k: 20",
        MODEL_TEMPLATE,
        None,
    )
    assert "Ada" in dropdown["choices"] and dropdown["value"] == "Ada" and source == "Ada"
    assert "saved" in status
    character = store(tab).load("Ada")
    assert (character.greeting, character.context, character.user_name) == (
        "Hello {{user}}!",
        "You are Ada.",
        "Bob",
    )
    assert character.parameters == {"temperature": 0.5, "top_k": 20}
    assert character.instruction_template is None

    name, greeting, context, user, params, template, avatar, _knowledge, source = editor(tab, "Ada")
    assert (name, greeting, context, user) == ("Ada", "Hello {{user}}!", "You are Ada.", "Bob")
    assert yaml.safe_load(params) == {"temperature": 0.5, "top_k": 20}
    assert value(template) == MODEL_TEMPLATE and avatar is None and source == "Ada"


def test_instruction_template_and_json_parameters(tab: CharacterTab) -> None:
    tab.save(None, "Tpl", "", "ctx", "", '{"min_p": 0.1}', "ChatML", None)
    character = store(tab).load("Tpl")
    assert character.instruction_template == "ChatML" and character.parameters == {"min_p": 0.1}
    assert value(editor(tab, "Tpl")[5]) == "ChatML"


def test_bad_parameter_key_is_named_and_nothing_is_saved(tab: CharacterTab) -> None:
    dropdown, source, status = tab.save(None, "Typo", "", "", "", "temprature: 0.5", MODEL_TEMPLATE, None)
    assert status.startswith("⚠️") and "temprature" in status and "temperature" in status
    assert dropdown == {"__type__": "update"} and source == {"__type__": "update"}  # nothing changes
    assert "Typo" not in store(tab).names()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temperature: [", "not valid YAML"),
        ("- 1\n- 2", "one setting per line"),
        ("temperature: hot", "temperature"),
        ("top_k: -5", "top_k"),
    ],
)
def test_bad_parameters_give_a_readable_message(tab: CharacterTab, text: str, expected: str) -> None:
    status = tab.save(None, "Bad", "", "", "", text, MODEL_TEMPLATE, None)[-1]
    assert status.startswith("⚠️") and expected in status, status


def test_empty_name_and_invalid_name_are_refused(tab: CharacterTab) -> None:
    assert "name" in tab.save(None, "  ", "", "", "", "", MODEL_TEMPLATE, None)[-1]
    status = tab.save(None, "../escape", "", "", "", "", MODEL_TEMPLATE, None)[-1]
    assert status.startswith("⚠️"), status
    assert not (store(tab).user_dir.parent / "escape.yaml").exists()
    assert parse_parameters("") == {} and parse_parameters("# nothing") == {}


def test_saving_a_bundled_personality_makes_an_overriding_copy(tab: CharacterTab) -> None:
    name, greeting, context, user, params, template, avatar, _knowledge, source = editor(tab, "Coder")
    assert yaml.safe_load(params) == {"temperature": 0.01, "repetition_penalty": 1}
    assert "bundled" in tab.load("Coder")[-1]
    status = tab.save(
        source, name, greeting, context + " Use Python.", user, params, value(template), avatar
    )[-1]
    assert "overrides" in status and "bundled" in status
    assert store(tab).is_user_character("Coder") and store(tab).is_bundled("Coder")
    assert store(tab).load("Coder").context.endswith("Use Python.")
    assert (PROJECT_ROOT / "characters" / "Coder.yaml").read_text().count("Use Python.") == 0

    row, question = tab.ask_delete("Coder")
    assert row["visible"] is True and "bundled" in question
    result = tab.delete("Coder")
    assert "used again" in result[-1]
    assert not store(tab).is_user_character("Coder")
    assert result[3] == store(tab).load("Coder").context  # the bundled one is shown again


def test_delete_asks_first_and_refuses_bundled(tab: CharacterTab) -> None:
    row, status = tab.ask_delete("Captain Barnacle")
    assert row["visible"] is False and "bundled" in status and "cannot be deleted" in status
    assert tab.delete("Captain Barnacle")[-1].startswith("⚠️")
    assert "Captain Barnacle" in store(tab).names()

    tab.save(None, "Temp", "hi", "ctx", "", "", MODEL_TEMPLATE, None)
    row, question = tab.ask_delete("Temp")
    assert row["visible"] is True and "Temp" in question
    assert store(tab).is_user_character("Temp")  # asking deletes nothing
    row, status = tab.cancel_delete()
    assert row["visible"] is False and store(tab).is_user_character("Temp")
    result = tab.delete("Temp")
    assert "deleted" in result[-1] and "Temp" not in result[0]["choices"]
    assert result[1:5] == ["", "", "", ""]  # the editor is cleared
    assert "Temp" not in store(tab).names()
    assert tab.ask_delete("Temp")[1].startswith("⚠️")


def test_editing_a_card_import_keeps_its_character_book(tab: CharacterTab) -> None:
    result = tab.import_file(str(CARD_FILE), "", False)
    assert result[0]["value"] == "Mira" and "Imported **Mira**" in result[-1]
    before = store(tab).load("Mira")
    assert before.character_book and before.tags and before.alternate_greetings
    name, _greeting, context, _user, _params, template, avatar, _knowledge, source = result[1:-1]
    status = tab.save(
        source, name, "A new greeting.", context, "Ada", "temperature: 0.9", value(template), avatar
    )
    assert "saved" in status[-1], status
    after = store(tab).load("Mira")
    assert after.greeting == "A new greeting." and after.user_name == "Ada"
    assert after.parameters == {"temperature": 0.9}
    for kept in (
        "character_book",
        "tags",
        "alternate_greetings",
        "extensions",
        "mes_example",
        "creator_notes",
    ):
        assert getattr(after, kept) == getattr(before, kept), kept
    exported = json.loads(tab.store.render_export("Mira", "card-json")[1])
    assert exported["data"]["character_book"] == json.loads(CARD_FILE.read_text())["data"]["character_book"]


def test_saving_under_a_new_name_copies_the_card_fields(tab: CharacterTab) -> None:
    tab.import_file(str(CARD_FILE), "", False)
    _name, greeting, context, user, params, template, avatar, _knowledge, source = editor(tab, "Mira")
    tab.save(source, "Mira 2", greeting, context, user, params, value(template), avatar)
    assert store(tab).load("Mira 2").character_book == store(tab).load("Mira").character_book


def test_import_modelfile_shows_the_notes_and_asks_before_overwriting(tab: CharacterTab) -> None:
    result = tab.import_file(str(MODELFILE), "", False)
    status = result[-1]
    assert "Imported **Mario**" in status and "converted to the instruction template" in status, status
    assert value(result[6]) == "Mario (Modelfile)"
    assert "Mario (Modelfile)" in tab.service.templates.names()
    assert yaml.safe_load(result[5])["temperature"] == 0.8
    assert "Mario" in result[0]["choices"]

    again = tab.import_file(str(MODELFILE), "", False)
    assert again[-1].startswith("⚠️") and "already exists" in again[-1] and "Overwrite" in again[-1]
    assert all(update == {"__type__": "update"} for update in again[:-1])  # the editor keeps its content
    assert "Imported **Mario**" in tab.import_file(str(MODELFILE), "", True)[-1]
    assert "Imported **Luigi**" in tab.import_file(str(MODELFILE), "Luigi", False)[-1]


def test_import_errors_are_messages(tab: CharacterTab, tmp_path: Path) -> None:
    assert tab.import_file(None, "", False)[-1].startswith("⚠️")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    assert "not valid YAML" in tab.import_file(str(broken), "", False)[-1]
    other = tmp_path / "notes.txt"
    other.write_text("just some text")
    assert "is not a personality" in tab.import_file(str(other), "", False)[-1]


@pytest.mark.parametrize("fmt", ["yaml", "card-json", "card-png", "modelfile"])
def test_export_writes_a_file_that_imports_back(tab: CharacterTab, fmt: str, tmp_path: Path) -> None:
    tab.save(None, "Ada", "Hello!", "You are Ada.", "", "temperature: 0.5", MODEL_TEMPLATE, None)
    path, status = tab.export("Ada", fmt)
    assert "exported" in status and Path(path).is_file()
    assert Path(path).is_relative_to(tmp_path / "scratch")
    if fmt == "yaml":
        assert yaml.safe_load(Path(path).read_text())["context"] == "You are Ada."
    elif fmt == "card-json":
        assert json.loads(Path(path).read_text())["data"]["first_mes"] == "Hello!"
    back = tab.import_file(path, "Ada copy", False)
    assert "Imported **Ada copy**" in back[-1], back[-1]
    copy = store(tab).load("Ada copy")
    assert copy.context == "You are Ada." and copy.parameters == {"temperature": 0.5}


def test_export_errors_are_messages(tab: CharacterTab) -> None:
    assert tab.export(None, "yaml") == [None, tab.export(None, "yaml")[1]]
    assert tab.export("Nobody", "yaml")[1].startswith("⚠️")
    assert tab.export("Coder", "pdf")[1].startswith("⚠️")


def test_avatar_is_saved_once_and_shown(tab: CharacterTab, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "face.png"
    Image.new("RGBA", (8, 8), (200, 10, 10, 128)).save(image)
    tab.save(None, "Face", "", "", "", "", MODEL_TEMPLATE, str(image))
    saved = store(tab).avatar_path("Face")
    assert saved is not None and saved.read_bytes() == image.read_bytes()
    shown = editor(tab, "Face")[6]
    assert Path(shown).read_bytes() == image.read_bytes() and Path(shown).is_relative_to(tmp_path / "scratch")
    mtime = saved.stat().st_mtime_ns
    tab.save("Face", "Face", "g", "", "", "", MODEL_TEMPLATE, shown)  # unchanged avatar: not rewritten
    assert saved.stat().st_mtime_ns == mtime
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert "avatar" in tab.save("Face", "Face", "", "", "", "", MODEL_TEMPLATE, str(bad))[-1]
    assert store(tab).load("Face").greeting == "g"


def test_names_update_lists_every_personality(tab: CharacterTab) -> None:
    tab.save(None, "Zed", "", "", "", "", MODEL_TEMPLATE, None)
    update = tab.names_update()
    assert update["choices"][0] == "Assistant" and "Zed" in update["choices"] and "value" not in update
    assert MODEL_TEMPLATE in tab.refresh()[1]["choices"]


def test_documents_added_to_a_personality_are_its_collection(tab: CharacterTab, tmp_path: Path) -> None:
    manual = tmp_path / "manual.txt"
    manual.write_text("Reset the router by holding the red button for ten seconds.", encoding="utf-8")
    refused = tab.add_documents("", [], [str(manual)])
    assert "name" in refused[-1]
    field, status = tab.add_documents("Helpdesk", [], [str(manual)])
    assert value(field) == ["Helpdesk"] and "manual.txt" in status and "Save" in status
    tab.save(None, "Helpdesk", "", "You help.", "", "", MODEL_TEMPLATE, None, value(field))
    assert store(tab).load("Helpdesk").knowledge == ["Helpdesk"]
    knowledge = tab.service.knowledge
    assert knowledge is not None
    found = knowledge.search("Helpdesk", "how do I reset the router", mode="keyword")
    assert found and found[0].document == "manual.txt"
    # Loading it shows its collections; saving without touching them keeps them.
    loaded = editor(tab, "Helpdesk")
    assert value(loaded[7]) == ["Helpdesk"]
    tab.save("Helpdesk", "Helpdesk", "", "You help more.", "", "", MODEL_TEMPLATE, None)
    assert store(tab).load("Helpdesk").knowledge == ["Helpdesk"]
