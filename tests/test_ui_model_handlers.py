"""The Model tab's handlers: a corrupt file keeps the previous model, the loaded model is remembered, the saved
model is shown at page load."""

from __future__ import annotations

from typing import Any

import pytest

# The scripted_service and settings_file fixtures come from tests/support/ui.py (named in tests/conftest.py).


@pytest.mark.slow
def test_loading_a_corrupt_file_keeps_the_previous_model(smol_service: Any) -> None:
    from webui.ui.model_tab import ModelTab

    (smol_service.engine.models_dir / "broken.gguf").write_bytes(b"GGUF" + b"\x00garbage" * 64)
    tab = ModelTab(smol_service)
    with pytest.warns(UserWarning, match="broken.gguf"):
        messages = list(tab.load("broken.gguf", "llama.cpp"))
    assert "Loading broken.gguf failed" in messages[-1]
    assert "Loaded: SmolLM2-135M-Instruct.Q4_1.gguf" in messages[-1]
    assert smol_service.engine.state.entry.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert tab.loader_for("broken.gguf") == "llama.cpp"


def test_loading_a_model_remembers_it(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import load_settings
    from webui.ui.model_tab import ModelTab

    settings_file.update(character="Ada")
    tab = ModelTab(scripted_service, settings=settings_file)
    tab.panels = []  # no widgets drawn: load with the loader's defaults
    messages = list(tab.load("a.gguf", "scripted"))
    assert messages[-1].startswith("Loaded a.gguf")
    saved = load_settings(settings_file.path)
    assert (saved.model, saved.loader, saved.character) == ("a.gguf", "scripted", "Ada")
    with pytest.warns(UserWarning, match="failed"):
        list(tab.load("missing.gguf", "scripted"))
    assert load_settings(settings_file.path).model == "a.gguf"  # a failed load changes nothing


def test_model_tab_shows_the_saved_model_when_none_is_loaded(
    scripted_service: Any, settings_file: Any
) -> None:
    import gradio as gr

    from webui.core.settings import SessionSettings
    from webui.ui.model_tab import ModelTab

    (scripted_service.engine.models_dir / "b.gguf").write_text("x")
    tab = ModelTab(scripted_service, settings=settings_file)
    with gr.Blocks():
        tab.build()
    saved = SessionSettings(model="b.gguf", loader="scripted", loader_settings={"fail": True})
    models, loader, *rest = tab.refresh(saved)
    assert models["value"] == "a.gguf" and loader["value"] == "scripted"  # a loaded model wins
    scripted_service.unload_model()
    models, loader, *rest = tab.refresh(saved)
    assert models["value"] == "b.gguf" and loader["value"] == "scripted"
    groups, values = rest[: len(tab.panels)], rest[len(tab.panels) : -1]
    names = [name for panel in tab.panels for name in panel.names]
    assert values[names.index("fail")] is True
    assert [g["visible"] for g in groups] == [p.loader == "scripted" for p in tab.panels]
    models, *_ = tab.refresh(SessionSettings(model="gone.gguf"))
    assert models["value"] != "gone.gguf"
