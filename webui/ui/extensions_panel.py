"""The Extensions panel (on the Session tab): enable or disable extensions and edit their settings.

Enabling and disabling take effect on the next message; the ``ui``, ``routes``, ``css`` and ``js`` hooks of an
extension are installed when the server starts, so for those a restart is needed (the panel says so). The
enabled list and every extension's settings are saved in ``user_data/settings.yaml``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import gradio as gr
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from webui.core.extensions.manager import ExtensionError, ExtensionInfo, ExtensionManager
from webui.core.settings import SettingsFile


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) in (list, tuple)


def _literal_choices(annotation: Any) -> list[Any] | None:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return None


def _base(annotation: Any) -> Any:
    """``X`` for ``X | None``."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def field_widget(name: str, info: FieldInfo, value: Any, elem_id: str) -> Any:
    """A widget for one settings field, derived from its type (bool, int, float, Literal, list, text)."""
    annotation = _base(info.annotation)
    label = name.replace("_", " ").capitalize()
    help_text = info.description
    choices = _literal_choices(annotation)
    if annotation is bool:
        return gr.Checkbox(value=bool(value), label=label, info=help_text, elem_id=elem_id)
    if choices is not None:
        return gr.Dropdown(choices, value=value, label=label, info=help_text, elem_id=elem_id)
    if annotation is int:
        return gr.Number(value=value, precision=0, label=label, info=help_text, elem_id=elem_id)
    if annotation is float:
        return gr.Number(value=value, label=label, info=help_text, elem_id=elem_id)
    if _is_list(annotation):
        shown = ", ".join(str(item) for item in value or [])
        return gr.Textbox(
            value=shown, label=label, info=f"{help_text or ''} (comma-separated)", elem_id=elem_id
        )
    lines = 3 if isinstance(value, str) and (len(value) > 60 or "\n" in value) else 1
    return gr.Textbox(value=value, label=label, info=help_text, lines=lines, elem_id=elem_id)


def values_to_settings(model: type[BaseModel], values: list[Any]) -> dict[str, Any]:
    """Widget values (in field order) as the settings mapping to validate (lists from comma-separated text)."""
    result: dict[str, Any] = {}
    for (name, info), value in zip(model.model_fields.items(), values, strict=True):
        if _is_list(_base(info.annotation)) and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if _base(info.annotation) is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        result[name] = value
    return result


def describe(info: ExtensionInfo) -> str:
    """One line for the panel's list."""
    text = f"**{info.name}** ({info.source}): {info.description or 'no description'}"
    if info.error is not None:
        return f"{text}  \n⚠️ cannot be used: {info.error}"
    notes = [f"hooks: {', '.join(info.hooks) or 'none'}"]
    if info.needs_restart:
        notes.append("its tab, routes, CSS or JS change only when the server restarts")
    return f"{text}  \n<small>{'; '.join(notes)}</small>"


