"""The page's side of thinking models, at the handlers: the reasoning in its own block above the answer (open
and titled "Thinking…" while the model reasons, closed and titled with how long it thought after), the answer
alone saved, edited and sent back; the Think / effort / budget widgets shown only for a template that takes
them, saved in presets and set by personalities.

A scripted model stands in for a thinking one through an instruction template that opens each reply inside
<think> (tests/support/thinking.py); the browser test drives the real model the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.fakes import ScriptedLoader, ScriptedModel
from tests.support.thinking import (
    EFFORT_CHATML,
    EFFORT_TEMPLATE_NAME,
    THINKING_CHATML,
    THINKING_TEMPLATE_NAME,
)
from webui.app import build_service
from webui.core.loader import Chunk
from webui.core.params import GenerationParams, field_specs
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.settings import SessionSettings
from webui.ui.character_tab import CharacterTab
from webui.ui.chat_events import ChatHandlers
from webui.ui.conversations_panel import ConversationHandlers
from webui.ui.convert import (
    DETECTED_TEMPLATE,
    NO_PERSONALITY,
    THINKING_TITLE,
    InputError,
    chatbot_entry,
    chatbot_view,
    escape_reasoning,
    thought_title,
    throttled_parts,
    widget_values,
)
from webui.ui.parameters_tab import EFFORT_DEFAULT, ParametersTab
from webui.ui.state import SessionJobs

SPECS = field_specs()
REASONING = "Let me see. The user greets me."
PIECES = "Let me see.| The user| greets me.|</think>|\n\n|Hello| there|."


class Edit:
    """What gr.EditData carries."""

    def __init__(self, index: Any, value: Any) -> None:
        self.index, self.value = index, value


class Select:
    """What gr.SelectData carries."""

    def __init__(self, index: Any) -> None:
        self.index = index


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    config = make_config(tmp_path / "user_data")
    (config.models_dir / "thinker.gguf").write_text(PIECES)
    service = build_service(config, LoaderRegistry({"scripted": ScriptedLoader}))
    service.templates.save(THINKING_TEMPLATE_NAME, THINKING_CHATML)
    service.templates.save(EFFORT_TEMPLATE_NAME, EFFORT_CHATML)
    service.load_model("thinker.gguf", "scripted")
    yield service
    service.close()


@pytest.fixture
def chat(service: Service) -> ChatHandlers:
    return ChatHandlers(service, ParametersTab(service))


def model_of(service: Service) -> ScriptedModel:
    model = service.engine.require_model().model
    assert isinstance(model, ScriptedModel)
    return model


def values(
    template: str = THINKING_TEMPLATE_NAME, personality: str = NO_PERSONALITY, **params: Any
) -> list[Any]:
    """The chat widgets' values: personality, instruct mode, the template, then the parameter widgets."""
    widgets = widget_values(SPECS, GenerationParams(**params))
    return [personality, "instruct", "", "Assistant", "", "", "", template, *widgets]


def thoughts(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in shown if entry.get("metadata")]


# -- the reasoning block -----------------------------------------------------------------------------------


