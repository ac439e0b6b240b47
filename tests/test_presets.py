from __future__ import annotations

from pathlib import Path

import pytest

from webui.config import PROJECT_ROOT
from webui.core.params import GenerationParams
from webui.core.paths import InvalidNameError
from webui.core.presets import PresetError, PresetStore


@pytest.fixture
def store(tmp_path: Path) -> PresetStore:
    return PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets")


def test_bundled_presets_are_listed_default_first(store: PresetStore) -> None:
    names = store.names()
    assert names[0] == "Default"
    assert {"Default", "Deterministic", "Creative", "Coding", "Min-p"} <= set(names)


def test_every_bundled_preset_loads(store: PresetStore) -> None:
    for name in store.names():
        preset = store.load(name)
        assert preset.ignored_keys == (), name


def test_coding_preset_is_a_sparse_overlay_on_the_defaults(store: PresetStore) -> None:
    preset = store.load("Coding")
    params = preset.params
    assert (params.temperature, params.repetition_penalty, params.top_k, params.top_p, params.min_p) == (
        0.01, 1.0, 20, 0.95, 0.0,
    )  # fmt: skip
    # Everything the file does not mention keeps the schema default.
    assert params.max_new_tokens == GenerationParams().max_new_tokens
    assert params.seed == -1


def test_save_writes_only_changed_keys_and_loads_back(store: PresetStore, tmp_path: Path) -> None:
    params = GenerationParams().overlay({"temperature": 0.3, "stop": ["###"]})
    path = store.save("Mine", params)
    assert path.parent == (tmp_path / "presets").resolve()
    assert path.read_text().strip().splitlines() == ["temperature: 0.3", "stop:", "- '###'"]
    assert store.load("Mine").params == params
    assert "Mine" in store.names()
    store.delete("Mine")
    assert "Mine" not in store.names()
    with pytest.raises(PresetError):
        store.load("Mine")


def test_user_preset_overrides_bundled_one(store: PresetStore) -> None:
    store.save("Coding", GenerationParams(temperature=0.5))
    assert store.load("Coding").params.temperature == 0.5
    store.delete("Coding")
    assert store.load("Coding").params.temperature == 0.01


def test_bundled_presets_cannot_be_deleted(store: PresetStore) -> None:
    with pytest.raises(PresetError, match="bundled"):
        store.delete("Creative")


def test_text_generation_webui_keys_are_reported_not_fatal(store: PresetStore, tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "Theirs.yaml").write_text("temperature: 0.9\ntfs: 0.95\ntop_a: 0.2\n")
    preset = store.load("Theirs")
    assert preset.params.temperature == 0.9
    assert preset.ignored_keys == ("tfs", "top_a")


def test_invalid_values_give_a_clear_error(store: PresetStore, tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "Bad.yaml").write_text("temperature: hot\n")
    with pytest.raises(PresetError, match="temperature"):
        store.load("Bad")
    (tmp_path / "presets" / "List.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(PresetError, match="mapping"):
        store.load("List")


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", "x\x00y", "/etc/passwd", ".hidden"])
def test_names_that_would_escape_the_folder_are_rejected(
    store: PresetStore, tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidNameError):
        store.save(name, GenerationParams())
    assert not any(tmp_path.parent.glob("evil*"))
