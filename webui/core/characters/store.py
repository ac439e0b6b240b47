"""Personalities ("characters") as files: list, load, save and delete them, import them (personality YAML/JSON,
Character Card V2 JSON/PNG, Ollama Modelfile) and export them.

A personality file is YAML (or JSON) in ``characters/`` (bundled, never written) or ``user_data/characters/``
(the user's; a user file overrides a bundled one of the same name). What a personality holds and how it maps to
a card or a Modelfile is in webui.core.characters.model (re-exported here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from webui.core.characters import cards, modelfile
from webui.core.characters.go_template import convert_go_template
from webui.core.characters.model import (
    AVATAR_SUFFIXES,
    DEFAULT_CHARACTER,
    DEFAULT_USER_NAME,
    MODELFILE_PLACEHOLDER_MODEL,
    Character,
    CharacterError,
    ExampleMessage,
    ModelfileExtras,
    character_yaml,
    fill_placeholders,
)
from webui.core.params import GenerationParams, describe_validation_error
from webui.core.paths import (
    InvalidNameError,
    atomic_write_bytes,
    atomic_write_text,
    files_by_stem,
    path_in,
    validate_name,
)
from webui.core.safe_load import load_json, load_yaml
from webui.core.templates.store import TemplateError, TemplateStore

__all__ = [
    "AVATAR_SUFFIXES",
    "DEFAULT_CHARACTER",
    "DEFAULT_USER_NAME",
    "EXPORT_FORMATS",
    "EXPORT_SUFFIXES",
    "MODELFILE_PLACEHOLDER_MODEL",
    "PERSONALITY_SUFFIXES",
    "Character",
    "CharacterError",
    "CharacterStore",
    "ExampleMessage",
    "ExportFormat",
    "ImportResult",
    "ModelfileExtras",
    "character_yaml",
    "fill_placeholders",
]

PERSONALITY_SUFFIXES = (".yaml", ".yml", ".json")  # earlier wins when one folder holds several
ExportFormat = Literal["yaml", "card-json", "card-png", "modelfile"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("yaml", "card-json", "card-png", "modelfile")
EXPORT_SUFFIXES: dict[str, str] = {
    "yaml": ".yaml",
    "card-json": ".json",
    "card-png": ".png",
    "modelfile": ".Modelfile",
}


def _check_param(key: str, value: Any) -> None:
    try:
        GenerationParams.model_validate({key: value})
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def _field_types() -> dict[str, type]:
    return {name: info.annotation for name, info in GenerationParams.model_fields.items()}  # type: ignore[misc]


def _named(data: dict[str, Any], default: str) -> dict[str, Any]:
    """Personality file data with ``name`` defaulting to the file's stem."""
    return data if "name" in data or "char_name" in data else {"name": default, **data}


def _safe_name(name: str) -> str:
    """A derived name (from a card or a file) made usable as a file name."""
    cleaned = re.sub(r'[/\\:*?"<>|\x00-\x1f\x7f]+', " ", name)
    cleaned = " ".join(cleaned.split()).lstrip(". ")[:100].rstrip(". ")
    try:
        return validate_name(cleaned)
    except InvalidNameError:
        return "Imported"


@dataclass
class ImportResult:
    """An imported personality, where it was saved, and what the user should know about the import."""

    character: Character
    path: Path
    notes: list[str] = field(default_factory=list)


