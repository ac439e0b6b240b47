"""Presets: flat YAML files holding only the GenerationParams keys that differ from the defaults.

Bundled presets live in ``presets/`` (never written); the user's own in ``user_data/presets/`` override bundled
ones of the same name. text-generation-webui presets load too: keys Palabre does not know are reported, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webui.core.params import PARAM_NAMES, GenerationParams, describe_validation_error
from webui.core.paths import atomic_write_text, files_by_stem, path_in
from webui.core.safe_load import load_yaml

DEFAULT_PRESET = "Default"
_SUFFIXES = (".yaml", ".yml")


class PresetError(ValueError):
    """A preset that cannot be read, saved or deleted; the message is meant for the user."""


@dataclass(frozen=True)
class Preset:
    """A preset resolved onto the defaults."""

    name: str
    params: GenerationParams
    overlay: dict[str, Any]
    ignored_keys: tuple[str, ...] = ()
    bundled: bool = True


class PresetStore:
    """Lists, loads, saves and deletes presets; user files win over bundled ones of the same name."""

    def __init__(self, bundled_dir: Path, user_dir: Path) -> None:
        self.bundled_dir = bundled_dir
        self.user_dir = user_dir

    def _files(self, folder: Path) -> dict[str, Path]:
        return files_by_stem(folder, _SUFFIXES)  # valid names only; no symlinks leading out of the folder

    def names(self) -> list[str]:
        """Every preset name, "Default" first."""
        names = set(self._files(self.bundled_dir)) | set(self._files(self.user_dir)) | {DEFAULT_PRESET}
        return sorted(names, key=lambda n: (n != DEFAULT_PRESET, n.lower()))

    def is_user_preset(self, name: str) -> bool:
        return name in self._files(self.user_dir)

    def load(self, name: str) -> Preset:
        """The preset ``name`` applied onto the defaults; PresetError if missing or invalid."""
        user = self._files(self.user_dir).get(name)
        path = user or self._files(self.bundled_dir).get(name)
        if path is None:
            if name == DEFAULT_PRESET:
                return Preset(name, GenerationParams(), {})
            raise PresetError(f"No preset named {name!r}. Available presets: {', '.join(self.names())}.")
        return self._parse(name, path, bundled=user is None)

    def _parse(self, name: str, path: Path, *, bundled: bool) -> Preset:
        try:
            data = load_yaml(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PresetError(f"Preset {name!r} ({path.name}) is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise PresetError(
                f"Preset {name!r} must be a mapping of sampler settings, not {type(data).__name__}."
            )
        known = {k: v for k, v in data.items() if k in PARAM_NAMES}
        ignored = tuple(sorted(str(k) for k in data if k not in PARAM_NAMES))
        try:
            params = GenerationParams().overlay(known)
        except ValidationError as exc:
            raise PresetError(
                f"Preset {name!r} has invalid values: {describe_validation_error(exc)}"
            ) from exc
        return Preset(name, params, known, ignored, bundled)

    def save(self, name: str, params: GenerationParams) -> Path:
        """Write ``params`` as a sparse user preset (only non-default keys), atomically."""
        path = path_in(self.user_dir, name, ".yaml", what="preset name")
        overlay = params.non_default()
        text = yaml.safe_dump(overlay, sort_keys=False, allow_unicode=True) if overlay else "{}\n"
        atomic_write_text(path, text)
        return path

    def delete(self, name: str) -> None:
        """Delete a user preset; bundled presets cannot be deleted."""
        path = self._files(self.user_dir).get(name)
        if path is None:
            if name in self._files(self.bundled_dir) or name == DEFAULT_PRESET:
                raise PresetError(f"{name!r} is a bundled preset and cannot be deleted.")
            raise PresetError(f"No user preset named {name!r}.")
        path.unlink()
