"""The Default and Notebook tabs' handlers over a scripted loader: raw completion, continue, undo, token counts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.ui import last_prompt, values_with
from webui.app import build_service
from webui.ui.state import NOTEBOOK, SessionJobs

# The scripted_service fixture comes from tests/support/ui.py (a plugin named in tests/conftest.py).


def test_default_and_notebook_tabs_complete_raw_text(scripted_service: Any) -> None:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    handlers = TextHandlers(scripted_service, ParametersTab(scripted_service))
    jobs = SessionJobs()
    assert list(handlers.default("Once upon", jobs, *values_with()))[-1][0] == "Hello!"
    assert list(handlers.notebook("Once upon ", jobs, *values_with()))[-1][0] == "Once upon Hello!"
    assert list(handlers.notebook("x", jobs, *values_with(max_new_tokens=2)))[-1][0] == "xHello"
    with pytest.warns(UserWarning, match="max_new_tokens"):
        last = list(handlers.default("x", jobs, *values_with(max_new_tokens=0)))[-1]
    assert "max_new_tokens" in last[1]


# -- Default and Notebook: continue, undo, token counts ---------------------------------------------------------


@pytest.fixture
def text_handlers(scripted_service: Any) -> Any:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    return TextHandlers(scripted_service, ParametersTab(scripted_service))


def test_default_continue_appends_to_the_output(text_handlers: Any) -> None:
    jobs = SessionJobs()
    output, status, tokens = list(text_handlers.default("Once upon", jobs, *values_with()))[-1]
    assert output == "Hello!" and "tokens/s" in status
    assert tokens == "Prompt: 2 tokens · prompt + output: 2 tokens"  # the scripted tokenizer counts words
    output, _, tokens = list(text_handlers.default_continue("Once upon", output, jobs, *values_with()))[-1]
    assert output == "Hello!Hello!"
    assert last_prompt(text_handlers.service) == "Once uponHello!"
    assert text_handlers.default_counts("a b c") == "Prompt: 3 tokens"


def test_notebook_undo_restores_the_text_before_generate(text_handlers: Any) -> None:
    jobs = SessionJobs()
    updates = list(text_handlers.notebook("Once ", jobs, *values_with()))
    text, _, tokens, _ = updates[-1]
    assert text == "Once Hello!" and tokens == "Text: 2 tokens"
    kept = [u[3] for u in updates if isinstance(u[3], str)]
    assert kept == ["Once "]  # the undo state is set once, when the generation starts
    text, status, tokens, before = text_handlers.notebook_undo("Once ", jobs)
    assert text == "Once " and before is None and "Restored" in status and tokens == "Text: 1 token"
    with pytest.warns(UserWarning, match="Nothing to undo"):
        assert text_handlers.notebook_undo(None, jobs)[1].startswith("⚠️")


def test_notebook_undo_during_generation_stops_it(text_handlers: Any) -> None:
    model = text_handlers.service.engine.state.model
    model.gate = threading.Event()
    jobs = SessionJobs()
    updates = text_handlers.notebook("Start", jobs, *values_with())
    first = next(updates)
    assert first[1] == "Generating…" and first[3] == "Start"
    text, *_ = text_handlers.notebook_undo("Start", jobs)
    assert text == "Start" and not jobs.busy(NOTEBOOK)
    model.gate.set()
    rest = list(updates)
    assert all(not isinstance(update[0], str) for update in rest)  # the restored text is not overwritten


def test_token_counts_without_a_model(tmp_path: Path) -> None:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        handlers = TextHandlers(service, ParametersTab(service))
        assert (
            handlers.default_counts("hello", "x")
            == "Prompt: no model loaded · prompt + output: no model loaded"
        )
        assert handlers.notebook_counts("hello") == "Text: no model loaded"
    finally:
        service.close()
