"""Reading replies as they stream: reasoning apart, stop strings on the answer only, tool calls out of the
answer; the thinking budget; reasoning never sent back on later turns. Unit tests at the reader, then the
engine and prompt builder through the real default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import make_config
from webui.core.loader import Chunk, ToolCallDelta
from webui.core.params import GenerationParams
from webui.core.prompts import PromptRequest, ToolCall, build_prompt
from webui.core.reasoning import FORMATS as THINKING
from webui.core.reply_reader import ReplyFormat, ReplyReader, reasoning_apart
from webui.core.service import ChatMessage, ChatSettings, Service
from webui.core.templates.store import InstructionTemplate
from webui.core.tools import get_tool_format
from webui.provision import DEFAULT_MODEL_FILE

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# ChatML that opens the reasoning for the model (like QwQ's): SmolLM2 then reasons until a budget closes it.
PREFILLED_THINK = CHATML.replace("assistant\\n{% endif %}", "assistant\\n<think>\\n{% endif %}").replace(
    "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}"
)


def read_all(reader: ReplyReader, text: str, size: int = 1) -> tuple[str, str, list[ToolCallDelta]]:
    parts = [reader.feed(Chunk(text[i : i + size], tokens=1)) for i in range(0, len(text), size)]
    parts.append(reader.finish())
    calls = [call for part in parts for call in part.tool_calls]
    return "".join(p.text for p in parts), "".join(p.reasoning for p in parts), calls


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_reasoning_stops_and_calls_are_told_apart_at_any_chunking(size: int) -> None:
    fmt = ReplyFormat(THINKING["think"], get_tool_format("hermes"))
    reply = (
        "<think>\nUser: wants weather. A <tool_call> here is only a thought.\n</think>\n\n"
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    reader = ReplyReader(fmt, "<|im_start|>assistant\n", ["\nUser:"])
    answer, reasoning, calls = read_all(reader, reply, size)
    # The stop string inside the reasoning does not end the reply; the markup inside it is not a call.
    assert reasoning == "User: wants weather. A <tool_call> here is only a thought."
    assert answer.strip() == "Let me check."
    assert [(c.name, c.arguments) for c in calls if c.name or c.arguments] == [
        ("get_weather", ""),
        ("", '{"city": "Oslo"}'),
    ]
    assert reader.calls_made == 1 and not reader.stopped


def test_a_stop_string_in_the_answer_ends_it() -> None:
    reader = ReplyReader(ReplyFormat(THINKING["think"]), "", ["\nUser:"])
    answer, reasoning, _ = read_all(reader, "<think>plan\nUser: x</think>Hi there\nUser: more", 2)
    assert (reasoning, answer, reader.stopped) == ("plan\nUser: x", "Hi there", True)


def test_parts_a_loader_sends_itself_pass_through_and_count_as_calls() -> None:
    reader = ReplyReader(ReplyFormat(THINKING["think"], get_tool_format("hermes")), "", [])
    out = reader.feed(
        Chunk("", reasoning="server-side thought", tool_calls=(ToolCallDelta(0, "x1", "f", "{}"),))
    )
    assert (out.reasoning, out.tool_calls[0].id, reader.calls_made) == ("server-side thought", "x1", 1)


def test_forcing_the_close_moves_to_the_answer() -> None:
    reader = ReplyReader(ReplyFormat(THINKING["think"]), "<think>\n", [])
    assert reader.in_reasoning
    reader.feed(Chunk("still thinking", tokens=3))
    assert reader.reasoning_tokens == 3
    assert reader.force_close() == "\n</think>\n\n"
    assert not reader.in_reasoning and reader.force_close() == ""
    assert reader.feed(Chunk("Answer.", tokens=1)).text == "Answer."


def test_a_chunk_of_several_tokens_counts_only_its_reasoning_tokens_as_reasoning() -> None:
    """A loader hands several tokens at once (drafts kept, pieces that waited for a busy reader): the pieces
    tell which text is which token's, so the end of the reasoning and the start of the answer count apart."""
    reader = ReplyReader(ReplyFormat(THINKING["think"]), "<think>\n", [])
    pieces = ("Sum", " is", " 4", ".", "\n</think>", "\n\n", "Four", ".")
    out = reader.feed(Chunk("".join(pieces), tokens=len(pieces), pieces=pieces))
    assert (out.reasoning, out.text) == ("Sum is 4.", "Four.")
    assert (reader.reasoning_tokens, out.reasoning_tokens) == (5, 5)  # the closing marker's token included
    # Front ends get the reasoning and the answer in chunks of their own, the reasoning first.
    thought, rest = reasoning_apart(out)
    assert (thought.reasoning, thought.text, thought.tokens, thought.reasoning_tokens) == (
        "Sum is 4.",
        "",
        5,
        5,
    )
    assert (rest.reasoning, rest.text, rest.tokens, rest.reasoning_tokens) == ("", "Four.", 3, 0)
    assert reasoning_apart(rest) == [rest]
    # Without pieces the reader cannot tell: the chunk counts where it began, as before.
    blurred = ReplyReader(ReplyFormat(THINKING["think"]), "<think>\n", [])
    assert blurred.feed(Chunk("".join(pieces), tokens=len(pieces))).reasoning_tokens == len(pieces)


