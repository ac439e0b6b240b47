"""Instruction template editor (on the Parameters tab): pick a template, edit its Jinja text, see the current
chat rendered through it as you type, and save it under a name of your own."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core.paths import InvalidNameError
from webui.core.service import Service
from webui.core.templates.store import TemplateError
from webui.ui.convert import DETECTED_TEMPLATE, normalize_history
from webui.ui.helpers import template_preview


class TemplateEditor:
    """The editor's widgets and handlers; ``wire`` connects it to the chat and to the template dropdowns."""

    def __init__(self, service: Service) -> None:
        self.service = service

    # -- handlers ----------------------------------------------------------------------------------------

    def current(self) -> tuple[str | None, str]:
        """The template to start from: the loaded model's (detected) one, else the first in the store."""
        detection = self.service.detection
        if detection is not None:
            return detection.template.name, detection.template.source
        names = self.service.templates.names()
        if not names:
            return None, ""
        try:
            return names[0], self.service.templates.get(names[0]).source
        except TemplateError:
            return names[0], ""

    def pick(self, name: str | None) -> tuple[Any, str]:
        """A template was chosen: its Jinja text (and a status line)."""
        if not name:
            return gr.skip(), ""
        try:
            template = self.service.templates.get(name)
        except TemplateError as exc:
            return gr.skip(), f"⚠️ {exc}"
        return (
            template.source,
            f"Editing **{name}** ({template.origin}). Save it under a new name to keep changes.",
        )

    def preview(
        self, name: str | None, source: str, history: Any, system_message: str | None
    ) -> tuple[str, str]:
        """The current chat rendered through the edited text: (preview, note); errors are shown, not raised."""
        return template_preview(self.service, name, source or "", normalize_history(history), system_message)

    def save(self, new_name: str, source: str) -> tuple[Any, Any, str]:
        """Save the edited text as the user template ``new_name``; an invalid template or name saves nothing.

        Returns (editor dropdown, Parameters tab template dropdown, status).
        """
        name = (new_name or "").strip()
        try:
            if not name:
                raise InvalidNameError("Type a name for the template first.")
            self.service.templates.save(name, source or "")
        except (TemplateError, InvalidNameError, OSError) as exc:
            gr.Warning(f"Not saved: {exc}")
            return gr.skip(), gr.skip(), f"⚠️ Not saved: {exc}"
        names = self.service.templates.names()
        return (
            gr.update(choices=names, value=name),
            gr.update(choices=[DETECTED_TEMPLATE, *names]),
            f"Template **{name}** saved in your instruction templates.",
        )

    def refresh(self, chosen: str | None = None) -> list[Any]:
        """Page load: the template list, and the ``chosen`` template (else the loaded model's) to edit."""
        names = self.service.templates.names()
        if chosen in names:
            source, _ = self.pick(chosen)
            if isinstance(source, str):
                return [gr.update(choices=names, value=chosen), source]
        name, source = self.current()
        return [gr.update(choices=names, value=name if name in names else None), source]

    # -- layout ------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Draw the editor (inside the Parameters tab)."""
        name, source = self.current()
        names = self.service.templates.names()
        with gr.Accordion("Instruction template editor", open=False, elem_id="template-editor"):
            with gr.Row():
                self.name = gr.Dropdown(
                    choices=names,
                    value=name if name in names else None,
                    label="Template to edit",
                    elem_id="template-editor-name",
                    scale=2,
                )
                self.new_name = gr.Textbox(
                    label="Save as", placeholder="My template", elem_id="template-editor-new-name", scale=2
                )
                self.save_button = gr.Button("Save as", elem_id="template-editor-save", scale=1)
            with gr.Row():
                self.source = gr.Code(
                    value=source,
                    language="jinja2",
                    label="Jinja template",
                    lines=16,
                    max_lines=40,
                    interactive=True,
                    elem_id="template-editor-source",
                )
                self.rendered = gr.Textbox(
                    label="Rendered prompt (the current chat, ready for the next reply)",
                    lines=16,
                    max_lines=40,
                    interactive=False,
                    buttons=["copy"],
                    elem_id="template-editor-preview",
                )
            with gr.Row(equal_height=True):
                self.status = gr.Markdown(elem_id="template-editor-status")
                self.note = gr.Markdown(elem_id="template-editor-note")

    def wire(
        self, history: gr.State, system_message: gr.Textbox, template_dropdown: gr.Dropdown, tab: Any
    ) -> None:
        """Live preview over the chat ``history``; Save as refreshes ``template_dropdown`` too.

        The preview re-renders as the text changes and whenever ``tab`` (the Parameters tab) is opened.
        """
        preview: dict[str, Any] = {
            "inputs": [self.name, self.source, history, system_message],
            "outputs": [self.rendered, self.note],
            "show_progress": "hidden",
        }
        self.name.input(
            self.pick, inputs=[self.name], outputs=[self.source, self.status], show_progress="hidden"
        )
        self.source.change(self.preview, trigger_mode="always_last", **preview)
        tab.select(self.preview, **preview)
        self.save_button.click(
            self.save,
            inputs=[self.new_name, self.source],
            outputs=[self.name, template_dropdown, self.status],
            show_progress="hidden",
        )

    @property
    def refresh_outputs(self) -> list[gr.components.Component]:
        return [self.name, self.source]
