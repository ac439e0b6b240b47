"""Tool-call parsers per family: real-shaped output, parsed whole and streamed split at every character."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from webui.core.loader import ToolCallDelta
from webui.core.tools import (
    FORMATS,
    ToolCallParser,
    ToolParseDelta,
    accumulate,
    detect_tool_format,
    parse_tool_calls,
)

W = {"city": "Paris", "unit": "celsius"}
T = {"tz": "Europe/Paris"}
WJ = json.dumps(W)
TJ = json.dumps(T)

# (family, model output, expected content, expected calls as (name, arguments))
Case = tuple[str, str, str, list[tuple[str, dict[str, Any]]]]

CASES: dict[str, Case] = {
    "hermes_one": (
        "hermes",
        f'<tool_call>\n{{"name": "get_weather", "arguments": {WJ}}}\n</tool_call>',
        "",
        [("get_weather", W)],
    ),
    "hermes_two_text": (
        "hermes",
        f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {WJ}}}\n</tool_call>\n'
        f'<tool_call>\n{{"name": "get_time", "arguments": {TJ}}}\n</tool_call>\nDone.',
        "Let me check.\n\n\nDone.",
        [("get_weather", W), ("get_time", T)],
    ),
    "qwen3_coder_two": (
        "qwen3_coder",
        "I'll look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_time>\n<parameter=tz>\nEurope/Paris\n</parameter>\n</function>\n</tool_call>",
        "I'll look.\n\n",
        [("get_weather", W), ("get_time", T)],
    ),
    "qwen3_coder_typed": (
        "qwen3_coder",
        "<tool_call>\n<function=add>\n<parameter=a>\n2\n</parameter>\n<parameter=label>\nhello world\n</parameter>\n"
        "</function>\n</tool_call>",
        "",
        [("add", {"a": 2, "label": "hello world"})],
    ),
    "seed_oss": (
        "seed_oss",
        "<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris</parameter>\n"
        "<parameter=unit>celsius</parameter>\n</function>\n</seed:tool_call>",
        "",
        [("get_weather", W)],
    ),
    "llama3_json": (
        "llama3",
        f'{{"name": "get_weather", "parameters": {WJ}}}',
        "",
        [("get_weather", W)],
    ),
    "llama3_two_json": (
        "llama3",
        f'{{"name": "get_weather", "parameters": {WJ}}}; {{"name": "get_time", "parameters": {TJ}}}',
        "; ",
        [("get_weather", W), ("get_time", T)],
    ),
    "llama3_python_tag": (
        "llama3",
        'Searching.<|python_tag|>brave_search.call(query="weather in Paris")<|eom_id|>',
        "Searching.",
        [("brave_search", {"query": "weather in Paris"})],
    ),
    "llama3_code": (
        "llama3",
        "<|python_tag|>print(2 + 2)",
        "",
        [("python", {"code": "print(2 + 2)"})],
    ),
    "llama32_pythonic": (
        "llama3",
        '[get_weather(city="Paris", unit="celsius"), get_time(tz="Europe/Paris")]',
        "",
        [("get_weather", W), ("get_time", T)],
    ),
    "mistral_v03": (
        "mistral",
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {WJ}, "id": "a1B2c3D4e"}}, '
        f'{{"name": "get_time", "arguments": {TJ}, "id": "Zz9Yy8Xx7"}}]',
        "",
        [("get_weather", W), ("get_time", T)],
    ),
    "mistral_args": (
        "mistral",
        f"Checking.[TOOL_CALLS]get_weather[ARGS]{WJ}[TOOL_CALLS]get_time[ARGS]{TJ}",
        "Checking.",
        [("get_weather", W), ("get_time", T)],
    ),
    "mistral_call_id": (
        "mistral",
        f"[TOOL_CALLS]get_weather[CALL_ID]k7Q2m9PzX[ARGS]{WJ}",
        "",
        [("get_weather", W)],
    ),
    "deepseek_r1": (
        "deepseek",
        "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        f"{WJ}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n"
        f"{TJ}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "Sure.",
        [("get_weather", W), ("get_time", T)],
    ),
    "deepseek_v31": (
        "deepseek",
        f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{WJ}<｜tool▁call▁end｜>"
        f"<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{TJ}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "",
        [("get_weather", W), ("get_time", T)],
    ),
    "deepseek_distill_open": (
        "deepseek",
        f"<｜tool▁calls｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{WJ}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "",
        [("get_weather", W)],
    ),
    "command_r": (
        "command_r",
        f'I will check.<|START_ACTION|>[{{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {WJ}}}, '
        f'{{"tool_call_id": "1", "tool_name": "get_time", "parameters": {TJ}}}]<|END_ACTION|>',
        "I will check.",
        [("get_weather", W), ("get_time", T)],
    ),
    "granite": (
        "granite",
        f'<|tool_call|>[{{"name": "get_weather", "arguments": {WJ}}}, {{"name": "get_time", "arguments": {TJ}}}]',
        "",
        [("get_weather", W), ("get_time", T)],
    ),
    "granite_31_string_tag": (
        "granite",
        f'<tool_call>[{{"name": "get_weather", "arguments": {WJ}}}]',
        "",
        [("get_weather", W)],
    ),
    "phi4_mini": (
        "phi4_mini",
        f'<|tool_call|>{{"name": "get_weather", "arguments": {WJ}}}<|/tool_call|>'
        f'<|tool_call|>{{"name": "get_time", "arguments": {TJ}}}<|/tool_call|>',
        "",
        [("get_weather", W), ("get_time", T)],
    ),
    "phi4_mini_functools": (
        "phi4_mini",
        f'functools[{{"name": "get_weather", "arguments": {WJ}}}]',
        "",
        [("get_weather", W)],
    ),
    "gpt_oss": (
        "gpt_oss",
        "<|channel|>commentary<|message|>Checking the weather.<|end|>"
        f"<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{WJ}<|call|>",
        "Checking the weather.",
        [("get_weather", W)],
    ),
    "gpt_oss_role_to": (
        "gpt_oss",
        f"<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{TJ}<|call|>",
        "",
        [("get_time", T)],
    ),
    "gpt_oss_final": (
        "gpt_oss",
        "<|channel|>final<|message|>It is sunny.<|return|>",
        "It is sunny.",
        [],
    ),
    "glm": (
        "glm",
        "Let me see.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n</tool_call>"
        "<tool_call>get_time\n<arg_key>tz</arg_key>\n<arg_value>Europe/Paris</arg_value>\n</tool_call>",
        "Let me see.\n",
        [("get_weather", W), ("get_time", T)],
    ),
    "kimi": (
        "kimi",
        f"Ok.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{WJ}"
        f"<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{TJ}"
        "<|tool_call_end|><|tool_calls_section_end|>",
        "Ok.",
        [("get_weather", W), ("get_time", T)],
    ),
    "gemma4": (
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,unit:<|"|>celsius<|"|>}<tool_call|>'
        '<|tool_call>call:add{a:1,b:2.5,tags:[<|"|>x<|"|>],flag:true}<tool_call|>',
        "",
        [("get_weather", W), ("add", {"a": 1, "b": 2.5, "tags": ["x"], "flag": True})],
    ),
    "function_gemma": (
        "function_gemma",
        "<start_function_call>call:get_weather{city:<escape>Paris<escape>,unit:<escape>celsius<escape>}"
        "<end_function_call>",
        "",
        [("get_weather", W)],
    ),
    "lfm2": (
        "lfm2",
        'Checking.<|tool_call_start|>[get_weather(city="Paris", unit="celsius"), get_time(tz="Europe/Paris")]'
        "<|tool_call_end|>Done.",
        "Checking.Done.",
        [("get_weather", W), ("get_time", T)],
    ),
    "lfm2_json": (
        "lfm2",
        f'<|tool_call_start|>[{{"name": "get_weather", "arguments": {WJ}, "id": "c1"}}]<|tool_call_end|>',
        "",
        [("get_weather", W)],
    ),
    "gemma4_nested": (
        "gemma4",
        '<|tool_call>call:book{guests:[{age:30,name:<|"|>Ann, \\"A\\"<|"|>}],when:{day:<|"|>Mon<|"|>}}<tool_call|>Booked?',
        "Booked?",
        [("book", {"guests": [{"age": 30, "name": 'Ann, \\"A\\"'}], "when": {"day": "Mon"}})],
    ),
    "hermes_string_arguments": (
        "hermes",
        '<tool_call>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"Europe/Paris\\"}"}\n</tool_call>',
        "",
        [("get_time", T)],
    ),
    "llama3_typed_json": (
        "llama3",
        f'\n{{"type": "function", "name": "get_weather", "parameters": {WJ}}}',
        "\n",
        [("get_weather", W)],
    ),
    "generic_wrapped": (
        "generic",
        f'{{"tool_call": {{"name": "get_weather", "arguments": {WJ}}}}}',
        "",
        [("get_weather", W)],
    ),
    "generic_lmstudio": (
        "generic",
        f'Hm.[TOOL_REQUEST]{{"name": "get_weather", "arguments": {WJ}}}[END_TOOL_REQUEST]',
        "Hm.",
        [("get_weather", W)],
    ),
    "generic_named_json": (
        "generic",
        'Here is the result:\n[TOOL_REQUEST]\nlist_directory {"path": "/home"}\n[TOOL_REQUEST_END]',
        "Here is the result:\n",
        [("list_directory", {"path": "/home"})],
    ),
    "function_gemma_spaced": (
        "function_gemma",
        "<start_function_call>call:get_weather{city:<escape>New York<escape>, days: 3}<end_function_call>",
        "",
        [("get_weather", {"city": "New York", "days": 3})],
    ),
    "hermes_unicode_nested": (
        "hermes",
        '<tool_call>\n{"name": "note", "arguments": {"text": "café } ] \\" <tool_call>", "tags": [{"a": [1, 2]}]}}\n</tool_call>',
        "",
        [("note", {"text": 'café } ] " <tool_call>', "tags": [{"a": [1, 2]}]})],
    ),
    "generic_plain_json_answer": (
        "generic",
        '{"answer": 42}',
        '{"answer": 42}',
        [],
    ),
}

# Broken output: never raises, and everything the model said stays visible as content.
MALFORMED: dict[str, tuple[str, str]] = {
    "hermes_broken_json": ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'),
    "hermes_unclosed": ("hermes", '<tool_call>\n{"name": "f", "argu'),
    "llama3_not_a_call": ("llama3", '{"name": "f"'),
    "mistral_broken": ("mistral", "[TOOL_CALLS]get_weather[ARGS]{city: Paris}"),
    "mistral_no_args": ("mistral", "[TOOL_CALLS] nothing here"),
    "deepseek_broken": (
        "deepseek",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{oops<｜tool▁call▁end｜>",
    ),
    "command_r_broken": ("command_r", '<|START_ACTION|>[{"tool_name": <|END_ACTION|>'),
    "granite_broken": ("granite", '<|tool_call|>[{"name": "f", "arguments": [1]}]'),
    "gpt_oss_broken": (
        "gpt_oss",
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{bad<|call|>",
    ),
    "kimi_broken": (
        "kimi",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{x",
    ),
    "gemma4_broken": ("gemma4", '<|tool_call>call:f{a:<|"|>unterminated}<tool_call|>'),
    "function_gemma_broken": ("function_gemma", "<start_function_call>call:f{a:<escape>x"),
    "lfm2_broken": ("lfm2", "<|tool_call_start|>[f(a=]<|tool_call_end|>"),
    "generic_broken": ("generic", "[TOOL_REQUEST]{not json[END_TOOL_REQUEST]"),
}


def _stream(fmt: str, pieces: list[str]) -> tuple[str, list[Any], list[ToolParseDelta]]:
    """Feed the pieces through one parser; the rebuilt content, calls and the raw parts."""
    parser = ToolCallParser(fmt, rng=random.Random(0))
    parts = [parser.feed(p) for p in pieces] + [parser.flush()]
    content, calls = accumulate(parts)
    return content, calls, parts


def _check(fmt: str, text: str, content: str, expected: list[tuple[str, dict[str, Any]]]) -> None:
    """The whole parse matches the expectation, and every split of the stream matches the whole parse."""
    whole_content, whole_calls = parse_tool_calls(text, fmt, rng=random.Random(0))
    assert whole_content == content
    assert [(c.name, json.loads(c.arguments)) for c in whole_calls] == expected
    args_exact = [c.arguments for c in whole_calls]
    splits = [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]
    for pieces in splits:
        got_content, got_calls, parts = _stream(fmt, pieces)
        assert got_content == content, pieces
        assert [c.name for c in got_calls] == [n for n, _ in expected], pieces
        assert [c.arguments for c in got_calls] == args_exact, pieces
        for part in parts:
            for delta in part.tool_calls:
                assert isinstance(delta, ToolCallDelta)
        # The id and the name arrive once per call, so concatenating accumulators rebuild them intact.
        heads = [d for p in parts for d in p.tool_calls if d.name]
        assert [d.index for d in heads] == list(range(len(expected)))
        assert all(d.id for d in heads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_whole_and_every_split(case: str) -> None:
    """Every family: one call, parallel calls, text around them; streamed split anywhere gives the same."""
    fmt, text, content, expected = CASES[case]
    _check(fmt, text, content, expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_random_chunkings(case: str) -> None:
    """Many random chunkings (as a tokenizer would cut) give the whole parse too."""
    fmt, text, content, _ = CASES[case]
    whole_content, whole_calls = parse_tool_calls(text, fmt)
    assert whole_content == content
    rng = random.Random(case)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(2, 12))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        got_content, got_calls, _ = _stream(fmt, pieces)
        assert got_content == whole_content
        assert [(c.name, c.arguments) for c in got_calls] == [(c.name, c.arguments) for c in whole_calls]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_degrades_to_content(case: str) -> None:
    """Broken output never raises; nothing is lost, it comes back as content (split anywhere, too)."""
    fmt, text = MALFORMED[case]
    content, calls = parse_tool_calls(text, fmt)
    assert calls == []
    assert content == text
    for i in range(len(text) + 1):
        got, got_calls, _ = _stream(fmt, [text[:i], text[i:]])
        assert got == text and got_calls == []


def test_plain_text_streams_without_delay() -> None:
    """Ordinary text passes straight through; only a tail that could open a marker waits."""
    parser = ToolCallParser("hermes")
    assert parser.feed("Hello there").content == "Hello there"
    assert parser.feed(" a <tool").content == " a "
    assert parser.feed("box> x").content == "<toolbox> x"
    assert parser.flush() == ToolParseDelta()


def test_marker_split_never_leaks() -> None:
    """A marker split over chunks shows up in no content delta, at any split."""
    text = f'Hi<tool_call>{{"name": "f", "arguments": {WJ}}}</tool_call>'
    for i in range(len(text) + 1):
        _, _, parts = _stream("hermes", [text[:i], text[i:]])
        assert all("<" not in p.content and "tool_call" not in p.content for p in parts)


def test_ids() -> None:
    """OpenAI-style ids by default, Mistral's 9 alphanumerics (keeping valid model ids), Kimi's own ids."""
    _, calls = parse_tool_calls(CASES["hermes_two_text"][1], "hermes")
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c.id) for c in calls)
    assert len({c.id for c in calls}) == 2
    _, calls = parse_tool_calls(CASES["mistral_args"][1], "mistral")
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", c.id) for c in calls)
    _, calls = parse_tool_calls(CASES["mistral_v03"][1], "mistral")
    assert [c.id for c in calls] == ["a1B2c3D4e", "Zz9Yy8Xx7"]
    _, calls = parse_tool_calls(CASES["mistral_call_id"][1], "mistral")
    assert calls[0].id == "k7Q2m9PzX"
    _, calls = parse_tool_calls(CASES["kimi"][1], "kimi")
    assert [c.id for c in calls] == ["functions.get_weather:0", "functions.get_time:1"]


def test_schema_types_for_tag_formats() -> None:
    """With the tools' schemas, an unquoted value is read as its declared type (a string stays a string)."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "set",
                "parameters": {"properties": {"code": {"type": "string"}, "n": {"type": "integer"}}},
            },
        }
    ]
    text = "<tool_call>set\n<arg_key>code</arg_key>\n<arg_value>007</arg_value>\n<arg_key>n</arg_key>\n<arg_value>7</arg_value>\n</tool_call>"
    _, calls = parse_tool_calls(text, "glm", tools=tools)
    assert json.loads(calls[0].arguments) == {"code": "007", "n": 7}
    text = "<tool_call>\n<function=set>\n<parameter=code>\n007\n</parameter>\n<parameter=n>\n7\n</parameter>\n</function>\n</tool_call>"
    _, calls = parse_tool_calls(text, "qwen3_coder", tools=tools)
    assert json.loads(calls[0].arguments) == {"code": "007", "n": 7}
    _, calls = parse_tool_calls(text, "qwen3_coder")  # without a schema, JSON-looking values read as JSON
    assert json.loads(calls[0].arguments) == {"code": "007", "n": 7}  # "007" is not JSON: kept as text


