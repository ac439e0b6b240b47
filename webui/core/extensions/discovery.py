"""Finding extensions: bundled ``extensions/<name>/``, the user's ``user_data/extensions/<name>/`` and installed
packages declaring the ``palabre.extensions`` entry point. Importing one that is broken gives a Found with
its error instead of raising, so one bad extension never stops the server.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from webui.core.extensions.hooks import ENTRY_POINT_GROUP
from webui.core.paths import InvalidNameError, validate_name

Source = Literal["bundled", "user", "package"]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Found:
    """One extension found: its module, or the reason it could not be imported."""

    name: str
    source: Source
    location: str  # a folder, or the entry point's ``module:attr``
    module: ModuleType | None
    error: str | None = None


def _first_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return " ".join(text.split())


def _import_folder(name: str, folder: Path, source: Source) -> Found:
    """Import ``folder/__init__.py`` as a package under a private name (so its relative imports work)."""
    init = folder / "__init__.py"
    module_name = f"palabre_extensions_{source}.{name}"
    if not init.is_file():
        return Found(name, source, str(folder), None, f"{folder} has no __init__.py.")
    cached = sys.modules.get(module_name)
    if cached is not None and getattr(cached, "__file__", None) == str(init):
        return Found(name, source, str(folder), cached)  # imported by an earlier manager in this process
    for loaded in [key for key in sys.modules if key == module_name or key.startswith(module_name + ".")]:
        del sys.modules[loaded]  # another folder of the same name was imported before: import this one
    parent = f"palabre_extensions_{source}"
    if parent not in sys.modules:
        package = ModuleType(parent)
        package.__path__ = []
        sys.modules[parent] = package
    try:
        spec = importlib.util.spec_from_file_location(
            module_name, init, submodule_search_locations=[str(folder)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # an extension's import error is the user's to see, not a crash
        sys.modules.pop(module_name, None)
        return Found(name, source, str(folder), None, f"import failed: {_first_line(exc)}")
    return Found(name, source, str(folder), module)


def _folder_extensions(folder: Path, source: Source) -> list[Found]:
    found: list[Found] = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith((".", "_")):
            continue
        try:
            validate_name(path.name, what="extension name")
        except InvalidNameError as exc:
            found.append(Found(path.name, source, str(path), None, str(exc)))
            continue
        if not _IDENTIFIER.fullmatch(path.name):
            error = f"The folder name {path.name!r} must be a Python identifier (letters, digits, _)."
            found.append(Found(path.name, source, str(path), None, error))
            continue
        found.append(_import_folder(path.name, path, source))
    return found


def _entry_point_extensions() -> list[Found]:
    found: list[Found] = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:
            found.append(
                Found(entry.name, "package", entry.value, None, f"import failed: {_first_line(exc)}")
            )
            continue
        if not isinstance(loaded, ModuleType):
            error = f"The entry point {entry.value} must name a module (with @hookimpl functions)."
            found.append(Found(entry.name, "package", entry.value, None, error))
            continue
        found.append(Found(entry.name, "package", entry.value, loaded))
    return found


def discover(bundled: Path | None, user: Path | None) -> list[Found]:
    """Every extension, by name; a user folder overrides a bundled one of the same name, and both override
    an installed package's."""
    by_name: dict[str, Found] = {}
    for found in _entry_point_extensions():
        by_name.setdefault(found.name, found)
    for folder, source in ((bundled, "bundled"), (user, "user")):
        if folder is not None:
            for found in _folder_extensions(folder, source):  # type: ignore[arg-type]
                by_name[found.name] = found
    return [by_name[name] for name in sorted(by_name)]
