"""Personalities: the bundled ones, the store (save/load/delete/override), placeholders, validation, safety."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from webui.config import PROJECT_ROOT, AppConfig
from webui.core.characters.store import Character, CharacterError, CharacterStore, fill_placeholders
from webui.core.params import GenerationParams


@pytest.fixture
def store(tmp_path: Path) -> CharacterStore:
    return CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters")


def png_bytes(color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


def test_config_names_the_character_folders(tmp_path: Path) -> None:
    config = AppConfig(user_data_dir=tmp_path)
    assert config.user_characters_dir == tmp_path / "characters"
    assert config.bundled_characters_dir == PROJECT_ROOT / "characters"


def test_bundled_personalities_load(store: CharacterStore) -> None:
    assert store.names()[0] == "Assistant"
    assert {"Assistant", "Coder", "Captain Barnacle"} <= set(store.names())
    for name in store.names():
        character = store.load(name)
        assert character.name == name and character.context and character.greeting
        GenerationParams().overlay(character.params_overlay())
    coder = store.load("Coder")
    assert coder.context == "You are a helpful coding AI assistant. Answer in a concise way."
    assert coder.params_overlay() == {"temperature": 0.01, "repetition_penalty": 1.0}
    assert store.avatar_path("Coder") is None


def test_placeholders_are_filled(store: CharacterStore) -> None:
    captain = store.load("Captain Barnacle")
    assert captain.user_name == "Matey"
    assert captain.greeting_for("Ada").endswith("Ahoy, Ada! Ye've found the\nfinest ship on the seven seas. "
                                                "What knowledge be ye hunting for today?")  # fmt: skip
    assert "Ahoy, Matey!" in captain.greeting_for()  # the personality's own user name by default
    context = captain.context_for("Ada")
    assert context.startswith("Captain Barnacle is a cheerful, weather-beaten pirate captain")
    assert "nautical advice for Ada." in context
    assert "Ada: What is a computer virus?\nCaptain Barnacle: Arr, picture a stowaway rat, Ada!" in context
    assert "{{" not in context and "<START>" not in context
    assert "What is a computer virus?" not in captain.context_for("Ada", include_examples=False)
    assistant = store.load("Assistant")
    assert "between You and Assistant" in assistant.context_for()
    assert (
        fill_placeholders("<BOT> meets <user> and {{Char}}/{{USER}}", "Bo", "Al") == "Bo meets Al and Bo/Al"
    )


def test_save_load_delete_a_user_personality(store: CharacterStore) -> None:
    character = Character(
        name="Tutor",
        greeting="Hi {{user}}, ready?",
        context="{{char}} teaches maths step by step.",
        user_name="Sam",
        parameters={"temperature": 0.3, "stop": ["\nSam:"]},
        instruction_template="ChatML",
    )
    path = store.save(character, avatar_bytes=png_bytes())
    assert path == store.user_dir.resolve() / "Tutor.yaml"
    assert "Tutor" in store.names() and store.is_user_character("Tutor")
    loaded = store.load("Tutor")
    assert loaded.model_dump(exclude={"avatar"}) == character.model_dump(exclude={"avatar"})
    assert loaded.avatar == "Tutor.png"
    avatar = store.avatar_path("Tutor")
    assert avatar is not None and avatar.read_bytes() == png_bytes()
    on_disk = yaml.safe_load(path.read_text("utf-8"))
    assert list(on_disk)[:3] == ["name", "greeting", "context"]
    assert "description" not in on_disk and "card_extra" not in on_disk  # empty card fields are left out
    assert not [p for p in store.user_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    store.delete("Tutor")
    assert "Tutor" not in store.names() and not list(store.user_dir.iterdir())
    with pytest.raises(CharacterError, match="No user personality"):
        store.delete("Tutor")
    with pytest.raises(CharacterError, match='No personality named "Tutor"'):
        store.load("Tutor")


def test_user_personality_overrides_a_bundled_one(store: CharacterStore) -> None:
    bundled = store.load("Coder")
    store.save(bundled.model_copy(update={"context": "You write Rust only."}))
    assert store.names().count("Coder") == 1
    assert store.load("Coder").context == "You write Rust only."
    assert store.is_bundled("Coder") and store.is_user_character("Coder")
    store.delete("Coder")
    assert store.load("Coder").context == bundled.context
    with pytest.raises(CharacterError, match="bundled personality and cannot be deleted"):
        store.delete("Coder")
    assert (PROJECT_ROOT / "characters" / "Coder.yaml").is_file()


def test_replacing_the_avatar_removes_the_old_one(store: CharacterStore) -> None:
    store.save(Character(name="Pic"), avatar_bytes=png_bytes())
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(jpeg, format="JPEG")
    store.save(store.load("Pic"), avatar_bytes=jpeg.getvalue())
    assert sorted(p.name for p in store.user_dir.iterdir()) == ["Pic.jpg", "Pic.yaml"]
    assert store.load("Pic").avatar == "Pic.jpg"
    with pytest.raises(CharacterError, match="PNG, JPEG, GIF or WebP"):
        store.save(Character(name="Pic"), avatar_bytes=b"not an image")


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "a\0b", "..", ".hidden", "", " padded "])
def test_names_that_could_escape_the_folder_are_rejected(
    store: CharacterStore, tmp_path: Path, name: str
) -> None:
    (tmp_path / "x.yaml").write_text("name: x\ncontext: outside\n", encoding="utf-8")  # a file to reach for
    with pytest.raises(CharacterError):
        store.load(name)
    with pytest.raises(CharacterError):
        store.delete(name)
    with pytest.raises(CharacterError):
        store.export(name, "yaml", tmp_path / "out.yaml")
    with pytest.raises(CharacterError):
        store.avatar_path(name)
    if name.strip():
        with pytest.raises(CharacterError):
            store.save(Character(name=name))
        with pytest.raises(CharacterError):
            store.import_file(PROJECT_ROOT / "characters" / "Coder.yaml", name=name)
    assert (tmp_path / "x.yaml").read_text("utf-8") == "name: x\ncontext: outside\n"
    assert not (tmp_path / "out.yaml").exists()
    assert not store.user_dir.exists() or not list(store.user_dir.iterdir())


def test_avatar_file_names_cannot_point_elsewhere() -> None:
    with pytest.raises(ValidationError, match="avatar"):
        Character(name="A", avatar="../secret.png")
    with pytest.raises(ValidationError, match="image file"):
        Character(name="A", avatar="notes.txt")


def test_invalid_parameters_are_rejected_naming_the_key(store: CharacterStore) -> None:
    with pytest.raises(
        ValidationError, match=r"'temprature' is not a sampler setting \(did you mean 'temperature'\?\)"
    ):
        Character(name="Bad", parameters={"temprature": 0.5})
    with pytest.raises(ValidationError, match="top_p: Input should be less than or equal to 1"):
        Character(name="Bad", parameters={"top_p": 3})
    store.user_dir.mkdir(parents=True)
    (store.user_dir / "Broken.yaml").write_text(
        "name: Broken\ncontext: x\nparameters:\n  temperature: 0.5\n  banana: 1\n", encoding="utf-8"
    )
    with pytest.raises(
        CharacterError, match=r'Personality "Broken" \(Broken.yaml\) is invalid: .*\'banana\''
    ):
        store.load("Broken")
    (store.user_dir / "Broken.yaml").write_text("name: Broken\nparameters: {seed: -7}\n", encoding="utf-8")
    with pytest.raises(CharacterError, match="seed: Input should be greater than or equal to -1"):
        store.load("Broken")
    (store.user_dir / "Broken.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(CharacterError, match="must be a mapping"):
        store.load("Broken")
    (store.user_dir / "Broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(CharacterError, match="cannot be read"):
        store.load("Broken")


def test_text_generation_webui_personalities_import_with_their_avatar(
    store: CharacterStore, tmp_path: Path
) -> None:
    folder = tmp_path / "tgw"
    folder.mkdir()
    (folder / "Example.yaml").write_text(
        "name: Chiharu Yamada\ngreeting: '*Chiharu looks up* Oh, hi {{user}}!'\n"
        "context: |-\n  Chiharu Yamada's Persona: a cheerful programmer.\n  <START>\n  {{user}}: Hi\n",
        encoding="utf-8",
    )
    (folder / "Example.png").write_bytes(png_bytes((9, 9, 9)))
    character = store.import_file(folder / "Example.yaml")
    assert character.name == "Chiharu Yamada"  # the name inside the file; saved under it
    assert store.names().count("Chiharu Yamada") == 1
    assert character.greeting_for("Ada") == "*Chiharu looks up* Oh, hi Ada!"
    avatar = store.avatar_path("Chiharu Yamada")
    assert avatar is not None and avatar.read_bytes() == png_bytes((9, 9, 9))
    legacy = tmp_path / "legacy.json"
    legacy.write_text(
        '{"char_name": "Old", "char_greeting": "Yo", "your_name": "Me", "context": "c"}', "utf-8"
    )
    old = store.import_file(legacy)
    assert (old.name, old.greeting, old.user_name, old.context) == ("Old", "Yo", "Me", "c")


def test_import_does_not_silently_overwrite(store: CharacterStore) -> None:
    source = PROJECT_ROOT / "characters" / "Coder.yaml"
    result = store.import_with_notes(source, name="Mine")
    assert result.character.context == store.load("Coder").context
    with pytest.raises(CharacterError, match='A personality named "Mine" already exists'):
        store.import_file(source, name="Mine")
    store.import_file(source, name="Mine", overwrite=True)
    overriding = store.import_with_notes(source)
    assert any("overrides the bundled personality" in note for note in overriding.notes)


def test_unknown_files_are_refused(store: CharacterStore, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello there\n", encoding="utf-8")
    with pytest.raises(CharacterError, match="not a personality"):
        store.import_file(tmp_path / "notes.txt")
    with pytest.raises(CharacterError, match="Cannot read"):
        store.import_file(tmp_path / "missing.yaml")


def test_yaml_export_reads_back_the_same(store: CharacterStore, tmp_path: Path) -> None:
    out = store.export("Captain Barnacle", "yaml", tmp_path)
    assert out == tmp_path / "Captain Barnacle.yaml"
    exported = yaml.safe_load(out.read_text("utf-8"))
    assert Character.model_validate(exported) == store.load("Captain Barnacle")
    default = store.export("Coder", "yaml")
    assert default == store.user_dir.parent / "exports" / "Coder.yaml"


def test_unknown_keys_in_a_personality_are_kept(store: CharacterStore) -> None:
    store.user_dir.mkdir(parents=True)
    (store.user_dir / "Extra.yaml").write_text("name: Extra\ncontext: c\nmood: sunny\n", encoding="utf-8")
    character = store.load("Extra")
    store.save(character)
    assert yaml.safe_load((store.user_dir / "Extra.yaml").read_text("utf-8"))["mood"] == "sunny"


def test_exports_are_named_after_the_file_not_the_name_inside(store: CharacterStore, tmp_path: Path) -> None:
    store.user_dir.mkdir(parents=True)
    (store.user_dir / "Odd.yaml").write_text("name: ../../escape\ncontext: c\n", encoding="utf-8")
    character = store.load("Odd")
    assert character.name == "../../escape"  # a display name may be anything...
    out = tmp_path / "out"
    out.mkdir()
    assert store.export("Odd", "card-json", out) == out / "Odd.json"  # ...but never becomes a path
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "characters" not in p.parts) == [
        "Odd.json"
    ]
    with pytest.raises(CharacterError, match="not allowed"):
        store.save(character)
