"""Parameters tab: one widget per GenerationParams field (generated from field_specs()), presets, the
instruction template choice and its editor.

The "Thinking" fields (enable_thinking, reasoning_effort, thinking_budget) are drawn where the Chat tab asks
(``build_thinking``, beside the message box) and only for a model whose template reads them; they are sampler
fields like the others, so presets and personalities set them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from webui.core.params import FieldSpec, GenerationParams, field_specs
from webui.core.paths import InvalidNameError
from webui.core.presets import DEFAULT_PRESET, PresetError
from webui.core.service import ChatSettings, Service, TemplateAbilities
from webui.core.settings import SessionSettings
from webui.core.templates.store import TemplateError
from webui.ui.convert import (
    DETECTED_TEMPLATE,
    InputError,
    not_used_label,
    params_from_values,
    widget_value,
    widget_values,
)
from webui.ui.template_editor import TemplateEditor

_MAX_SLIDER_STEPS = 100_000
# The widgets a sampler field is drawn as (a union, not Component: the events such as .change are theirs).
ParamWidget = gr.Slider | gr.Number | gr.Checkbox | gr.Textbox | gr.Dropdown
THINKING_GROUP = "Thinking"  # the fields drawn beside the chat, shown only for a thinking model
EFFORT_DEFAULT = "(model default)"  # the effort dropdown's label for "" (the template's own default)
_EXTRA_INFO = {
    "list": " A JSON list, or one item per line.",
    "mapping": ' A JSON object, e.g. {"50256": -100}.',
}


def _is_slider(spec: FieldSpec) -> bool:
    if spec.minimum is None or spec.maximum is None or spec.step is None:
        return False
    if spec.kind == "int" and spec.step != 1:
        return False  # a slider only reaches min + n*step: keep coarse-step integers exact in a number box
    return (spec.maximum - spec.minimum) / spec.step <= _MAX_SLIDER_STEPS


def param_widget(spec: FieldSpec, value: Any) -> ParamWidget:
    """The widget for one sampler field, drawn from its schema entry (bounds, step, description)."""
    info = spec.description + _EXTRA_INFO.get(spec.kind, "")
    common: dict[str, Any] = {"label": spec.name, "info": info, "elem_id": f"param-{spec.name}"}
    if spec.kind in ("float", "int"):
        if _is_slider(spec):
            assert spec.minimum is not None and spec.maximum is not None
            return gr.Slider(
                minimum=spec.minimum,
                maximum=spec.maximum,
                step=spec.step,
                value=value,
                precision=0 if spec.kind == "int" else None,
                **common,
            )
        return gr.Number(
            value=value, precision=0 if spec.kind == "int" else None, step=spec.step or 1, **common
        )
    if spec.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.kind == "text":
        return gr.Textbox(value=value, lines=4, max_lines=20, **common)
    return gr.Textbox(value=widget_value(spec, value), lines=1, max_lines=8, **common)


def thinking_widget(spec: FieldSpec, value: Any, abilities: TemplateAbilities) -> ParamWidget:
    """The Chat tab's widget for a Thinking field: the Think switch, the effort level, the budget; each shown
    only when the loaded model's template takes it (see ``thinking_updates``)."""
    shown = thinking_updates(abilities)[spec.name]
    common: dict[str, Any] = {"info": spec.description, "elem_id": f"param-{spec.name}", "scale": 1}
    if spec.name == "enable_thinking":
        return gr.Checkbox(value=value, label="Think", **shown, **common)
    if spec.name == "reasoning_effort":
        return gr.Dropdown(value=value, label="Reasoning effort", allow_custom_value=True, **shown, **common)
    if spec.name == "thinking_budget":
        limits: dict[str, Any] = {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step or 1}
        return gr.Number(
            value=value, precision=0, label="Thinking budget (tokens)", **limits, **shown, **common
        )
    return param_widget(spec, value)


def thinking_updates(abilities: TemplateAbilities) -> dict[str, dict[str, Any]]:
    """Which Thinking widgets the template shows (field name -> visible, and the effort's choices): Think
    when it has a switch, the effort when it takes levels, the budget for any thinking model."""
    controls = abilities.thinking
    levels = [(EFFORT_DEFAULT, ""), *((level, level) for level in controls.levels)]
    return {
        "enable_thinking": {"visible": controls.switch is not None},
        "reasoning_effort": {"visible": controls.effort is not None, "choices": levels},
        "thinking_budget": {"visible": abilities.thinks},
    }


