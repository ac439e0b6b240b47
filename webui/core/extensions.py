"""The plugin manager: which extensions exist, which are enabled, their settings, and running their hooks.

The hook specifications, their order and their arguments are documented in webui.core.extension_hooks;
discovery (bundled, user and installed extensions) in webui.core.extension_discovery. One ExtensionManager
belongs to the Service; nothing here is module-level state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pluggy
from pydantic import BaseModel, ValidationError

from webui.core.extension_discovery import Found, Source, discover
from webui.core.extension_hooks import (
    HOOK_NAMES,
    LIVE_HOOKS,
    PROJECT_NAME,
    RESTART_HOOKS,
    ExtensionState,
    HookSpecs,
    hookimpl,
    hookspec,
)
from webui.core.params import describe_validation_error

__all__ = ["ExtensionError", "ExtensionInfo", "ExtensionManager", "hookimpl", "hookspec"]
LOG = logging.getLogger("palabre.extensions")
T = TypeVar("T")


class ExtensionError(ValueError):
    """An extension that cannot be enabled or configured as asked (the message is for the user)."""


@dataclass(frozen=True)
class ExtensionInfo:
    """One extension as the page and ``webui extensions list`` show it."""

    name: str
    description: str
    source: Source
    location: str
    enabled: bool
    hooks: tuple[str, ...]  # short names: "modify_history", "ui", ...
    error: str | None = None
    settings_model: type[BaseModel] | None = None

    @property
    def needs_restart(self) -> bool:
        """Whether some of its hooks (ui, routes, css, js) only change when the server restarts."""
        return any(f"palabre_{hook}" in RESTART_HOOKS for hook in self.hooks)


@dataclass
class _Loaded:
    found: Found
    description: str
    hooks: tuple[str, ...] = ()
    settings_model: type[BaseModel] | None = None
    settings: BaseModel | None = None
    state: ExtensionState = field(default_factory=ExtensionState)
    error: str | None = None


def _description(module: ModuleType | None) -> str:
    doc = (module.__doc__ or "").strip() if module is not None else ""
    return doc.splitlines()[0].strip() if doc else ""


class ExtensionManager:
    """Discovers extensions once, keeps the enabled ones in order, and runs their hooks with isolation."""

    def __init__(
        self,
        bundled_dir: Path | None = None,
        user_dir: Path | None = None,
        *,
        user_data_dir: Path | None = None,
        found: Iterable[Found] | None = None,
    ) -> None:
        self.user_data_dir = user_data_dir
        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(HookSpecs)
        self._lock = threading.RLock()
        self._enabled: tuple[str, ...] = ()
        self._extensions: dict[str, _Loaded] = {}
        for item in found if found is not None else discover(bundled_dir, user_dir):
            self._extensions[item.name] = self._register(item)

    # -- discovery ------------------------------------------------------------------------------------------

    def _register(self, found: Found) -> _Loaded:
        loaded = _Loaded(found, _description(found.module), error=found.error)
        if found.module is None:
            return loaded
        try:
            self._pm.register(found.module, name=found.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            loaded.error = f"invalid hooks: {exc}"
            return loaded
        unknown = [
            name
            for name, caller in vars(self._pm.hook).items()
            if isinstance(caller, pluggy.HookCaller)
            and not caller.has_spec()
            and any(impl.plugin_name == found.name for impl in caller.get_hookimpls())
        ]
        if unknown:
            self._pm.unregister(name=found.name)
            loaded.error = (
                f"unknown hook(s): {', '.join(sorted(unknown))} (see webui/core/extension_hooks.py)"
            )
            return loaded
        loaded.hooks = tuple(
            name.removeprefix("palabre_") for name in HOOK_NAMES if self._impls(name, (found.name,))
        )
        for impl in self._impls("palabre_settings_model", (found.name,)):
            try:
                model = impl.function()
                if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise TypeError("palabre_settings_model must return a pydantic BaseModel class")
                loaded.settings_model = model
                loaded.settings = model() if model is not None else None
            except Exception as exc:
                self._pm.unregister(name=found.name)
                loaded.error = f"settings: {type(exc).__name__}: {exc}"
                loaded.hooks = ()
        return loaded

    def _impls(self, hook: str, names: Sequence[str]) -> list[Any]:
        """The implementations of ``hook`` by the extensions ``names``, in the documented order."""
        caller = getattr(self._pm.hook, hook, None)
        if caller is None:
            return []
        position = {name: index for index, name in enumerate(names)}
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin_name in position]
        return sorted(
            impls,
            key=lambda impl: (0 if impl.tryfirst else 2 if impl.trylast else 1, position[impl.plugin_name]),
        )

    def names(self) -> list[str]:
        return sorted(self._extensions)

    def info(self) -> list[ExtensionInfo]:
        """Every extension found, with its state (broken ones carry their error)."""
        enabled = self.enabled
        return [
            ExtensionInfo(
                name=name,
                description=loaded.description,
                source=loaded.found.source,
                location=loaded.found.location,
                enabled=name in enabled,
                hooks=loaded.hooks,
                error=loaded.error,
                settings_model=loaded.settings_model,
            )
            for name, loaded in sorted(self._extensions.items())
        ]

    # -- enabling ---------------------------------------------------------------------------------------------

    @property
    def enabled(self) -> tuple[str, ...]:
        """The enabled extensions, in hook order."""
        return self._enabled

    def set_enabled(self, names: Sequence[str]) -> list[str]:
        """Enable exactly ``names`` (in this order); the others are disabled. Returns the problems found:
        unknown or broken extensions are left out and reported, never raised."""
        problems: list[str] = []
        wanted: list[str] = []
        for name in dict.fromkeys(names):
            loaded = self._extensions.get(name)
            if loaded is None:
                known = ", ".join(self.names()) or "none"
                problems.append(f'There is no extension "{name}" (found: {known}).')
            elif loaded.error is not None:
                problems.append(f'The extension "{name}" cannot be enabled: {loaded.error}')
            else:
                wanted.append(name)
        with self._lock:
            before = self._enabled
            for name in before:
                if name not in wanted:
                    self._call_one(name, "palabre_teardown", problems)
            self._enabled = tuple(wanted)
            for name in wanted:
                if name not in before:
                    self._call_one(name, "palabre_setup", problems, user_data_dir=self.user_data_dir)
        return problems

    def close(self) -> None:
        """Tear down every enabled extension (the server stops)."""
        self.set_enabled([])

    # -- settings --------------------------------------------------------------------------------------------

    def settings(self, name: str) -> BaseModel | None:
        loaded = self._extensions.get(name)
        return loaded.settings if loaded is not None else None

    def update_settings(self, name: str, values: Mapping[str, Any]) -> BaseModel:
        """Validate and apply ``values`` to ``name``'s settings (the others keep theirs). ExtensionError if
        invalid."""
        loaded = self._extensions.get(name)
        if loaded is None or loaded.settings_model is None:
            raise ExtensionError(f'The extension "{name}" has no settings.')
        current = loaded.settings.model_dump() if loaded.settings is not None else {}
        unknown = sorted(set(values) - set(loaded.settings_model.model_fields))
        if unknown:
            raise ExtensionError(f'Unknown settings for "{name}": {", ".join(unknown)}.')
        try:
            new = loaded.settings_model.model_validate({**current, **values})
        except ValidationError as exc:
            raise ExtensionError(f'Invalid settings for "{name}": {describe_validation_error(exc)}') from exc
        loaded.settings = new
        return new

    def load_settings(self, saved: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Apply saved settings (from settings.yaml); what cannot be used is reported and left at defaults."""
        problems = []
        for name, values in saved.items():
            if name not in self._extensions or self._extensions[name].settings_model is None:
                continue  # an extension removed since: its saved settings wait in the file, unused
            try:
                self.update_settings(name, dict(values))
            except ExtensionError as exc:
                problems.append(f"{exc} The defaults are used.")
        return problems

    # -- running hooks ----------------------------------------------------------------------------------------

    def _report(self, name: str, hook: str, exc: BaseException, warnings: list[str]) -> None:
        message = (
            f'Extension "{name}" failed in {hook.removeprefix("palabre_")}: {type(exc).__name__}: {exc} '
            "(its effect was skipped)."
        )
        LOG.warning(message, exc_info=exc)
        warnings.append(message)

    def _call_one(self, name: str, hook: str, warnings: list[str], **kwargs: Any) -> None:
        for impl in self._impls(hook, (name,)):
            try:
                self._invoke(impl, kwargs)
            except Exception as exc:
                self._report(name, hook, exc, warnings)

    def _invoke(self, impl: Any, kwargs: Mapping[str, Any]) -> Any:
        loaded = self._extensions[impl.plugin_name]
        available = {"settings": loaded.settings, "state": loaded.state, **kwargs}
        return impl.function(*[available[arg] for arg in impl.argnames])

    def has(self, hook: str) -> bool:
        """Whether an enabled extension implements ``hook``."""
        return bool(self._impls(hook, self.enabled))

    def pipe(
        self,
        hook: str,
        value: T,
        warnings: list[str],
        check: Callable[[Any], bool] | None = None,
        **kwargs: Any,
    ) -> T:
        """Pass ``value`` through every enabled extension's ``hook`` in order (see extension_hooks).

        ``value`` is given under the hook's first argument name; ``check`` refuses a result of the wrong type.
        """
        assert hook in LIVE_HOOKS, hook
        argument = _FIRST_ARGUMENT[hook]
        for impl in self._impls(hook, self.enabled):
            try:
                result = self._invoke(impl, {argument: value, **kwargs})
                if result is None:
                    continue
                if check is not None and not check(result):
                    raise TypeError(f"it returned {type(result).__name__}, not the {argument} it was given")
                value = result
            except Exception as exc:
                self._report(impl.plugin_name, hook, exc, warnings)
        return value

    def collect(self, hook: str, names: Sequence[str], warnings: list[str], **kwargs: Any) -> dict[str, Any]:
        """Call a start-up hook (ui, routes, css, js) of each of ``names``: their results by name."""
        assert hook in RESTART_HOOKS, hook
        results: dict[str, Any] = {}
        for name in names:
            for impl in self._impls(hook, (name,)):
                try:
                    results[name] = self._invoke(impl, kwargs)
                except Exception as exc:
                    self._report(name, hook, exc, warnings)
        return results


_FIRST_ARGUMENT = {
    "palabre_modify_input": "text",
    "palabre_modify_history": "messages",
    "palabre_modify_params": "params",
    "palabre_modify_prompt": "prompt",
    "palabre_modify_chunk": "text",
    "palabre_modify_reply": "text",
    "palabre_modify_completion_params": "params",
    "palabre_modify_completion_prompt": "prompt",
}
