"""The instruction template editor: preview over the current chat, save only valid templates."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.ui import HISTORY, chat_values
from webui.ui.convert import (
    DETECTED_TEMPLATE,
)

# The scripted_service fixture comes from tests/support/ui.py (a plugin named in tests/conftest.py).


# -- instruction template editor --------------------------------------------------------------------------------

CUSTOM = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"


def test_template_editor_previews_the_current_chat(scripted_service: Any) -> None:
    from webui.ui.template_editor import TemplateEditor

    editor = TemplateEditor(scripted_service)
    text, note = editor.preview("Mine", CUSTOM, HISTORY, "Be brief.")
    assert text == "[system] Be brief.\n[user] a\n[assistant] b\n[user] c\n[assistant] "
    assert "current chat (4 messages)" in note
    text, note = editor.preview("Mine", CUSTOM, [], "")
    assert text.startswith("[user] Hello! Who are you?") and "example" in note
    text, note = editor.preview("Mine", "{% for m in messages %}", HISTORY, "")
    assert text.startswith("⚠️") and "syntax error" in text and note == text
    text, _ = editor.preview("Mine", "{{ raise_exception('no system messages') }}", HISTORY, "")
    assert "no system messages" in text
    source, status = editor.pick("ChatML")
    assert "<|im_start|>" in source and "ChatML" in status
    assert editor.current()[0] == "Alpaca"  # the template found for the loaded model (here the fallback)
    names, source = editor.refresh("ChatML")  # page load: the template chosen on the Parameters tab
    assert names["value"] == "ChatML" and "<|im_start|>" in source
    names, source = editor.refresh(None)
    assert names["value"] == "Alpaca" and "### Instruction" in source


def test_template_editor_saves_only_valid_templates(scripted_service: Any) -> None:
    from webui.ui.template_editor import TemplateEditor

    editor = TemplateEditor(scripted_service)
    user_dir = scripted_service.templates.user_dir
    with pytest.warns(UserWarning, match="syntax error"):
        _, _, status = editor.save("Broken", "{% for m in messages %}")
    assert status.startswith("⚠️ Not saved") and not (user_dir / "Broken.yaml").exists()
    with pytest.warns(UserWarning, match="not allowed"):
        _, _, status = editor.save("../escape", CUSTOM)
    assert status.startswith("⚠️ Not saved")
    with pytest.warns(UserWarning, match="name"):
        editor.save("  ", CUSTOM)
    assert not user_dir.exists() or not list(user_dir.iterdir())
    names, dropdown, status = editor.save("Mine", CUSTOM)
    assert names["value"] == "Mine" and "Mine" in names["choices"] and "Mine" in dropdown["choices"]
    assert dropdown["choices"][0] == DETECTED_TEMPLATE and "saved" in status
    assert scripted_service.templates.get("Mine").source == CUSTOM
    # The saved template is usable by the chat at once.
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    values = chat_values()
    values[7] = "Mine"
    text, _ = ChatHandlers(scripted_service, ParametersTab(scripted_service)).prompt_text(
        HISTORY, "", *values
    )
    assert text == "[user] a\n[assistant] b\n[user] c\n[assistant] "
