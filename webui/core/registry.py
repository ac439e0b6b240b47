"""Loaders found through the ``palabre.loaders`` entry-point group, imported only when first used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from webui.core.loader import Loader, LoaderError

ENTRY_POINT_GROUP = "palabre.loaders"


class LoaderRegistry:
    """Maps loader names to import strings ("package.module:Class") and resolves them lazily."""

    def __init__(self, targets: Mapping[str, str | type[Loader]]) -> None:
        self._targets = dict(targets)
        self._resolved: dict[str, type[Loader]] = {}

    @classmethod
    def from_entry_points(cls) -> LoaderRegistry:
        """Every loader installed packages declare, built-in ones included (they use the same group)."""
        return cls({ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})

    def names(self) -> list[str]:
        return sorted(self._targets)

    def get(self, name: str) -> type[Loader]:
        """The loader class called ``name``; a clear LoaderError if unknown or broken."""
        if name in self._resolved:
            return self._resolved[name]
        if name not in self._targets:
            known = ", ".join(self.names()) or "none"
            raise LoaderError(f"Unknown loader {name!r}. Available loaders: {known}.")
        target = self._targets[name]
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            try:
                loaded = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError) as exc:
                raise LoaderError(f"Loader {name!r} could not be imported ({target}): {exc}") from exc
        else:
            loaded = target
        self._resolved[name] = loaded
        return loaded
