"""Settings saved as chosen on the Session tab and restored at page load."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.ui import SPECS
from webui.ui.convert import (
    DETECTED_TEMPLATE,
    params_from_values,
)

# The scripted_service and settings_file fixtures come from tests/support/ui.py (named in tests/conftest.py).


# -- settings: saved as chosen, restored at page load -------------------------------------------------------------


def test_session_tab_saves_each_choice_and_everything(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import load_settings
    from webui.ui.session_tab import SessionTab

    tab = SessionTab(scripted_service, settings_file)
    assert "settings.yaml" in tab.remember_preset("Creative")
    tab.remember_mode("chat")
    tab.remember_template("ChatML")
    tab.remember_theme("dark")
    saved = load_settings(settings_file.path)
    assert (saved.preset, saved.mode, saved.template, saved.theme) == ("Creative", "chat", "ChatML", "dark")
    tab.remember_template(DETECTED_TEMPLATE)
    assert load_settings(settings_file.path).template is None
    assert tab.remember_preset("No such preset") == {"__type__": "update"}  # nothing saved
    with pytest.warns(UserWarning, match="could not be saved"):
        assert tab.remember_theme("purple").startswith("⚠️")

    status = tab.save_all("Deterministic", "chat-instruct", "Alpaca", "light")
    assert status.startswith("Settings saved.")
    saved = load_settings(settings_file.path)
    assert saved.model == "a.gguf" and saved.loader == "scripted" and saved.loader_settings == {}
    assert (saved.preset, saved.mode, saved.template, saved.theme) == (
        "Deterministic",
        "chat-instruct",
        "Alpaca",
        "light",
    )


def test_page_load_restores_the_saved_choices(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import SessionSettings
    from webui.ui.parameters_tab import ParametersTab

    tab = ParametersTab(scripted_service)
    preset, template, *widgets = tab.refresh(SessionSettings(preset="Deterministic", template="ChatML"))
    assert preset["value"] == "Deterministic" and template["value"] == "ChatML"
    restored = params_from_values(SPECS, [w["value"] for w in widgets])
    assert restored == scripted_service.presets.load("Deterministic").params
    # Each widget is marked for the loaded model: a "not used" label, or (the Thinking ones) shown or hidden.
    assert all("label" in w or "visible" in w for w in widgets)
    preset, template, *widgets = tab.refresh(SessionSettings(preset="Gone", template="Gone too"))
    assert "value" not in preset and template["value"] == DETECTED_TEMPLATE
    assert all("value" not in w for w in widgets)
    preset, template, *widgets = tab.refresh()  # after a model load: choices and labels only
    assert "value" not in preset and "value" not in template