def test_plain_models_text_passes_unchanged() -> None:
    reader = ReplyReader(None, "", [])
    assert (
        reader.feed(Chunk("<think>not a marker here</think>", tokens=1)).text
        == "<think>not a marker here</think>"
    )


def test_earlier_reasoning_is_not_rendered_but_the_current_tool_loops_is() -> None:
    template = InstructionTemplate(
        "t",
        "{% for m in messages %}[{{ m.role }}]{{ m.get('reasoning_content', '') }}|{{ m.content }}"
        "{% for c in m.get('tool_calls', []) %}<call {{ c.function.name }} {{ c.function.arguments | tojson }}>"
        "{% endfor %}{% endfor %}{% if enable_thinking %}THINK{% endif %}",
    )
    history = [
        ChatMessage("user", "q1"),
        ChatMessage("assistant", "a1", reasoning="OLD-THOUGHT"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", "", reasoning="LOOP-THOUGHT", tool_calls=(ToolCall("c1", "f", '{"x": 1}'),)),
        ChatMessage("tool", "42", tool_call_id="c1", name="f"),
    ]
    text = build_prompt(
        PromptRequest(history, template=template, template_kwargs={"enable_thinking": True}),
        count_tokens=len,
        max_prompt_tokens=10**6,
    ).text
    assert "OLD-THOUGHT" not in text and "LOOP-THOUGHT" in text
    assert '<call f {"x": 1}>' in text  # arguments reach the template as an object, encoded once
    assert text.endswith("THINK")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    from webui.app import build_service

    built = build_service(make_config(tmp_path_factory.mktemp("reading") / "user_data", default_model_path))
    built.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
    yield built
    built.close()


def test_a_thinking_budget_closes_the_reasoning_and_the_model_answers(service: Service) -> None:
    settings = ChatSettings(template=InstructionTemplate("prefilled-think", PREFILLED_THINK))
    params = GenerationParams(temperature=0, thinking_budget=12, max_new_tokens=60)
    stream = service.stream_chat_reply([ChatMessage("user", "Name a colour.")], settings, params)
    chunks = list(stream)
    reasoning = "".join(c.reasoning for c in chunks)
    answer = "".join(c.text for c in chunks)
    assert reasoning and answer.strip()
    assert "</think>" not in answer and "<think>" not in reasoning
    stats = stream.job.stats
    assert stats is not None and stats.new_tokens == sum(c.tokens for c in chunks) <= 60
    # The reasoning took the budget (12 tokens; re-tokenizing may merge a token), the rest went to the answer.
    assert 10 <= len(service.engine.require_model().model.tokenize(reasoning)) <= 14


def test_thinking_off_closes_a_template_that_always_opens_it(service: Service) -> None:
    settings = ChatSettings(template=InstructionTemplate("prefilled-think", PREFILLED_THINK))
    params = GenerationParams(temperature=0, enable_thinking=False, max_new_tokens=20)
    prompt, _ = service.prompts.chat([ChatMessage("user", "Hi")], settings, params)
    assert prompt.text.endswith("<think>\n\n</think>\n\n")
    chunks = list(service.stream_chat_reply([ChatMessage("user", "Hi")], settings, params))
    assert not "".join(c.reasoning for c in chunks) and "".join(c.text for c in chunks).strip()


def test_the_tool_loop_history_renders_through_the_models_template(service: Service) -> None:
    call = ToolCall("call_1", "get_weather", json.dumps({"city": "Oslo"}))
    history = [
        ChatMessage("user", "Weather in Oslo?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"temperature": 3}', tool_call_id="call_1", name="get_weather"),
    ]
    prompt = service.build_chat_prompt(history, ChatSettings(), GenerationParams())
    assert '{"temperature": 3}' in prompt.text


@pytest.mark.parametrize("size", [1, 3, 100])
def test_a_lone_closing_tag_in_the_answer_is_dropped_but_a_literal_pair_is_kept(size: int) -> None:
    lone = ReplyReader(ReplyFormat(THINKING["think"]), "<think>\n", [])
    answer, reasoning, _ = read_all(lone, "idea</think>\n\nBlue.\n</think>\n\nBlue again.", size)
    assert (reasoning, answer) == ("idea", "Blue.\n\n\nBlue again.")
    pair = ReplyReader(ReplyFormat(THINKING["think"]), "", [])
    answer, _, _ = read_all(pair, "Write <think>x</think> to think.", size)
    assert answer == "Write <think>x</think> to think."


def test_a_requests_variables_never_replace_the_messages_or_the_generation_prompt() -> None:
    template = InstructionTemplate(
        "t", "{% for m in messages %}{{ m.content }};{% endfor %}{{ add_generation_prompt }}"
    )
    request = PromptRequest(
        [ChatMessage("user", "hello")],
        template=template,
        template_kwargs={"messages": [], "add_generation_prompt": False, "tools": "x", "custom": 1},
    )
    assert build_prompt(request, count_tokens=len, max_prompt_tokens=10**6).text == "hello;True"
