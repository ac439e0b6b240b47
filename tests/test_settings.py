"""settings.yaml: round trip, defaults, corrupt and unknown content reported (never a crash), atomic writes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from webui.core import paths
from webui.core.settings import SessionSettings, SettingsFile, load_settings, parse_settings, save_settings


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    settings = SessionSettings(
        model="SmolLM2-135M-Instruct.Q4_1.gguf",
        loader="llama.cpp",
        loader_settings={"n_ctx": 2048, "use_mmap": False, "tensor_split": ""},
        preset="Deterministic",
        mode="chat-instruct",
        template="ChatML",
        theme="dark",
        character="Ada",
    )
    save_settings(path, settings)
    loaded = load_settings(path)
    assert loaded == settings
    assert loaded.warnings == ()
    assert "loader_settings:" in path.read_text() and "n_ctx: 2048" in path.read_text()


def test_missing_and_empty_files_give_the_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "nope.yaml") == SessionSettings()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    settings = load_settings(empty)
    assert settings == SessionSettings() and settings.warnings == ()
    assert settings.preset == "Default" and settings.mode == "instruct" and settings.theme == "system"
    assert settings.model is None and settings.loader_settings == {} and settings.character is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mode: [chat\npreset: {", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("\x00\x01binary", "not valid YAML"),
    ],
)
def test_corrupt_file_gives_defaults_and_a_readable_warning(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    settings = load_settings(path)
    assert settings == SessionSettings()
    assert len(settings.warnings) == 1 and fragment in settings.warnings[0]
    assert "settings.yaml" in settings.warnings[0] and "\n" not in settings.warnings[0]


def test_undecodable_file_gives_defaults_and_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(b"mode: \xff\xfe chat")
    settings = load_settings(path)
    assert settings == SessionSettings() and "Cannot read" in settings.warnings[0]


def test_unknown_keys_and_bad_values_are_reported_the_rest_is_kept() -> None:
    settings = parse_settings("preset: Creative\nmode: story\ncolour: blue\nwidth: 3\ntheme: dark\n")
    assert settings.preset == "Creative" and settings.theme == "dark"
    assert settings.mode == "instruct"  # the bad value fell back to its default
    assert any("unknown settings ignored: colour, width" in w for w in settings.warnings)
    assert any("'mode'" in w and "story" in w for w in settings.warnings)


def test_save_is_atomic_and_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.yaml"
    save_settings(path, SessionSettings(preset="Creative"))
    before = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_settings(path, SessionSettings(preset="Deterministic"))
    monkeypatch.undo()
    assert path.read_text() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.yaml"]  # no temp file left behind
    assert load_settings(path).preset == "Creative"


def test_settings_file_updates_only_the_named_fields(tmp_path: Path) -> None:
    store = SettingsFile(tmp_path / "user_data" / "settings.yaml")
    assert store.load() == SessionSettings()
    store.update(character="Ada", theme="dark")
    updated = store.update(preset="Creative")
    assert updated.character == "Ada" and updated.theme == "dark" and updated.preset == "Creative"
    assert store.load() == updated
    with pytest.raises(ValueError, match="Unknown settings"):
        store.update(colour="blue")
    with pytest.raises(ValueError, match="theme"):
        store.update(theme="purple")
    assert store.load() == updated  # a rejected update writes nothing


def test_concurrent_updates_are_not_lost(tmp_path: Path) -> None:
    store = SettingsFile(tmp_path / "settings.yaml")
    fields = {"preset": "Creative", "mode": "chat", "theme": "dark", "character": "Ada", "model": "m.gguf"}
    threads = [threading.Thread(target=store.update, kwargs={name: value}) for name, value in fields.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    saved = store.load()
    assert {name: getattr(saved, name) for name in fields} == fields
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
