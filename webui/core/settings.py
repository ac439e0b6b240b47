"""The page's remembered choices: ``user_data/settings.yaml`` (last model and loader settings, preset, mode, ...).

Reading never fails: a missing file gives the defaults, a corrupt one gives the defaults plus a warning, and a
bad or unknown key is dropped with a warning while the rest is kept. Writing is atomic (temp file + rename).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from webui.core.params import describe_validation_error
from webui.core.paths import atomic_write_text
from webui.core.presets import DEFAULT_PRESET

Theme = Literal["system", "light", "dark"]
ChatMode = Literal["instruct", "chat", "chat-instruct"]
SETTINGS_FILE = "settings.yaml"
_HEADER = "# Palabre settings: written by the page (Session tab); safe to edit while Palabre is stopped.\n"


class SessionSettings(BaseModel):
    """What the page remembers between runs; every field is optional and has a default."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    model: str | None = Field(None, description="The model last loaded (a name in the models folder).")
    loader: str | None = Field(None, description="The loader it was loaded with.")
    loader_settings: dict[str, Any] = Field(
        default_factory=dict, description="That loader's settings (e.g. n_ctx) as they were at load time."
    )
    preset: str = Field(DEFAULT_PRESET, description="The sampler preset chosen on the Parameters tab.")
    mode: ChatMode = Field("instruct", description="The Chat tab's mode.")
    template: str | None = Field(None, description="The instruction template chosen; None = detected.")
    theme: Theme = Field("system", description="Page colours: system, light or dark.")
    character: str | None = Field(None, description="The character chosen on the Character tab.")
    extensions: list[str] = Field(
        default_factory=list, description="The extensions enabled on the Session tab, in hook order."
    )
    extension_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Each extension's settings, by extension name."
    )

    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """What was wrong with the file this was read from (empty when it read cleanly)."""
        return self._warnings

    def __eq__(self, other: object) -> bool:
        """Equal when every setting is equal (the warnings about the file read are not a setting)."""
        if not isinstance(other, SessionSettings):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def to_yaml(self) -> str:
        """The file text (all fields, in declaration order)."""
        data = self.model_dump(mode="json")
        return _HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _with_warnings(settings: SessionSettings, warnings: list[str]) -> SessionSettings:
    settings._warnings = tuple(warnings)
    return settings


def parse_settings(text: str, source: str = SETTINGS_FILE) -> SessionSettings:
    """Settings from YAML text; whatever cannot be used is replaced by its default and reported."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return _with_warnings(
            SessionSettings(),
            [f"{source} is not valid YAML, so the default settings are used ({' '.join(str(exc).split())})."],
        )
    if data is None:
        return SessionSettings()
    if not isinstance(data, dict):
        found = type(data).__name__
        return _with_warnings(
            SessionSettings(), [f"{source} should hold a mapping of settings, not a {found}: defaults used."]
        )
    warnings: list[str] = []
    known = {str(key): value for key, value in data.items() if str(key) in SessionSettings.model_fields}
    unknown = sorted(str(key) for key in data if str(key) not in SessionSettings.model_fields)
    if unknown:
        warnings.append(f"{source}: unknown settings ignored: {', '.join(unknown)}.")
    try:
        settings = SessionSettings.model_validate(known)
    except ValidationError as exc:
        bad = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        for name in bad:
            warnings.append(
                f"{source}: the value of {name!r} ({known.get(name)!r}) is not valid; default used."
            )
            known.pop(name, None)
        settings = SessionSettings.model_validate(known)
    return _with_warnings(settings, warnings)


def load_settings(path: Path) -> SessionSettings:
    """Settings from ``path``: defaults if it is missing; defaults + ``warnings`` if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SessionSettings()
    except (OSError, UnicodeDecodeError) as exc:
        return _with_warnings(
            SessionSettings(), [f"Cannot read {path}: {exc}. The default settings are used."]
        )
    return parse_settings(text, path.name)


def save_settings(path: Path, settings: SessionSettings) -> None:
    """Write ``settings`` to ``path`` atomically (a crash leaves the old file or the new one, never half)."""
    atomic_write_text(path, settings.to_yaml())


class SettingsFile:
    """One settings file shared by every page session: read-modify-write under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> SessionSettings:
        with self._lock:
            return load_settings(self.path)

    def update(self, **changes: Any) -> SessionSettings:
        """Change some fields and save; the other fields keep their saved values. ValueError if invalid."""
        unknown = sorted(set(changes) - set(SessionSettings.model_fields))
        if unknown:
            raise ValueError(f"Unknown settings: {', '.join(unknown)}.")
        with self._lock:
            current = load_settings(self.path)
            try:
                updated = SessionSettings.model_validate({**current.model_dump(), **changes})
            except ValidationError as exc:
                raise ValueError(f"Invalid settings: {describe_validation_error(exc)}") from exc
            save_settings(self.path, updated)
            return updated