def test_the_reply_streams_its_reasoning_in_a_block_that_closes_when_the_answer_begins(
    chat: ChatHandlers, service: Service
) -> None:
    model_of(service).delay = 0.15  # one page update per token
    jobs = SessionJobs()
    updates = list(chat.send("Hi?", "", None, jobs, *values()))
    views = [update[2] for update in updates if isinstance(update[2], list)]
    thinking = [
        view for view in views if thoughts(view) and thoughts(view)[0]["metadata"]["status"] == "pending"
    ]
    assert thinking, "the reasoning showed while the model was thinking"
    block = thoughts(thinking[-1])[0]
    assert block["metadata"]["title"] == THINKING_TITLE and "The user" in block["content"]
    assert all(view[-1].get("metadata") for view in thinking)  # no answer under it while the model thinks
    answering = [view for view in views if view[-1]["content"].startswith("Hello")]
    assert answering, "the answer streamed"
    for view in answering:  # closed and retitled as soon as the answer begins
        assert thoughts(view)[0]["metadata"]["status"] == "done"
        assert re.fullmatch(r"Thought for \d+(\.\d)? s", thoughts(view)[0]["metadata"]["title"])

    conversation_id, history, shown, _, status = updates[-1]
    assert [(e["role"], e["content"]) for e in shown] == [
        ("user", "Hi?"),
        ("assistant", REASONING),
        ("assistant", "Hello there."),
    ]
    assert thoughts(shown)[0]["metadata"]["status"] == "done" and "tokens/s" in status
    saved = chat.store.get(conversation_id).messages[-1]
    assert (saved.content, saved.reasoning) == ("Hello there.", REASONING)  # the answer alone is the text
    assert saved.reasoning_seconds is not None
    assert history[-1] == {
        "role": "assistant",
        "content": "Hello there.",
        "reasoning": REASONING,
        "reasoning_seconds": saved.reasoning_seconds,
    }
    # Opened again (a reload): the same closed block, from the store.
    again = chat.view(chat.store.get(conversation_id))[2]
    assert again == shown and thoughts(again)[0]["metadata"]["title"] == thought_title(
        saved.reasoning_seconds
    )


def test_the_next_prompt_and_send_to_notebook_leave_the_earlier_reasoning_out(
    chat: ChatHandlers, service: Service
) -> None:
    jobs = SessionJobs()
    conversation_id, history, *_ = list(chat.send("Hi?", "", None, jobs, *values()))[-1]
    text, status = chat.prompt_text(history, "", *values())
    assert text is not None and status == ""
    assert "Hello there." in text and "The user greets me" not in text
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    list(chat.send("And then?", "", conversation_id, jobs, *values()))
    prompt = model_of(service).prompts[-1]
    assert "Hello there." in prompt and "The user greets me" not in prompt


def test_edit_and_branch_act_on_the_answer(chat: ChatHandlers, tmp_path: Path) -> None:
    jobs = SessionJobs()
    conversation_id, *_ = list(chat.send("Hi?", "", None, jobs, *values()))[-1]
    # Entries: 0 the question, 1 the reasoning block, 2 the answer.
    with pytest.warns(UserWarning, match="reasoning"):
        refused = chat.edit(conversation_id, jobs, Edit(1, "I think differently"))  # type: ignore[arg-type]
    assert thoughts(refused[2])[0]["content"] == REASONING
    assert chat.store.get(conversation_id).messages[-1].reasoning == REASONING
    edited = chat.edit(conversation_id, jobs, Edit(2, "Hi!"))  # type: ignore[arg-type]
    assert edited[4] == "Message edited."
    saved = chat.store.get(conversation_id).messages[-1]
    assert (saved.content, saved.reasoning) == ("Hi!", REASONING)

    panel = ConversationHandlers(chat)
    assert panel.branch_number(conversation_id, Select(1)) == 2  # type: ignore[arg-type]
    assert panel.branch_number(conversation_id, Select(2)) == 2  # type: ignore[arg-type]
    branch_id, history, *_ = panel.branch(conversation_id, 2, jobs)
    assert history[-1]["reasoning"] == REASONING and branch_id != conversation_id


def test_regenerated_versions_show_their_own_reasoning(chat: ChatHandlers, service: Service) -> None:
    jobs = SessionJobs()
    conversation_id, *_ = list(chat.send("Hi?", "", None, jobs, *values()))[-1]
    model_of(service).pieces = ["Be", " French.", "</think>", "Bonjour", "!"]
    shown = list(chat.regenerate("", conversation_id, jobs, *values()))[-1][2]
    assert [e["content"] for e in shown[1:]] == ["Be French.", "Bonjour!"]
    shown = chat.previous_alternative(conversation_id, jobs)[2]
    assert [e["content"] for e in shown[1:]] == [REASONING, "Hello there."]


