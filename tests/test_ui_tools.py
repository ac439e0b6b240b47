"""The page's tool pieces without a browser: how steps show (hostile arguments and results stay text), when
the chat redraws, the approval gate between the loop's thread and the buttons, Stop while a call waits, and a
personality's list narrowing the tools."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from webui.core.agent import ApprovalGate, Toolbox, ToolStep
from webui.core.agent.loop import LoopUpdate
from webui.core.characters import cards
from webui.core.characters.model import Character
from webui.core.chats.records import ToolCallRecord, ToolRoundRecord
from webui.ui.convert import chatbot_entry, chatbot_view, reply_entry
from webui.ui.tool_steps import agent_ticks, approval_text, fenced, step_entry
from webui.ui.tools_panel import ToolsPanel

HOSTILE = '<img src=x onerror="window.__xss=1"> ``` <script>alert(1)</script>'


def test_a_step_shows_tool_arguments_result_and_time() -> None:
    call = ToolCallRecord("c1", "get_weather", '{"city":"Paris"}', '{"temperature": 22}', "done", 0.25)
    entry = step_entry(call)
    assert entry["metadata"] == {"title": "🔧 get_weather", "status": "done", "duration": 0.25}
    assert '"city": "Paris"' in entry["content"] and '{"temperature": 22}' in entry["content"]
    waiting = step_entry(ToolCallRecord("c2", "save_note", "{}", status="awaiting"))
    assert waiting["metadata"]["status"] == "pending" and "approval" in waiting["metadata"]["title"]


def test_hostile_text_in_a_step_stays_inside_its_code_block() -> None:
    block = fenced(HOSTILE)
    fence = block.split("\n", 1)[0]
    assert len(fence) > 3 and block.endswith(fence) and block.count(fence) == 2  # ``` inside cannot close it
    entry = step_entry(
        ToolCallRecord("c", '<b onmouseover="x">', json.dumps({"a": HOSTILE}), HOSTILE, "unknown")
    )
    assert "<b" not in entry["metadata"]["title"]
    assert "<" not in approval_text(ToolCallRecord("c", "t", json.dumps({"a": HOSTILE}))).split("```")[0]


def test_a_reply_with_rounds_shows_steps_before_its_answer_and_they_are_not_edited() -> None:
    rounds = (
        ToolRoundRecord("Let me check.", "I should call.", (ToolCallRecord("c", "get_weather", "{}", "22"),)),
    )
    history = [{"role": "user", "content": "Weather?"}, reply_entry("It is 22.", "", None, rounds)]
    view = chatbot_view(history)
    assert [e.get("metadata", {}).get("title", e["content"]) for e in view] == [
        "Weather?",
        "Thoughts",
        "Let me check.",
        "🔧 get_weather",
        "It is 22.",
    ]
    assert chatbot_entry(history, 3) == (1, True)  # a step: kept as it happened
    assert chatbot_entry(history, 4) == (1, False)  # the answer: editable
    # While the tools have run and the answer has not begun, no empty bubble shows.
    running = [history[0], reply_entry("", "", None, rounds)]
    assert chatbot_view(running)[-1]["metadata"]["title"] == "🔧 get_weather"


def test_steps_redraw_at_once_text_at_most_every_interval() -> None:
    times = iter([0.0, 0.01, 0.02, 0.03, 0.5])
    updates = [
        LoopUpdate("text"),
        LoopUpdate("text"),
        LoopUpdate("approval"),
        LoopUpdate("text"),
        LoopUpdate("text"),
    ]
    assert len(list(agent_ticks(updates, 0.1, lambda: next(times)))) == 3  # text, approval, text at 0.5


def test_the_gate_holds_the_loop_until_an_answer() -> None:
    gate = ApprovalGate()
    step = ToolStep("c1", "save_note", "{}", read_only=False)
    assert gate.pending(step) and gate.waiting is step
    answers: list[str] = []
    thread = threading.Thread(target=lambda: answers.append(gate.ask(step)))
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and answers == []  # blocked: nothing runs without an answer
    assert gate.answer("always")
    thread.join(10)
    assert answers == ["always"] and gate.waiting is None
    assert not gate.pending(ToolStep("c2", "save_note", "{}"))  # "always": no more questions for it
    assert gate.pending(ToolStep("c3", "other", "{}"))
    assert not ApprovalGate().answer("approve")  # nothing waits


def test_stop_while_a_call_waits_rejects_it() -> None:
    gate = ApprovalGate()
    step = ToolStep("c1", "save_note", "{}", read_only=False)
    gate.pending(step)
    answers: list[str] = []
    thread = threading.Thread(target=lambda: answers.append(gate.ask(step)))
    thread.start()
    gate.cancel()
    thread.join(10)
    assert answers == ["reject"]


def test_a_personality_narrows_the_tools(tmp_path: Path) -> None:
    panel = ToolsPanel(Toolbox(tmp_path))
    gate = ApprovalGate()
    assert panel.session(False, gate, None) is None  # tools are off until the user turns them on
    everything = panel.session(True, gate, None)
    assert everything is not None
    assert [t.spec.name for t in everything.tools] == ["calculator", "current_datetime", "read_file"]
    coder = Character(name="Coder", tools=["calculator", "fetch_page"])
    narrowed = panel.session(True, gate, coder)
    assert narrowed is not None and [t.spec.name for t in narrowed.tools] == ["calculator"]  # fetch stays off
    assert panel.session(True, gate, Character(name="Plain", tools=[])) is None


def test_a_personalitys_tools_survive_its_card() -> None:
    coder = Character(name="Coder", tools=["calculator"])
    assert Character.from_card(cards.card_data(coder.to_card())).tools == ["calculator"]