class CharacterStore:
    """Lists, loads, saves, deletes, imports and exports personalities; user files win over bundled ones.

    ``templates`` is where an Ollama TEMPLATE converted to Jinja is saved on import (as a user template).
    """

    def __init__(self, bundled_dir: Path, user_dir: Path, templates: TemplateStore | None = None) -> None:
        self.bundled_dir = Path(bundled_dir)
        self.user_dir = Path(user_dir)
        self.templates = templates

    # -- files
    def _files(self, folder: Path) -> dict[str, Path]:
        return files_by_stem(folder, PERSONALITY_SUFFIXES)

    def _locate(self, name: str) -> Path:
        self._valid(name)
        path = self._files(self.user_dir).get(name) or self._files(self.bundled_dir).get(name)
        if path is None:
            raise CharacterError(
                f'No personality named "{name}". Available: {", ".join(self.names()) or "none"}.'
            )
        return path

    @staticmethod
    def _valid(name: str) -> str:
        try:
            return validate_name(name, what="personality name")
        except InvalidNameError as exc:
            raise CharacterError(str(exc)) from None

    def names(self) -> list[str]:
        """Every personality name, "Assistant" first, then case-insensitively sorted."""
        names = set(self._files(self.bundled_dir)) | set(self._files(self.user_dir))
        return sorted(names, key=lambda n: (n != DEFAULT_CHARACTER, n.casefold(), n))

    def is_user_character(self, name: str) -> bool:
        return name in self._files(self.user_dir)

    def is_bundled(self, name: str) -> bool:
        return name in self._files(self.bundled_dir)

    def load(self, name: str) -> Character:
        """The personality ``name``; CharacterError if missing or invalid (the message names the file)."""
        path = self._locate(name)
        try:
            text = path.read_text(encoding="utf-8")
            data = load_json(text) if path.suffix == ".json" else load_yaml(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise CharacterError(f'Personality "{name}" ({path.name}) cannot be read: {exc}') from None
        if not isinstance(data, dict):
            raise CharacterError(f'Personality "{name}" ({path.name}) must be a mapping of fields.')
        try:
            if cards.is_card(data):
                return Character.from_card(cards.card_data(data))
            return Character.model_validate(_named(data, name))
        except (ValidationError, cards.CardError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise CharacterError(f'Personality "{name}" ({path.name}) is invalid: {detail}') from None

    def save(self, character: Character, *, avatar_bytes: bytes | None = None) -> Path:
        """Write ``<user_dir>/<name>.yaml`` (and the avatar image ``<name>.<ext>``) atomically."""
        name = self._valid(character.name)
        target = path_in(self.user_dir, name, ".yaml", what="personality name")
        if avatar_bytes is not None:
            suffix = cards.image_suffix(avatar_bytes)
            if suffix is None:
                raise CharacterError("The avatar must be a PNG, JPEG, GIF or WebP image.")
            if len(avatar_bytes) > cards.MAX_CARD_BYTES:
                raise CharacterError(f"The avatar is larger than {cards.MAX_CARD_BYTES // (1024 * 1024)} MB.")
            avatar = path_in(self.user_dir, name, suffix)
            atomic_write_bytes(avatar, avatar_bytes)
            for other in AVATAR_SUFFIXES:
                if other != suffix:
                    path_in(self.user_dir, name, other).unlink(missing_ok=True)
            character = character.model_copy(update={"avatar": avatar.name})
        atomic_write_text(target, character_yaml(character))
        for suffix in PERSONALITY_SUFFIXES[1:]:  # a stale .yml/.json of that name would be shadowed anyway
            path_in(self.user_dir, name, suffix).unlink(missing_ok=True)
        return target

    def delete(self, name: str) -> None:
        """Delete a user personality and its avatar; bundled ones cannot be deleted."""
        self._valid(name)
        path = self._files(self.user_dir).get(name)
        if path is None:
            if self.is_bundled(name):
                raise CharacterError(f'"{name}" is a bundled personality and cannot be deleted.')
            raise CharacterError(f'No user personality named "{name}".')
        for suffix in PERSONALITY_SUFFIXES + AVATAR_SUFFIXES:
            path_in(self.user_dir, name, suffix).unlink(missing_ok=True)

    def avatar_path(self, name: str) -> Path | None:
        """The avatar image of ``name`` (its ``avatar`` file, else ``<name>.png`` etc. next to it), or None."""
        path = self._locate(name)
        character = self.load(name)
        folders = [path.parent, *(f for f in (self.user_dir, self.bundled_dir) if f != path.parent)]
        candidates = [character.avatar] if character.avatar else [f"{name}{s}" for s in AVATAR_SUFFIXES]
        for folder in folders:
            for candidate in candidates:
                found = folder / candidate
                if found.is_file() and found.resolve().parent == folder.resolve():
                    return found
        return None

    # -- import
    def import_file(self, path: Path, *, name: str | None = None, overwrite: bool = False) -> Character:
        """Import a personality YAML/JSON, a Character Card (JSON or PNG) or an Ollama Modelfile; it is saved
        into the user folder and returned. ``name`` renames it; an existing user personality of that name is
        an error unless ``overwrite``."""
        return self.import_with_notes(path, name=name, overwrite=overwrite).character

    def import_with_notes(
        self, path: Path, *, name: str | None = None, overwrite: bool = False
    ) -> ImportResult:
        """Like import_file, and also says where it was saved and what was kept but not used."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > cards.MAX_CARD_BYTES:
                raise CharacterError(
                    f"{path.name} is larger than {cards.MAX_CARD_BYTES // (1024 * 1024)} MB."
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise CharacterError(f"Cannot read {path}: {exc.strerror or exc}") from None
        notes: list[str] = []
        avatar: bytes | None = None
        try:
            if raw.startswith(cards.PNG_SIGNATURE):
                data, avatar = cards.read_card_png(raw)
                character = Character.from_card(data)
            else:
                text = raw.decode("utf-8-sig")
                suffix = path.suffix.lower()
                if suffix in (".json", ".yaml", ".yml"):
                    character, avatar = self._read_personality(path, text)
                elif modelfile.looks_like_modelfile(text):
                    return self._import_modelfile(path, text, name, overwrite)
                else:
                    raise CharacterError(
                        f"{path.name} is not a personality (.yaml/.json), a character card (.json/.png) or an "
                        "Ollama Modelfile."
                    )
        except (cards.CardError, ValidationError, UnicodeDecodeError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise CharacterError(f"Cannot import {path.name}: {detail}") from None
        character = self._rename(character, name, overwrite, notes)
        saved = self.save(character, avatar_bytes=avatar)
        return ImportResult(self.load(character.name), saved, notes)

    def _read_personality(self, path: Path, text: str) -> tuple[Character, bytes | None]:
        try:
            data = load_json(text) if path.suffix.lower() == ".json" else load_yaml(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CharacterError(
                f"{path.name} is not valid {path.suffix.lstrip('.').upper()}: {exc}"
            ) from None
        if cards.is_card(data):
            return Character.from_card(cards.card_data(data)), None
        if not isinstance(data, dict):
            raise CharacterError(f"{path.name} must hold a mapping of personality fields.")
        character = Character.model_validate(_named(data, path.stem))
        candidates = [character.avatar] if character.avatar else [f"{path.stem}{s}" for s in AVATAR_SUFFIXES]
        for candidate in candidates:
            image = path.parent / candidate
            if image.is_file() and image.stat().st_size <= cards.MAX_CARD_BYTES:
                return character, image.read_bytes()
        return character.model_copy(update={"avatar": None}), None

    def _rename(self, character: Character, name: str | None, overwrite: bool, notes: list[str]) -> Character:
        if name is not None:
            final = self._valid(name)
        else:
            final = _safe_name(character.name)
            if final != character.name:
                notes.append(
                    f'The name "{character.name}" was changed to "{final}" to be usable as a file name.'
                )
        if not overwrite and self.is_user_character(final):
            raise CharacterError(
                f'A personality named "{final}" already exists. Import it under another name, or delete '
                "the existing one first."
            )
        if self.is_bundled(final):
            notes.append(f'"{final}" now overrides the bundled personality of the same name.')
        return character.model_copy(update={"name": final})

    def _import_modelfile(self, path: Path, text: str, name: str | None, overwrite: bool) -> ImportResult:
        stem = path.name[: -len(".modelfile")] if path.name.lower().endswith(".modelfile") else path.stem
        derived = path.resolve().parent.name if stem.lower() == "modelfile" or not stem else stem
        try:
            imported = modelfile.import_fields(text, _field_types(), _check_param)
            character = Character.model_validate({"name": derived or "Imported", **imported.fields})
        except (modelfile.ModelfileError, ValidationError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise CharacterError(f"Cannot import {path.name}: {detail}") from None
        notes = imported.notes
        character = self._rename(character, name, overwrite, notes)
        if imported.template is not None:
            character.instruction_template = self._install_template(character.name, imported.template, notes)
        saved = self.save(character)
        return ImportResult(self.load(character.name), saved, notes)

    def _install_template(self, name: str, go_source: str, notes: list[str]) -> str | None:
        """Save the converted TEMPLATE as the user template "<name> (Modelfile)"; None if it cannot be."""
        conversion = convert_go_template(go_source)
        if conversion.jinja is None:
            notes.append(
                f"{conversion.problem[0].upper()}{conversion.problem[1:]}. The Go text is kept for export; "
                "chats use the model's own template."
                if conversion.problem
                else "The TEMPLATE could not be converted."
            )
            return None
        if self.templates is None:
            notes.append("The TEMPLATE was converted but there is no template folder to save it in.")
            return None
        template_name = f"{name[:100]} (Modelfile)"
        try:
            self.templates.save(template_name, conversion.jinja)
        except (TemplateError, InvalidNameError) as exc:
            notes.append(f"The converted TEMPLATE could not be saved: {exc}")
            return None
        notes.append(f'The TEMPLATE was converted to the instruction template "{template_name}".')
        return template_name

    # -- export
    def render_export(self, name: str, fmt: ExportFormat) -> tuple[str, bytes]:
        """(file name, content) of ``name`` exported as ``fmt`` — for a download without touching the disk."""
        character = self.load(name)
        if fmt == "yaml":
            content = character_yaml(character).encode("utf-8")
        elif fmt == "card-json":
            content = (json.dumps(character.to_card(), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        elif fmt == "card-png":
            content = cards.write_card_png(character.to_card(), self._avatar_png(name, character))
        elif fmt == "modelfile":
            content = character.to_modelfile().encode("utf-8")
        else:
            raise CharacterError(f"Unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}.")
        return f"{name}{EXPORT_SUFFIXES[fmt]}", content  # the validated file name, not the in-file name

    def _avatar_png(self, name: str, character: Character) -> bytes:
        path = self.avatar_path(name)
        if path is not None:
            raw = path.read_bytes()
            if raw.startswith(cards.PNG_SIGNATURE):
                try:
                    cards.png_chunks(raw)
                    return raw
                except cards.CardError:
                    pass
            else:
                converted = cards.to_png(raw)
                if converted is not None:
                    return converted
        return cards.placeholder_png(character.name)

    def export(self, name: str, fmt: ExportFormat, output: Path | None = None) -> Path:
        """Write ``name`` as ``fmt`` to ``output`` (a file, or a folder for the default file name); without
        ``output``, into ``exports/`` next to the user's characters folder. Returns the written path."""
        file_name, content = self.render_export(name, fmt)
        if output is None:
            target = self.user_dir.parent / "exports" / file_name
        else:
            output = Path(output)
            target = output / file_name if output.is_dir() else output
        try:
            atomic_write_bytes(target, content)
        except OSError as exc:
            raise CharacterError(f"Cannot write {target}: {exc.strerror or exc}") from None
        return target
