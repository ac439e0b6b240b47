"""Session tab: the page theme and the settings remembered in ``user_data/settings.yaml``.

The page saves a choice as it is made (a model loaded, a preset, mode, template or theme picked) and restores
them all at page load; "Save settings" writes every current choice at once.
"""

from __future__ import annotations

from typing import Any, get_args

import gradio as gr

from webui.core.service import Service
from webui.core.settings import SessionSettings, SettingsFile, Theme
from webui.ui.convert import DETECTED_TEMPLATE

THEMES: tuple[str, ...] = get_args(Theme)

# Runs in the browser: the page is dark when the theme says so, or follows the system for "system".
APPLY_THEME_JS = """
(theme) => {
  const dark = theme === 'dark'
    || (theme !== 'light' && window.matchMedia('(prefers-color-scheme: dark)').matches);
  document.body.classList.toggle('dark', dark);
  return theme;
}
"""


def _template_setting(template: str | None) -> str | None:
    return None if not template or template == DETECTED_TEMPLATE else template


class SessionTab:
    """Draws the Session tab and saves / restores the settings file."""

    def __init__(self, service: Service, settings: SettingsFile) -> None:
        self.service = service
        self.settings = settings

    # -- handlers ----------------------------------------------------------------------------------------

    def describe(self, settings: SessionSettings) -> str:
        """The status line: where the settings live, and anything wrong with the file."""
        text = f"Settings are remembered in `{self.settings.path}`."
        if settings.warnings:
            text += "\n\n" + "\n\n".join(f"⚠️ {warning}" for warning in settings.warnings)
        return text

    def restore(self) -> SessionSettings:
        """The saved settings (defaults + warnings if the file is missing or broken; never raises)."""
        return self.settings.load()

    def remember(self, **changes: Any) -> str:
        """Save some settings now; the status line (a warning if the file cannot be written)."""
        try:
            saved = self.settings.update(**changes)
        except (OSError, ValueError) as exc:
            gr.Warning(f"The settings could not be saved: {exc}")
            return f"⚠️ The settings could not be saved: {exc}"
        return self.describe(saved)

    def remember_preset(self, preset: str | None) -> Any:
        if not preset or preset not in self.service.presets.names():
            return gr.skip()
        return self.remember(preset=preset)

    def remember_mode(self, mode: str) -> str:
        return self.remember(mode=mode)

    def remember_template(self, template: str | None) -> str:
        return self.remember(template=_template_setting(template))

    def remember_theme(self, theme: str) -> str:
        return self.remember(theme=theme)

    def save_all(self, preset: str | None, mode: str, template: str | None, theme: str) -> str:
        """The Save settings button: every current choice, and the loaded model with its loader settings."""
        changes: dict[str, Any] = {"mode": mode, "template": _template_setting(template), "theme": theme}
        if preset and preset in self.service.presets.names():
            changes["preset"] = preset
        state = self.service.loaded
        if state is not None:
            changes.update(
                model=state.entry.name,
                loader=state.loader,
                loader_settings=state.settings.model_dump(mode="json", exclude_unset=True),
            )
        status = self.remember(**changes)
        return status if status.startswith("⚠️") else "Settings saved. " + status

    # -- layout ------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Draw the tab (inside a ``gr.Tab``)."""
        self.theme = gr.Radio(
            list(THEMES),
            value="system",
            label="Theme",
            info="system follows your browser's light or dark setting.",
            elem_id="session-theme",
        )
        self.save = gr.Button("Save settings", variant="primary", elem_id="session-save")
        gr.Markdown(
            "Remembered between runs: the model last loaded and its loader settings, the preset, the chat "
            "mode, the instruction template and the theme. Each is saved as you choose it."
        )
        self.status = gr.Markdown(elem_id="session-status")

    def wire(self, preset: gr.Dropdown, mode: gr.Radio, template: gr.Dropdown) -> None:
        """Save the theme as it is picked (and apply it in the browser); Save settings saves everything."""
        self.theme.input(
            self.remember_theme,
            inputs=[self.theme],
            outputs=[self.status],
            js=APPLY_THEME_JS,
            show_progress="hidden",
        )
        self.save.click(
            self.save_all,
            inputs=[preset, mode, template, self.theme],
            outputs=[self.status],
            show_progress="hidden",
        )