def test_a_model_that_does_not_think_shows_no_block(chat: ChatHandlers, service: Service) -> None:
    model_of(service).pieces = ["Plain", " answer."]
    shown = list(chat.send("Hi?", "", None, SessionJobs(), *values("ChatML")))[-1][2]
    assert shown == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Plain answer."}]


def test_switched_off_thinking_closes_the_block_in_the_prompt(chat: ChatHandlers, service: Service) -> None:
    model_of(service).pieces = ["Straight", " away."]
    shown = list(chat.send("Hi?", "", None, SessionJobs(), *values(enable_thinking=False)))[-1][2]
    assert shown[-1] == {"role": "assistant", "content": "Straight away."} and not thoughts(shown)
    assert model_of(service).prompts[-1].endswith("<think>\n\n</think>\n\n")


# -- pure helpers ----------------------------------------------------------------------------------------


def test_reasoning_shows_html_as_text_but_keeps_code_as_markdown_code() -> None:
    hostile = '<img src=x onerror="alert(1)"> & <script>alert(2)</script>'
    assert escape_reasoning(hostile) == (
        '&lt;img src=x onerror="alert(1)"&gt; &amp; &lt;script&gt;alert(2)&lt;/script&gt;'
    )
    assert escape_reasoning("use `a<b` then <b>") == "use `a<b` then &lt;b&gt;"
    assert escape_reasoning("one ` tick <i>") == "one ` tick &lt;i&gt;"  # an unmatched backtick is text
    fenced = "Code:\n```html\n<div>\n```\nafter <p>\n"
    assert escape_reasoning(fenced) == "Code:\n```html\n<div>\n```\nafter &lt;p&gt;\n"
    unclosed = "~~~\n<x>"  # a block left open runs to the end
    assert escape_reasoning(unclosed) == unclosed


def test_the_block_title_and_the_entries_of_the_chatbot() -> None:
    assert thought_title(None) == "Thoughts"
    assert thought_title(0.0) == "Thought for 0.1 s"
    assert thought_title(2.44) == "Thought for 2.4 s"
    assert thought_title(61.7) == "Thought for 62 s"
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning": "R <b>", "reasoning_seconds": 3.0},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "", "reasoning": "Still"},
    ]
    shown = chatbot_view(history, thinking=True)
    assert shown == [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "R &lt;b&gt;",
            "metadata": {"title": "Thought for 3.0 s", "status": "done"},
        },
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "Still", "metadata": {"title": THINKING_TITLE, "status": "pending"}},
    ]
    # Each entry's message among the shown ones (system messages are not shown), and whether it is reasoning.
    assert [chatbot_entry(history, i) for i in range(5)] == [
        (0, False),
        (1, True),
        (1, False),
        (2, False),
        (3, True),
    ]
    assert chatbot_entry(history, (2, 0)) == (1, False)
    with pytest.raises(InputError):
        chatbot_entry(history, 5)


def test_updates_follow_the_reasoning_as_well_as_the_answer() -> None:
    chunks = [
        Chunk(reasoning="a"),
        Chunk(reasoning="b"),
        Chunk(),
        Chunk("c"),
        Chunk("d", finish_reason="stop"),
    ]
    ticks = iter([0.0, 0.01, 0.5, 0.51])
    assert list(throttled_parts(chunks, interval=0.1, clock=lambda: next(ticks))) == [
        ("", "a"),
        ("c", "ab"),
        ("cd", "ab"),
    ]


# -- the thinking widgets --------------------------------------------------------------------------------


def shown_widgets(tab: ParametersTab, template: str | None) -> dict[str, Any]:
    updates = tab.labels(template)
    return {spec.name: updates[i] for i, spec in enumerate(SPECS) if spec.group == "Thinking"}