def _group_order(specs: Sequence[FieldSpec]) -> dict[str, list[FieldSpec]]:
    groups: dict[str, list[FieldSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.group, []).append(spec)
    return groups


class ParametersTab:
    """The Parameters tab's widgets; other tabs read ``components`` as inputs and call ``read``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.specs: list[FieldSpec] = field_specs()
        self.components: list[ParamWidget] = []
        self.thinking: dict[str, ParamWidget] = {}  # the Thinking fields' widgets, once drawn
        self.editor = TemplateEditor(service)

    # -- pure handlers (no widgets needed) -------------------------------------------------------------

    def read(self, values: Sequence[Any]) -> GenerationParams:
        """The widget values (``components`` order) as GenerationParams; InputError if invalid."""
        return params_from_values(self.specs, values)

    def template_choices(self) -> list[str]:
        return [DETECTED_TEMPLATE, *self.service.templates.names()]

    def labels(self, template: str | None = None) -> list[dict[str, Any]]:
        """Label updates marking the fields the loaded model's loader does not use; for the Thinking fields
        (read by the template and the engine, whatever the loader), whether the template ``template`` shows
        them."""
        state = self.service.loaded
        loader = state.loader if state else None
        honoured = state.capabilities.honoured_params if state else None
        thinking = thinking_updates(self.abilities(template))
        return [
            gr.update(**thinking[spec.name])
            if spec.name in thinking
            else gr.update(label=not_used_label(spec.name, loader, honoured))
            for spec in self.specs
        ]

    def abilities(self, template: str | None = None) -> TemplateAbilities:
        """What the template chosen in the dropdown (the detected one by default) lets the loaded model do."""
        name = None if not template or template == DETECTED_TEMPLATE else template
        try:
            return self.service.abilities(ChatSettings(template=name))
        except TemplateError:
            return self.service.abilities()

    def show_thinking(self, template: str | None) -> list[dict[str, Any]]:
        """The Thinking widgets' updates (``thinking_outputs`` order) for the chosen template: after a model
        load or a template choice."""
        shown = thinking_updates(self.abilities(template))
        return [gr.update(**shown[name]) for name in self.thinking]

    @property
    def thinking_outputs(self) -> list[ParamWidget]:
        return list(self.thinking.values())

    def apply_preset(self, name: str) -> list[Any]:
        """Fill every widget from preset ``name`` (+ a status line)."""
        try:
            preset = self.service.presets.load(name)
        except PresetError as exc:
            gr.Warning(str(exc))
            return [gr.skip() for _ in self.specs] + [f"⚠️ {exc}"]
        note = f"Preset **{preset.name}** applied."
        if preset.ignored_keys:
            note += f" Keys Palabre does not know were ignored: {', '.join(preset.ignored_keys)}."
        return [*widget_values(self.specs, preset.params), note]

    def save_preset(self, name: str, *values: Any) -> tuple[Any, str]:
        """Save the current widgets as a user preset called ``name``."""
        name = (name or "").strip()
        try:
            params = self.read(values)
            if not name:
                raise InputError("Type a name for the preset first.")
            self.service.presets.save(name, params)
        except (InputError, PresetError, InvalidNameError, OSError) as exc:
            gr.Warning(str(exc))
            return gr.skip(), f"⚠️ {exc}"
        return gr.update(choices=self.service.presets.names(), value=name), f"Preset **{name}** saved."

    def delete_preset(self, name: str) -> tuple[Any, str]:
        """Delete the chosen user preset (bundled presets stay)."""
        try:
            self.service.presets.delete(name)
        except (PresetError, OSError) as exc:
            gr.Warning(str(exc))
            return gr.skip(), f"⚠️ {exc}"
        return gr.update(
            choices=self.service.presets.names(), value=DEFAULT_PRESET
        ), f"Preset **{name}** deleted."

    def delete_and_reset(self, name: str) -> list[Any]:
        """Delete: [dropdown, *widgets, status]. After a deletion the widgets show the Default preset the
        dropdown now names, not the deleted preset's values."""
        dropdown, status = self.delete_preset(name)
        if not (isinstance(dropdown, dict) and "value" in dropdown):
            return [dropdown, *(gr.skip() for _ in self.specs), status]
        return [dropdown, *self.apply_preset(DEFAULT_PRESET)[:-1], status]

    def refresh(self, saved: SessionSettings | None = None, chosen: str | None = None) -> list[Any]:
        """Preset and template choices, the not-used marks and the Thinking widgets the template shows (page
        load, after a model load; ``chosen``: the template the dropdown names).

        With ``saved`` settings (page load), the saved preset fills the widgets and the saved template is chosen.
        """
        names = self.service.presets.names()
        preset: dict[str, Any] = gr.update(choices=names)
        template: dict[str, Any] = gr.update(choices=self.template_choices())
        chosen = saved.template if saved is not None else chosen
        labels = self.labels(chosen if chosen in template["choices"] else None)
        if saved is None:
            return [preset, template, *labels]
        if saved.preset in names:
            try:
                params = self.service.presets.load(saved.preset).params
            except PresetError:
                pass
            else:
                preset["value"] = saved.preset
                for label, value in zip(labels, widget_values(self.specs, params), strict=True):
                    label["value"] = value
        template["value"] = saved.template if saved.template in template["choices"] else DETECTED_TEMPLATE
        return [preset, template, *labels]

    # -- layout ----------------------------------------------------------------------------------------

    def _initial(self) -> GenerationParams:
        try:
            return self.service.presets.load(DEFAULT_PRESET).params
        except PresetError:
            return GenerationParams()

    def build_thinking(self) -> None:
        """Draw the Thinking fields' widgets here (the Chat tab calls this beside its message box), before
        ``build``; without it, ``build`` draws them in a section of the Parameters tab."""
        initial = self._initial()
        abilities = self.abilities()
        for spec in self.specs:
            if spec.group == THINKING_GROUP:
                self.thinking[spec.name] = thinking_widget(spec, getattr(initial, spec.name), abilities)

    def build(self) -> None:
        """Draw the tab (inside a ``gr.Tab``) and wire its own events."""
        initial = self._initial()
        with gr.Row():
            self.preset = gr.Dropdown(
                choices=self.service.presets.names(),
                value=DEFAULT_PRESET,
                label="Preset",
                info="Fills the widgets below.",
                elem_id="preset-dropdown",
                scale=2,
            )
            self.preset_name = gr.Textbox(label="Preset name", placeholder="My preset", scale=2)
            save = gr.Button("Save preset", elem_id="save-preset", scale=1)
            delete = gr.Button("Delete preset", variant="stop", elem_id="delete-preset", scale=1)
        self.template = gr.Dropdown(
            choices=self.template_choices(),
            value=DETECTED_TEMPLATE,
            label="Instruction template",
            info=f"{DETECTED_TEMPLATE} = the template found for the loaded model (see the Model tab).",
            elem_id="template-dropdown",
        )
        self.status = gr.Markdown(elem_id="params-status")
        self.editor.build()

        drawn = dict(self.thinking)  # drawn beside the chat already: one widget per field
        groups = _group_order([spec for spec in self.specs if spec.name not in drawn])
        total = sum(len(specs) for specs in groups.values())
        by_name: dict[str, ParamWidget] = dict(drawn)
        with gr.Row():
            column_items = 0
            columns = [gr.Column(), gr.Column()]
            for group, specs in groups.items():
                column = columns[0] if column_items < total / 2 else columns[1]
                column_items += len(specs)
                with column, gr.Accordion(group, open=group in ("Length", "Sampling")):
                    if group == THINKING_GROUP:
                        self.build_thinking()
                        by_name.update(self.thinking)
                        continue
                    for spec in specs:
                        by_name[spec.name] = param_widget(spec, getattr(initial, spec.name))
        self.components = [by_name[spec.name] for spec in self.specs]

        self.preset_event = self.preset.input(
            self.apply_preset,
            inputs=[self.preset],
            outputs=[*self.components, self.status],
            show_progress="hidden",
        )
        save_event = save.click(
            self.save_preset, inputs=[self.preset_name, *self.components], outputs=[self.preset, self.status]
        )
        delete_event = delete.click(
            self.delete_and_reset, inputs=[self.preset], outputs=[self.preset, *self.components, self.status]
        )
        # Every event that changes the chosen preset (the page remembers it for the next visit).
        self.preset_events = [self.preset_event, save_event, delete_event]
        self.template.change(
            self.show_thinking,
            inputs=[self.template],
            outputs=self.thinking_outputs,
            show_progress="hidden",
        )

    def after_load(self, chosen: str | None) -> list[Any]:
        """``refresh`` after a model was loaded or unloaded (wired with the template dropdown as input)."""
        return self.refresh(chosen=chosen)

    @property
    def refresh_outputs(self) -> list[gr.components.Component]:
        return [self.preset, self.template, *self.components]