def test_llama3_json_only_opens_a_reply() -> None:
    """A JSON object after real text is quoted text, not a call (as Ollama decides for a '{' tag)."""
    text = f'Here is it: {{"name": "get_weather", "parameters": {WJ}}}'
    assert parse_tool_calls(text, "llama3") == (text, [])


TEMPLATES: dict[str, str] = {
    "hermes": '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}',
    "qwen3_coder": "{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}{%- for args_name, args_value in tool_call.arguments|items %}{{- '<parameter=' + args_name + '>\\n' }}",
    "llama3": '{%- if builtin_tools is defined or tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}{{- \'{"name": "\' + tool_call.name + \'", \' }}{{- \'"parameters": \' }}{%- if tool_call.name in builtin_tools %}{{- "<|python_tag|>" + tool_call.name + ".call(" }}',
    "mistral": '{%- if message.tool_calls %}{{- "[TOOL_CALLS][" }}{%- for tool_call in message.tool_calls %}{%- if not tool_call.id is defined or tool_call.id|length != 9 %}{{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}',
    "deepseek": "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}",
    "command_r": "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_THINKING|>' + message.tool_plan + '<|END_THINKING|><|START_ACTION|>[\\n' }}{% for tc in message.tool_calls %}{\"tool_call_id\": \"{{ tool_idx.value }}\", \"tool_name\": \"{{ tc['function']['name'] }}\"",
    "granite": "{%- if tools %}{{- '<|start_of_role|>available_tools<|end_of_role|>' }}{%- endif %}{{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message.tool_calls | tojson }}",
    "phi4_mini": "{%- if message['tools'] %}{{- '<|tool|>' + message['tools'] + '<|/tool|>' }}{%- endif %}{{- '<|tool_call|>' + tc | tojson + '<|/tool_call|>' }}",
    "gpt_oss": '{{- "<|start|>assistant to=" + "functions." + tool_call.name + "<|channel|>commentary " }}{{- (tool_call.content_type if tool_call.content_type is defined else "json") + "<|message|>" }}{{- "<|constrain|>" }}',
    "glm": "{{- '<tool_call>' + tc.name -}}{% for k, v in _args.items() %}<arg_key>{{ k }}</arg_key><arg_value>{{ v | tojson(ensure_ascii=False) if v is not string else v }}</arg_value>{% endfor %}</tool_call>",
    "kimi": "{%- if message['tool_calls'] -%}<|tool_calls_section_begin|>{%- for tool_call in message['tool_calls'] -%}{%- set formatted_id = tool_call['id'] -%}<|tool_call_begin|>{{ formatted_id }}<|tool_call_argument_begin|>",
    "gemma4": "{%- for tool_call in message['tool_calls'] -%}{{- '<|tool_call>call:' + tool_call['function']['name'] + '{' -}}{{- format_argument(value, escape_keys=False) -}}{{- '}<tool_call|>' -}}{{- '<|\"|>' -}}",
    "function_gemma": "{{- '<start_function_call>call:' + tool_call['function']['name'] + '{' -}}{{- '<escape>' + value + '<escape>' -}}{{- '}<end_function_call>' -}}",
    "lfm2": '{{- "<|im_start|>system\\nList of tools: <|tool_list_start|>" }}{{- tools | tojson }}{{- "<|tool_list_end|>" }}Output function calls as <|tool_call_start|>[func(arg=value)]<|tool_call_end|>',
    "seed_oss": "{{- '<seed:tool_call>\\n<function=' + tool_call.function.name + '>\\n' }}",
    "generic": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_detect_from_template_text(family: str) -> None:
    """The family comes from the template's own text."""
    assert detect_tool_format(TEMPLATES[family]) == family


def test_detect_edge_cases() -> None:
    """No template means generic; every family has a format; unknown names read generically."""
    assert detect_tool_format(None) == "generic"
    assert detect_tool_format("") == "generic"
    assert set(TEMPLATES) <= set(FORMATS)
    assert parse_tool_calls("hi", "no-such-family") == ("hi", [])


def test_feed_after_flush_raises() -> None:
    """A parser serves one reply."""
    parser = ToolCallParser("hermes")
    parser.flush()
    with pytest.raises(RuntimeError):
        parser.feed("x")


def _long_call(fmt: str, code: str) -> str:
    """A call whose one argument is a whole file, in the family's syntax."""
    args = json.dumps({"content": code})
    if fmt == "qwen3_coder":
        return f"<tool_call>\n<function=write_file>\n<parameter=content>\n{code}\n</parameter>\n</function>\n</tool_call>"
    if fmt == "mistral":
        return f"[TOOL_CALLS]write_file[ARGS]{args}"
    return (
        "<tool_call>\n"
        + json.dumps({"name": "write_file", "arguments": {"content": code}})
        + "\n</tool_call>"
    )


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "qwen3_coder"])
def test_long_call_streams_in_linear_time(fmt: str) -> None:
    """A call carrying a whole file, fed token by token, is not re-read from its start on every token."""
    import time

    code = "def f(x):\n    return {'a': [x, (x + 1)]}  # \"q\" <b>\n" * 2000
    text = _long_call(fmt, code)
    tools = [
        {
            "type": "function",
            "function": {"name": "write_file", "parameters": {"properties": {"content": {"type": "string"}}}},
        }
    ]
    parser = ToolCallParser(fmt, tools=tools)
    started = time.perf_counter()
    parts = [parser.feed(text[i : i + 4]) for i in range(0, len(text), 4)] + [parser.flush()]
    elapsed = time.perf_counter() - started
    content, calls = accumulate(parts)
    assert content == ""
    assert [c.name for c in calls] == ["write_file"]
    assert json.loads(calls[0].arguments) == {"content": code}
    assert elapsed < 5.0


def test_bracket_opening_that_is_prose_streams_at_once() -> None:
    """A reply opening with "[" that is no call list is let go as soon as its first words show it."""
    parser = ToolCallParser("llama3")
    assert parser.feed("[Note] it").content == "[Note] it"
    assert parser.feed("'s fine").content == "'s fine"
    parser = ToolCallParser("llama3")
    assert parser.feed("[get_wea").content == ""
    assert parser.feed("ther, x").content == "[get_weather, x"
    parser = ToolCallParser("llama3")
    assert parser.feed("{x} is a set; it's").content == "{x} is a set; it's"
