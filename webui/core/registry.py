"""Loaders found through the ``palabre.loaders`` entry-point group, imported only when first used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from webui.core.loader import Claim, Loader, LoaderError

if TYPE_CHECKING:
    from webui.core.models.discovery import ModelEntry

ENTRY_POINT_GROUP = "palabre.loaders"

AnyLoader = type[Loader[Any]]


class LoaderRegistry:
    """Maps loader names to import strings ("package.module:Class") and resolves them lazily."""

    def __init__(self, targets: Mapping[str, str | AnyLoader]) -> None:
        self._targets = dict(targets)
        self._resolved: dict[str, AnyLoader] = {}

    @classmethod
    def from_entry_points(cls) -> LoaderRegistry:
        """Every loader installed packages declare, built-in ones included (they use the same group)."""
        return cls({ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})

    def names(self) -> list[str]:
        return sorted(self._targets)

    def get(self, name: str) -> AnyLoader:
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

    def claimant(self, entry: ModelEntry) -> str | None:
        """The loader that claims ``entry``'s files most strongly (ties: the first name), or None.

        A loader that cannot be imported claims nothing; ModelFileError when the files cannot be read.
        """
        best, best_claim = None, int(Claim.NONE)
        for name in self.names():
            try:
                loader = self.get(name)
            except LoaderError:
                continue  # a broken package must not hide the models the other loaders open
            claim = int(loader.claims(entry))
            if claim > best_claim:
                best, best_claim = name, claim
        return best