def test_the_thinking_widgets_follow_the_template(service: Service) -> None:
    tab = ParametersTab(service)
    plain = shown_widgets(tab, "ChatML")
    assert [plain[name]["visible"] for name in plain] == [False, False, False]
    thinking = shown_widgets(tab, THINKING_TEMPLATE_NAME)
    assert (thinking["enable_thinking"]["visible"], thinking["reasoning_effort"]["visible"]) == (True, False)
    assert thinking["thinking_budget"]["visible"] is True
    effort = shown_widgets(tab, EFFORT_TEMPLATE_NAME)
    assert (effort["enable_thinking"]["visible"], effort["reasoning_effort"]["visible"]) == (False, True)
    assert effort["reasoning_effort"]["choices"] == [
        (EFFORT_DEFAULT, ""),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
    ]
    # The other fields keep their not-used marks; a template that is gone shows what the model's own allows.
    assert "label" in tab.labels(THINKING_TEMPLATE_NAME)[0]
    assert shown_widgets(tab, "No such template")["enable_thinking"]["visible"] is False
    # Page load: the template saved for the session decides; after a model load, the one the dropdown names.
    saved = SessionSettings(template=THINKING_TEMPLATE_NAME)
    index = next(i for i, spec in enumerate(SPECS) if spec.name == "enable_thinking")
    assert tab.refresh(saved)[2 + index]["visible"] is True
    assert tab.after_load(EFFORT_TEMPLATE_NAME)[2 + index]["visible"] is False
    service.unload_model()  # nothing loaded: nothing detected, nothing to show
    assert all(not update["visible"] for update in shown_widgets(tab, DETECTED_TEMPLATE).values())


def test_the_effort_level_reaches_the_template(chat: ChatHandlers, service: Service) -> None:
    list(chat.send("Hi?", "", None, SessionJobs(), *values(EFFORT_TEMPLATE_NAME, reasoning_effort="high")))
    assert "Reasoning: high" in model_of(service).prompts[-1]


def test_thinking_settings_are_saved_in_presets(service: Service) -> None:
    tab = ParametersTab(service)
    widgets = widget_values(
        SPECS, GenerationParams(enable_thinking=False, reasoning_effort="low", thinking_budget=128)
    )
    tab.save_preset("Quick thinker", *widgets)
    applied = tab.apply_preset("Quick thinker")
    params = tab.read(applied[:-1])
    assert (params.enable_thinking, params.reasoning_effort, params.thinking_budget) == (False, "low", 128)


def test_a_personality_sets_the_thinking_settings(chat: ChatHandlers, service: Service) -> None:
    characters = CharacterTab(service)
    saved = characters.save(
        None,
        "Quick",
        "",
        "You answer at once.",
        "",
        "enable_thinking: false\nthinking_budget: 16",
        None,
        None,
    )
    assert "saved" in saved[-1]
    _, params = chat.read(values(personality="Quick"))
    assert (params.enable_thinking, params.thinking_budget) == (False, 16)
    model_of(service).pieces = ["At", " once."]
    list(chat.send("Hi?", "", None, SessionJobs(), *values(personality="Quick")))
    assert model_of(service).prompts[-1].endswith("<think>\n\n</think>\n\n")


def test_the_page_draws_one_widget_per_thinking_field_beside_the_chat(
    service: Service, tmp_path: Path
) -> None:
    import gradio as gr

    from webui.ui.app import build_ui

    blocks = build_ui(service, make_config(tmp_path / "user_data"))
    for name in ("enable_thinking", "reasoning_effort", "thinking_budget"):
        found = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == f"param-{name}"]
        assert len(found) == 1, name
    row = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "chat-thinking")
    assert isinstance(row, gr.Row)
    inside: set[str | None] = set()
    todo = list(row.children)
    while todo:  # Gradio wraps form widgets in a Form block of its own
        block = todo.pop()
        inside.add(getattr(block, "elem_id", None))
        todo.extend(getattr(block, "children", []))
    assert inside - {None} == {
        "param-enable_thinking",
        "param-reasoning_effort",
        "param-thinking_budget",
    }
