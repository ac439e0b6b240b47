"""build_ui draws every parameter, loader setting and widget the handlers need (over a scripted loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.config import make_config
from tests.support.ui import SPECS

# The scripted_service fixture comes from tests/support/ui.py (a plugin named in tests/conftest.py).


def test_build_ui_draws_every_parameter_and_loader_setting(scripted_service: Any) -> None:
    import gradio as gr

    from webui.ui.app import build_ui

    blocks = build_ui(scripted_service, make_config(Path(scripted_service.engine.models_dir).parent))
    assert isinstance(blocks, gr.Blocks)
    elem_ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {f"param-{spec.name}" for spec in SPECS} <= elem_ids
    assert {"setting-llama-cpp-n_ctx", "setting-scripted-fail", "chatbot", "model-status"} <= elem_ids


def test_build_ui_draws_the_new_widgets(scripted_service: Any) -> None:
    from webui.ui.app import build_ui

    blocks = build_ui(scripted_service, make_config(Path(scripted_service.engine.models_dir).parent))
    elem_ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {
        "chat-start-with",
        "chat-context",
        "chat-to-default",
        "chat-to-notebook",
        "default-continue",
        "default-tokens",
        "notebook-undo",
        "notebook-tokens",
        "template-editor-source",
        "template-editor-preview",
        "template-editor-save",
        "session-theme",
        "session-save",
    } <= elem_ids
    chatbot = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "chatbot")
    assert chatbot.editable == "all" and chatbot.render_markdown and "copy" in chatbot.buttons
