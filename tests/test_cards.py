"""Character Card V2 import/export through the CharacterStore: JSON and PNG, lossless, and malformed cards."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.cards import CARD_FILE, avatar_image, write_card_png
from webui.config import PROJECT_ROOT
from webui.core.characters import cards
from webui.core.characters.store import Character, CharacterError, CharacterStore


@pytest.fixture
def store(tmp_path: Path) -> CharacterStore:
    return CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters")


def original_card() -> dict[str, Any]:
    return json.loads(CARD_FILE.read_text(encoding="utf-8"))


def card_from_png(path: Path) -> dict[str, Any]:
    with Image.open(path) as image:
        image.load()
        return json.loads(base64.b64decode(image.text["chara"]))


# --- lossless round trips


def test_card_json_import_then_export_keeps_the_whole_data_dict(
    store: CharacterStore, tmp_path: Path
) -> None:
    original = original_card()
    character = store.import_file(CARD_FILE)
    assert character.name == "Mira"
    out = store.export("Mira", "card-json", tmp_path / "out.json")
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["spec"] == "chara_card_v2" and exported["spec_version"] == "2.0"
    for key, value in original["data"].items():  # field by field first, for a readable failure
        assert exported["data"].get(key) == value, key
    assert exported["data"] == original["data"]
    book = exported["data"]["character_book"]
    assert book["entries"][1]["x_custom_entry_field"] == {"kept": ["as", "is"]}
    assert [entry["secondary_keys"] for entry in book["entries"]] == [[], ["father", "pilot"], []]


def test_imported_card_becomes_a_usable_personality(store: CharacterStore) -> None:
    character = store.import_file(CARD_FILE)
    data = original_card()["data"]
    assert character.greeting == data["first_mes"]
    assert character.greeting_for("Ada").startswith("*A lantern swings above you.* Easy now, Ada.")
    # context = system prompt ({{original}} dropped), description, personality, scenario
    assert character.context == (
        "Stay in character as {{char}}. Never speak for {{user}}.\n\n"
        f"{data['description']}\n\n"
        "{{char}}'s personality: dry-humoured, patient, precise about tides and stars\n\n"
        f"Scenario: {data['scenario']}"
    )
    context = character.context_for("Ada")
    assert context.startswith("Stay in character as Mira. Never speak for Ada.\n\nMira is the keeper")
    # the example dialogue follows, <START> markers removed, names filled in
    assert context.endswith(
        "Ada: Where am I?\nMira: Greywater Point. Nearest town is a day's walk, two if you limp.\n\n"
        "Ada: Can you read the stars?\nMira: Better than most people read newspapers."
    )
    assert "{{" not in context and "<START>" not in context
    # the card fields themselves stay exactly as they were
    assert character.post_history_instructions == data["post_history_instructions"]
    assert character.character_book == data["character_book"]
    assert character.extensions == data["extensions"]
    assert character.card_extra == {"x_unknown_data_key": {"note": "a field from some other tool"}}


def test_card_png_round_trip_keeps_every_field_and_the_avatar_pixels(
    store: CharacterStore, tmp_path: Path
) -> None:
    source = tmp_path / "Mira.png"
    write_card_png(source, original_card())
    character = store.import_file(source)
    avatar = store.avatar_path(character.name)
    assert avatar is not None and avatar.suffix == ".png"
    assert b"chara" not in avatar.read_bytes()  # the stored avatar carries no stale card
    out = store.export("Mira", "card-png", tmp_path / "export.png")
    assert card_from_png(out)["data"] == original_card()["data"]
    with Image.open(out) as exported, Image.open(source) as before:
        assert exported.size == before.size and exported.mode == "RGBA"
        assert exported.tobytes() == avatar_image().tobytes()
        assert exported.text.get("Software") == "palabre-tests"  # other metadata survives too


def test_card_png_export_to_json_and_back_to_png(store: CharacterStore, tmp_path: Path) -> None:
    write_card_png(tmp_path / "in.png", original_card())
    store.import_file(tmp_path / "in.png", name="Mira PNG")
    as_json = json.loads(store.export("Mira PNG", "card-json", tmp_path / "x.json").read_text("utf-8"))
    expected = copy.deepcopy(original_card()["data"])
    expected["name"] = "Mira PNG"  # imported under another name
    assert as_json["data"] == expected


def test_png_export_without_avatar_uses_a_placeholder_and_carries_palabre_settings(
    store: CharacterStore, tmp_path: Path
) -> None:
    out = store.export("Coder", "card-png", tmp_path)
    assert out == tmp_path / "Coder.png"
    with Image.open(out) as image:
        assert image.size == (128, 128)
    card = card_from_png(out)
    assert card["data"]["description"] == "You are a helpful coding AI assistant. Answer in a concise way."
    assert card["data"]["extensions"]["palabre"] == {
        "parameters": {"temperature": 0.01, "repetition_penalty": 1}
    }
    again = store.import_file(out, name="Coder again")
    assert again.context == "You are a helpful coding AI assistant. Answer in a concise way."
    assert again.params_overlay() == {"temperature": 0.01, "repetition_penalty": 1.0}
    assert again.greeting == store.load("Coder").greeting


def test_native_personality_survives_a_card_round_trip(store: CharacterStore, tmp_path: Path) -> None:
    character = Character(
        name="Quill",
        greeting="Hello {{user}}.",
        context="{{char}} is a poet who answers in rhyme.",
        user_name="Reader",
        parameters={"temperature": 1.2, "stop": ["\nReader:"]},
        instruction_template="ChatML",
        example_messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hi, my dear!"},
        ],
        tags=["poetry"],
    )
    store.save(character)
    card = json.loads(store.export("Quill", "card-json", tmp_path / "q.json").read_text("utf-8"))
    assert card["data"]["mes_example"] == "<START>\n{{user}}: Hi\n{{char}}: Hi, my dear!"
    again = store.import_file(tmp_path / "q.json", name="Quill 2")
    for key in ("greeting", "context", "user_name", "parameters", "instruction_template", "tags"):
        assert getattr(again, key) == getattr(character, key), key
    assert again.example_messages == character.example_messages
    assert again.mes_example == ""  # not duplicated next to the example messages


def test_edited_context_is_exported_as_the_description(store: CharacterStore, tmp_path: Path) -> None:
    character = store.import_file(CARD_FILE)
    character.context = "{{char}} keeps a lighthouse and answers briefly."
    store.save(character)
    data = json.loads(store.export("Mira", "card-json", tmp_path / "m.json").read_text("utf-8"))["data"]
    assert data["description"] == "{{char}} keeps a lighthouse and answers briefly."
    assert (data["personality"], data["scenario"], data["system_prompt"]) == ("", "", "")
    assert data["character_book"] == original_card()["data"]["character_book"]  # the rest is untouched
    assert store.import_file(tmp_path / "m.json", name="Mira 2").context == character.context


def test_v1_and_pygmalion_cards_import(store: CharacterStore, tmp_path: Path) -> None:
    v1 = {
        "name": "Old Tom",
        "description": "{{char}} is a grumpy cat.",
        "personality": "lazy",
        "scenario": "",
        "first_mes": "Mrrp.",
        "mes_example": "",
    }
    (tmp_path / "tom.json").write_text(json.dumps(v1), encoding="utf-8")
    tom = store.import_file(tmp_path / "tom.json")
    assert (tom.name, tom.greeting) == ("Old Tom", "Mrrp.")
    assert tom.context == "{{char}} is a grumpy cat.\n\n{{char}}'s personality: lazy"
    pyg = {
        "char_name": "Ava",
        "char_persona": "A botanist.",
        "char_greeting": "Hi!",
        "world_scenario": "A lab.",
    }
    (tmp_path / "ava.json").write_text(json.dumps(pyg), encoding="utf-8")
    ava = store.import_file(tmp_path / "ava.json")
    assert (ava.name, ava.greeting, ava.context) == ("Ava", "Hi!", "A botanist.\n\nScenario: A lab.")
    exported = json.loads(store.export("Ava", "card-json", tmp_path / "a.json").read_text("utf-8"))
    assert exported["spec"] == "chara_card_v2" and exported["data"]["first_mes"] == "Hi!"


def test_values_of_unexpected_types_are_kept_as_they_were(store: CharacterStore, tmp_path: Path) -> None:
    card = original_card()
    card["data"].update(character_version=3, tags=None, creator_notes=None)
    (tmp_path / "odd.json").write_text(json.dumps(card), encoding="utf-8")
    store.import_file(tmp_path / "odd.json")
    exported = json.loads(store.export("Mira", "card-json", tmp_path / "o.json").read_text("utf-8"))
    assert exported["data"] == card["data"]


def test_card_names_that_are_not_file_names_are_cleaned(store: CharacterStore, tmp_path: Path) -> None:
    card = original_card()
    card["data"]["name"] = "Mira: the keeper/of lights?"
    (tmp_path / "c.json").write_text(json.dumps(card), encoding="utf-8")
    result = store.import_with_notes(tmp_path / "c.json")
    assert result.character.name == "Mira the keeper of lights"
    assert any("was changed" in note for note in result.notes)
    assert result.path == store.user_dir.resolve() / "Mira the keeper of lights.yaml"


# --- malformed cards


def png_with_text(key: str, text: bytes) -> bytes:
    raw = io.BytesIO()
    avatar_image().save(raw, format="PNG")
    chunks = cards.png_chunks(raw.getvalue())
    return cards.build_png([*chunks[:-1], (b"tEXt", key.encode() + b"\0" + text), chunks[-1]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (png_with_text("chara", b"%%% not base64 %%%"), "not valid base64"),
        (png_with_text("chara", base64.b64encode(b"{not json")), "not valid JSON"),
        (
            png_with_text("chara", base64.b64encode(b'{"spec": "chara_card_v2", "data": {"name": ""}}')),
            "no name",
        ),
        (png_with_text("chara", base64.b64encode(b'{"spec": "chara_card_v9", "data": {}}')), "Unsupported"),
        (png_with_text("Comment", b"just a picture"), "no character card"),
        (png_with_text("chara", b"e30=")[:-30], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "checksum"),
    ],
)
def test_malformed_card_pngs_are_refused_with_a_reason(
    store: CharacterStore, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(CharacterError, match=message):
        store.import_file(path)
    assert store.names() == ["Assistant", "Captain Barnacle", "Coder"]  # nothing was saved


def test_damaged_png_checksum_is_reported(store: CharacterStore, tmp_path: Path) -> None:
    good = png_with_text("chara", base64.b64encode(json.dumps(original_card()).encode()))
    index = good.index(b"IDAT") + 6
    (tmp_path / "damaged.png").write_bytes(good[:index] + bytes([good[index] ^ 0xFF]) + good[index + 1 :])
    with pytest.raises(CharacterError, match="damaged"):
        store.import_file(tmp_path / "damaged.png")


def test_huge_files_are_refused_before_reading(store: CharacterStore, tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(cards.MAX_CARD_BYTES + 1)
    with pytest.raises(CharacterError, match="larger than 20 MB"):
        store.import_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"spec": "chara_card_v2", "data": {"description": "no name"}}', "no name"),
        ('{"spec": "chara_card_v2"}', "no 'data' object"),
        ("[1, 2, 3]", "mapping"),
    ],
)
def test_malformed_card_json_is_refused(
    store: CharacterStore, tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(CharacterError, match=message):
        store.import_file(tmp_path / "bad.json")


def test_compressed_text_chunks_are_read_and_bombs_refused() -> None:
    payload = base64.b64encode(json.dumps({"spec": "chara_card_v2", "data": {"name": "Z"}}).encode())
    raw = io.BytesIO()
    avatar_image().save(raw, format="PNG")
    chunks = cards.png_chunks(raw.getvalue())
    ztxt = (b"zTXt", b"chara\0\0" + zlib.compress(payload))
    data, avatar = cards.read_card_png(cards.build_png([*chunks[:-1], ztxt, chunks[-1]]))
    assert data == {"name": "Z"} and b"zTXt" not in avatar
    bomb = (b"zTXt", b"chara\0\0" + zlib.compress(b"A" * (cards.MAX_CARD_BYTES + 10)))
    with pytest.raises(cards.CardError, match="size limit"):
        cards.read_card_png(cards.build_png([*chunks[:-1], bomb, chunks[-1]]))


def test_placeholder_png_is_a_valid_image() -> None:
    raw = cards.placeholder_png("Somebody")
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        assert image.size == (128, 128) and image.mode == "RGB"
    assert struct.unpack(">I", raw[8:12])[0] == 13  # IHDR first
    assert cards.placeholder_png("Somebody") == raw  # deterministic