class ExtensionsPanel:
    """Draws the panel and handles enabling and the settings forms."""

    def __init__(self, manager: ExtensionManager, settings: SettingsFile) -> None:
        self.manager = manager
        self.settings = settings
        self.at_start = manager.enabled  # the extensions whose ui/routes/css/js hooks were installed

    # -- handlers ----------------------------------------------------------------------------------------

    def usable(self) -> list[str]:
        return [info.name for info in self.manager.info() if info.error is None]

    def enable(self, chosen: list[str] | None) -> tuple[Any, str]:
        """Enable exactly ``chosen`` (kept in the order they were enabled, new ones last) and save it."""
        chosen = list(chosen or [])
        order = [name for name in self.manager.enabled if name in chosen]
        order += [name for name in chosen if name not in order]
        problems = self.manager.set_enabled(order)
        for problem in problems:
            gr.Warning(problem)
        enabled = list(self.manager.enabled)
        try:
            self.settings.update(extensions=enabled)
        except (OSError, ValueError) as exc:
            gr.Warning(f"The settings could not be saved: {exc}")
        return gr.update(value=enabled), self.status(problems)

    def status(self, problems: list[str] | None = None) -> str:
        enabled = ", ".join(self.manager.enabled) or "none"
        lines = [f"Enabled, in hook order: {enabled}."]
        later = [
            name for name in self.manager.enabled if name not in self.at_start and self._needs_restart(name)
        ]
        if later:
            lines.append(f"Restart the server to show the tabs, routes, CSS or JS of: {', '.join(later)}.")
        lines += [f"⚠️ {problem}" for problem in problems or []]
        return "\n\n".join(lines)

    def _needs_restart(self, name: str) -> bool:
        return any(info.name == name and info.needs_restart for info in self.manager.info())

    def save_settings(self, name: str, *values: Any) -> str:
        """Validate and apply one extension's settings form, then save it; a warning if invalid."""
        model = next(info.settings_model for info in self.manager.info() if info.name == name)
        assert model is not None
        try:
            updated = self.manager.update_settings(name, values_to_settings(model, list(values)))
            saved = dict(self.settings.load().extension_settings)
            saved[name] = updated.model_dump(mode="json")
            self.settings.update(extension_settings=saved)
        except (ExtensionError, OSError, ValueError) as exc:
            gr.Warning(str(exc))
            return f"⚠️ {exc}"
        return f"Settings of {name} saved."

    def refresh(self) -> tuple[Any, str]:
        """The enabled list as it is now (another page may have changed it)."""
        return gr.update(choices=self.usable(), value=list(self.manager.enabled)), self.status()

    # -- layout ------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Draw the panel (inside the Session tab)."""
        infos = self.manager.info()
        with gr.Accordion("Extensions", open=True, elem_id="extensions-panel"):
            gr.Markdown(
                "Extensions change how prompts and replies are made. Enabling or disabling one applies to "
                "the next message; an extension's own tab, routes, CSS or JS need a server restart. See "
                "`extensions/README.md` to write your own."
            )
            self.enabled = gr.CheckboxGroup(
                [info.name for info in infos if info.error is None],
                value=list(self.manager.enabled),
                label="Enabled extensions",
                elem_id="extensions-enabled",
            )
            gr.Markdown("\n\n".join(describe(info) for info in infos) or "No extensions found.")
            self.status_md = gr.Markdown(self.status(), elem_id="extensions-status")
            self.enabled.input(
                self.enable,
                inputs=[self.enabled],
                outputs=[self.enabled, self.status_md],
                show_progress="hidden",
            )
            for info in infos:
                if info.settings_model is not None and info.error is None:
                    self._settings_form(info.name, info.settings_model)

    def _settings_form(self, name: str, model: type[BaseModel]) -> None:
        current = self.manager.settings(name)
        values = current.model_dump() if current is not None else {}
        with gr.Accordion(f"{name} settings", open=False, elem_id=f"extension-{name}-settings"):
            widgets = [
                field_widget(field, info, values.get(field), f"extension-{name}-{field}")
                for field, info in model.model_fields.items()
            ]
            save = gr.Button(f"Save {name} settings", elem_id=f"extension-{name}-save")
            status = gr.Markdown(elem_id=f"extension-{name}-status")

        def handler(*widget_values: Any) -> str:
            return self.save_settings(name, *widget_values)

        save.click(handler, inputs=widgets, outputs=[status], show_progress="hidden")


def build_extension_tabs(manager: ExtensionManager, problems: list[str]) -> None:
    """One tab per enabled extension with a ``palabre_ui`` hook (inside the page's ``gr.Tabs``)."""
    for name in manager.enabled:
        if "ui" not in next((info.hooks for info in manager.info() if info.name == name), ()):
            continue
        with gr.Tab(name.replace("_", " ").capitalize(), elem_id=f"tab-extension-{name}"):
            manager.draw_ui(name, gr, problems)


def extension_assets(manager: ExtensionManager) -> tuple[str, str]:
    """The enabled extensions' CSS (joined) and JS (one function calling each), for the page."""
    problems: list[str] = []
    css = "\n".join(manager.css(problems))
    scripts = manager.js(problems)
    js = (
        "() => {\n"
        + "\n".join(f"  try {{ ({script})(); }} catch (e) {{ console.error(e); }}" for script in scripts)
        + "\n}"
    )
    return css, js if scripts else ""
