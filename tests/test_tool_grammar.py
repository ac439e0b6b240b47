"""Grammar-constrained tool calls through the real default model (SmolLM2 135M with llama.cpp).

Each family's grammar must make the model write a call that the family's own parser reads back, with
arguments that satisfy the tool's schema; a lazy grammar must leave the text before its trigger alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from webui.core.params import GenerationParams
from webui.core.service import ChatMessage, ChatSettings, Service, ToolRequest
from webui.core.tools import parse_tool_calls
from webui.core.tools.grammar import tool_call_grammar
from webui.provision import DEFAULT_MODEL_FILE

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
ODD = {
    "type": "function",
    "function": {
        "name": "zq_lookup",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "enum": ["XK-41", "QV-07"]}},
            "required": ["code"],
        },
    },
}


def valid(arguments: str, schema: Mapping[str, Any]) -> bool:
    """A small JSON-schema check for the shapes used here (object, string with enum/maxLength, integer range)."""
    value = json.loads(arguments)
    if not isinstance(value, dict) or set(value) - set(schema["properties"]):
        return False
    for key in schema.get("required", ()):
        if key not in value:
            return False
    for key, item in value.items():
        rule = schema["properties"][key]
        if rule["type"] == "string":
            if not isinstance(item, str) or ("enum" in rule and item not in rule["enum"]):
                return False
            if len(item) > rule.get("maxLength", 10**9):
                return False
        elif rule["type"] == "integer" and not (
            isinstance(item, int) and rule.get("minimum", -(10**9)) <= item <= rule.get("maximum", 10**9)
        ):
            return False
    return True


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    from webui.app import build_service

    built = build_service(make_config(tmp_path_factory.mktemp("grammar") / "user_data", default_model_path))
    built.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
    yield built
    built.close()


@pytest.mark.parametrize(
    "family", ["hermes", "llama3", "mistral", "command_r", "phi4_mini", "lfm2", "gpt_oss", "deepseek", "kimi"]
)
def test_each_familys_forced_call_parses_back_with_valid_arguments(service: Service, family: str) -> None:
    request = ToolRequest.build([WEATHER, ODD], "get_weather", parallel=False)
    assert request is not None
    grammar = tool_call_grammar(family, request)
    assert grammar is not None and not grammar.triggers
    prompt = (
        "<|im_start|>user\nWhat is the weather in Lyon for the next days?<|im_end|>\n<|im_start|>assistant\n"
    )
    params = GenerationParams(grammar=grammar.gbnf, temperature=1.0, seed=7, max_new_tokens=120)
    text = service.stream_completion(prompt, params).text()
    content, calls = parse_tool_calls(text, grammar.parse_format, request.definitions)
    assert [call.name for call in calls] == ["get_weather"], text
    assert valid(calls[0].arguments, WEATHER["function"]["parameters"]), calls[0].arguments
    assert content.strip() == ""


def test_required_choice_on_the_default_model_always_gives_a_valid_call(service: Service) -> None:
    request = ToolRequest.build([WEATHER, ODD], "required")
    history = [ChatMessage("user", "Will it rain in Oslo this week?")]
    names = set()
    for seed in range(8):
        params = GenerationParams(temperature=1.0, seed=seed, max_new_tokens=400)
        stream = service.stream_chat_reply(history, ChatSettings(), params, tools=request)
        chunks = list(stream)
        first = [part for chunk in chunks for part in chunk.tool_calls if part.name]
        arguments = "".join(
            part.arguments for chunk in chunks for part in chunk.tool_calls if part.index == 0
        )
        assert first and stream.job.finish_reason == "tool_calls", [c.text for c in chunks]
        tool = {"get_weather": WEATHER, "zq_lookup": ODD}[first[0].name]
        assert valid(arguments, tool["function"]["parameters"]), arguments
        assert first[0].id.startswith("call_")
        names.add(first[0].name)
    assert names  # the model picks among the offered tools


def test_a_lazy_grammar_leaves_the_text_before_its_trigger_free(service: Service) -> None:
    request = ToolRequest.build([ODD], "auto")
    grammar = tool_call_grammar("hermes", request)
    assert grammar is not None and grammar.triggers
    # Few-shot: the model learns to write a sentence, then a <tool_call> block; the grammar engages there.
    shot = (
        "Question: look up {q}\nAnswer: Sure, let me look that up.\n"
        '<tool_call>\n{{"name": "lookup", "arguments": {{"query": "{q}"}}}}\n</tool_call>\n\n'
    )
    prompt = (
        "".join(shot.format(q=q) for q in ("apples", "the moon", "rivers"))
        + "Question: look up codes\nAnswer:"
    )
    calls_seen = 0
    for seed in range(4):
        params = GenerationParams(
            grammar=grammar.gbnf, grammar_triggers=list(grammar.triggers), temperature=0.7, seed=seed
        )
        params = params.overlay({"max_new_tokens": 80})
        text = service.stream_completion(prompt, params).text()
        before, marker, _ = text.partition("<tool_call>")
        assert before.strip(), text  # free text first: the grammar did not apply from the start
        if marker:
            _, calls = parse_tool_calls(text, grammar.parse_format, request.definitions)
            # Unconstrained, the model would copy the examples' "lookup"; the grammar allows only zq_lookup.
            assert calls and {call.name for call in calls} == {"zq_lookup"}, text
            assert all(valid(call.arguments, ODD["function"]["parameters"]) for call in calls)
            calls_seen += 1
    assert calls_seen >= 1


def test_a_template_without_tools_gets_them_described_in_the_system_message(service: Service) -> None:
    request = ToolRequest.build([WEATHER], "auto")
    prompt = service.build_chat_prompt([ChatMessage("user", "hi")], ChatSettings(), GenerationParams())
    assert "get_weather" not in prompt.text
    with_tools, _ = service.prompts.chat(
        [ChatMessage("user", "hi")], ChatSettings(), GenerationParams(), tools=request
    )
    assert '"name": "get_weather"' in with_tools.text and "<tool_call>" in with_tools.text
    none, params = service.prompts.chat(
        [ChatMessage("user", "hi")],
        ChatSettings(),
        GenerationParams(),
        tools=ToolRequest.build([WEATHER], "none"),
    )
    assert "get_weather" not in none.text and none.reply_format.tools is None and not params.grammar
