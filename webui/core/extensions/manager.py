"""The plugin manager: which extensions exist, which are enabled, their settings, and running their hooks.

The hook specifications, their order and their arguments are documented in webui.core.extensions.hooks;
discovery (bundled, user and installed extensions) in webui.core.extensions.discovery; what extension authors
import in webui.core.extensions.api. The core calls each hook through a typed method here (``modify_input``,
``modify_chunk``, ``add_routes``, ...), never by its name. One ExtensionManager belongs to the Service; nothing
here is module-level state.
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

from webui.core.extensions.discovery import Found, Source, discover
from webui.core.extensions.hooks import (
    HOOK_NAMES,
    HOOK_PREFIX,
    PIPED_ARGUMENT,
    PROJECT_NAME,
    RESTART_HOOKS,
    ChatContext,
    ExtensionState,
    GenerationKind,
    HookSpecs,
    hookimpl,
    hookspec,
    short_name,
)
from webui.core.params import GenerationParams, describe_validation_error
from webui.core.prompts import ChatMessage

__all__ = ["ExtensionError", "ExtensionInfo", "ExtensionManager", "hookimpl", "hookspec"]
LOG = logging.getLogger("palabre.extensions")
T = TypeVar("T")
_Spec = Callable[..., Any]  # a hook specification: a method of HookSpecs, named after its hook


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
        return any(HOOK_PREFIX + hook in RESTART_HOOKS for hook in self.hooks)


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
                f"unknown hook(s): {', '.join(sorted(unknown))} (see webui/core/extensions/hooks.py)"
            )
            return loaded
        loaded.hooks = tuple(short_name(name) for name in HOOK_NAMES if self._impls(name, (found.name,)))
        spec = HookSpecs.palabre_settings_model
        for impl in self._impls(spec.__name__, (found.name,)):
            try:
                model = impl.function()
                if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise TypeError(f"{spec.__name__} must return a pydantic BaseModel class")
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
                    self._call_one(name, HookSpecs.palabre_teardown, problems)
            self._enabled = tuple(wanted)
            for name in wanted:
                if name not in before:
                    self._call_one(name, HookSpecs.palabre_setup, problems, user_data_dir=self.user_data_dir)
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
            f'Extension "{name}" failed in {short_name(hook)}: {type(exc).__name__}: {exc} '
            "(its effect was skipped)."
        )
        LOG.warning(message, exc_info=exc)
        warnings.append(message)

    def _call_one(self, name: str, spec: _Spec, warnings: list[str], **kwargs: Any) -> None:
        for impl in self._impls(spec.__name__, (name,)):
            try:
                self._invoke(impl, kwargs)
            except Exception as exc:
                self._report(name, spec.__name__, exc, warnings)

    def _invoke(self, impl: Any, kwargs: Mapping[str, Any]) -> Any:
        loaded = self._extensions[impl.plugin_name]
        available = {"settings": loaded.settings, "state": loaded.state, **kwargs}
        return impl.function(*[available[arg] for arg in impl.argnames])

    def _has(self, spec: _Spec) -> bool:
        return bool(self._impls(spec.__name__, self.enabled))

    def _pipe(
        self, spec: _Spec, value: T, warnings: list[str], check: Callable[[Any], bool], **kwargs: Any
    ) -> T:
        """Pass ``value`` through every enabled extension's hook ``spec`` in order (see extension_hooks).

        ``value`` is given under the hook's first argument name; ``check`` refuses a result of the wrong type.
        """
        hook = spec.__name__
        argument = PIPED_ARGUMENT[hook]
        for impl in self._impls(hook, self.enabled):
            try:
                result = self._invoke(impl, {argument: value, **kwargs})
                if result is None:
                    continue
                if not check(result):
                    raise TypeError(f"it returned {type(result).__name__}, not the {argument} it was given")
                value = result
            except Exception as exc:
                self._report(impl.plugin_name, hook, exc, warnings)
        return value

    def _collect(
        self, spec: _Spec, names: Sequence[str], warnings: list[str], **kwargs: Any
    ) -> dict[str, Any]:
        """Call a start-up hook of each of ``names``: the results of those that implement it, by name."""
        results: dict[str, Any] = {}
        for name in names:
            for impl in self._impls(spec.__name__, (name,)):
                try:
                    results[name] = self._invoke(impl, kwargs)
                except Exception as exc:
                    self._report(name, spec.__name__, exc, warnings)
        return results

    # The typed hooks the core calls, in the order they run for a reply (see extension_hooks). Each pipeline
    # returns its value after every enabled extension (unchanged when none implements the hook); a failing
    # extension is reported in ``warnings`` and skipped.

    def modify_input(self, text: str, chat: ChatContext, warnings: list[str]) -> str:
        """The user's latest message, as the model will see it."""
        return self._pipe(HookSpecs.palabre_modify_input, text, warnings, _is_str, chat=chat)

    def modify_params(
        self, params: GenerationParams, chat: ChatContext, warnings: list[str]
    ) -> GenerationParams:
        """The sampler parameters of a chat reply."""
        return self._pipe(HookSpecs.palabre_modify_params, params, warnings, _is_params, chat=chat)

    def modify_history(
        self, messages: list[ChatMessage], chat: ChatContext, warnings: list[str]
    ) -> list[ChatMessage]:
        """The conversation before the prompt is built."""
        return self._pipe(HookSpecs.palabre_modify_history, messages, warnings, _is_history, chat=chat)

    def modify_prompt(self, prompt: str, chat: ChatContext, warnings: list[str]) -> str:
        """The rendered prompt text of a chat reply."""
        return self._pipe(HookSpecs.palabre_modify_prompt, prompt, warnings, _is_str, chat=chat)

    def modify_completion_params(
        self, params: GenerationParams, prompt: str, warnings: list[str]
    ) -> GenerationParams:
        """A raw completion's sampler parameters (``prompt``: its text as sent)."""
        return self._pipe(
            HookSpecs.palabre_modify_completion_params, params, warnings, _is_params, prompt=prompt
        )

    def modify_completion_prompt(self, prompt: str, params: GenerationParams, warnings: list[str]) -> str:
        """The text a raw completion continues (``params``: the final sampler parameters)."""
        return self._pipe(
            HookSpecs.palabre_modify_completion_prompt, prompt, warnings, _is_str, params=params
        )

    def changes_replies(self) -> bool:
        """Whether an enabled extension implements modify_chunk or modify_reply (else a stream is left as is)."""
        return self._has(HookSpecs.palabre_modify_chunk) or self._has(HookSpecs.palabre_modify_reply)

    def modify_chunk(self, text: str, kind: GenerationKind, warnings: list[str]) -> str:
        """One streamed piece of a reply or a raw completion."""
        return self._pipe(HookSpecs.palabre_modify_chunk, text, warnings, _is_str, kind=kind)

    def modify_reply(self, text: str, kind: GenerationKind, warnings: list[str]) -> str:
        """The whole reply (or a raw completion's continuation) once it ends."""
        return self._pipe(HookSpecs.palabre_modify_reply, text, warnings, _is_str, kind=kind)

    # The start-up hooks (installed when the server starts).

    def draw_ui(self, name: str, gr: Any, warnings: list[str]) -> None:
        """Draw ``name``'s own tab (inside the ``gr.Tab`` the page opened for it)."""
        self._collect(HookSpecs.palabre_ui, [name], warnings, gr=gr)

    def add_routes(self, name: str, router: Any, warnings: list[str]) -> bool:
        """Let ``name`` add its HTTP routes to ``router``; whether it has routes to mount (and did not fail)."""
        return name in self._collect(HookSpecs.palabre_routes, [name], warnings, router=router)

    def css(self, warnings: list[str]) -> list[str]:
        """The enabled extensions' CSS, in hook order (empty results left out)."""
        return [
            text for text in self._collect(HookSpecs.palabre_css, self.enabled, warnings).values() if text
        ]

    def js(self, warnings: list[str]) -> list[str]:
        """The enabled extensions' JavaScript functions, in hook order (empty results left out)."""
        return [text for text in self._collect(HookSpecs.palabre_js, self.enabled, warnings).values() if text]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_history(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(message, ChatMessage) for message in value)


def _is_params(value: Any) -> bool:
    return isinstance(value, GenerationParams)
