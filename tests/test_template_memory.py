"""The per-render memory budget of the template sandbox (MAX_RENDER_BYTES).

A render may not hold more than the budget in values it created, however it creates them (many values each under
the per-value cap, list/tuple/dict literals, slices, ``*args``, ``|list``, ``split``, printed pieces); real chat
templates on a long conversation stay far below it; values that a render drops are given back to the budget. Run
with ``-s`` to see the figures.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from webui.core.templates import budget
from webui.core.templates.sandbox import MAX_RENDER_BYTES, LimitExceeded, Sandbox
from webui.core.templates.store import (
    InstructionTemplate,
    TemplateStore,
)

BUNDLED = Path(__file__).resolve().parent.parent / "instruction-templates"
LIMIT_TEXT = f"{MAX_RENDER_BYTES // 2**20} MiB"
MIB = 2**20

# -- real-world chat templates (their published Jinja, tools and reasoning included) ------------------------

LLAMA_31 = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON." }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", "parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}{{- message.content | tojson }}
        {%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
"""

QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object within <tool_call></tool_call> XML tags."
        "<|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string
        and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}{%- set content = message.content %}{%- else %}{%- set content = '' %}{%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n')
                    + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\\n<tool_response>\\n' }}{{- content }}{{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
"""

# Templates that gather the conversation before printing it: a list grown one message at a time and a text
# grown one message at a time (each step a new, longer value; the old one is dropped).
GATHERING = """{%- set ns = namespace(kept=[], text='') %}
{%- for message in messages %}
    {%- if message.role != 'system' %}{%- set ns.kept = ns.kept + [message] %}{%- endif %}
    {%- set ns.text = ns.text ~ '<|' ~ message.role ~ '|>' ~ message.content|trim ~ '\\n' %}
{%- endfor %}
{{- ns.text }}{{- ns.kept|length }}{{- ns.kept|map(attribute='content')|join('\\n')|length }}
"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{index}",
            "description": "Look something up. " * 20,
            "parameters": {
                "type": "object",
                "properties": {
                    f"arg{arg}": {"type": "string", "description": "An argument."} for arg in range(8)
                },
                "required": ["arg0"],
            },
        },
    }
    for index in range(12)
]


def long_conversation(total_chars: int = 500_000, messages: int = 200) -> list[dict[str, str]]:
    """A system message then ``messages`` turns, about ``total_chars`` of text, some replies with reasoning."""
    each = total_chars // messages
    chat = [{"role": "system", "content": "You are a careful assistant. " * 40}]
    for index in range(messages):
        role = "user" if index % 2 == 0 else "assistant"
        words = (f"mot{index} ünïcödé word{index} " * (each // 20 + 1))[:each]
        if role == "assistant" and index % 4 == 1:
            words = f"<think>\n{words[: each // 3]}\n</think>\n\n{words[each // 3 :]}"
        chat.append({"role": role, "content": words})
    return chat


def render_with_figures(template: InstructionTemplate, chat: list[dict[str, str]], **extra: Any) -> str:
    """Render, printing the time, the traced peak of Python allocations (a second render) and the size."""
    started = time.perf_counter()
    text = template.render(chat, bos_token="<s>", eos_token="</s>", **extra)
    elapsed = time.perf_counter() - started
    gc.collect()
    tracemalloc.start()
    try:
        template.render(chat, bos_token="<s>", eos_token="</s>", **extra)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n{template.name}: {len(text):,} characters, peak {peak / MIB:.1f} MiB traced, {elapsed * 1000:.0f} ms"
    )
    return text


@pytest.mark.parametrize(
    ("name", "source", "extra"),
    [
        ("Llama-3.1 with tools", LLAMA_31, {"tools": TOOLS}),
        ("Qwen3 with tools", QWEN3, {"tools": TOOLS}),
        ("gathering", GATHERING, {}),
    ],
)
def test_real_templates_render_a_long_chat_within_the_budget(name: str, source: str, extra: Any) -> None:
    chat = long_conversation()
    text = render_with_figures(InstructionTemplate(name, source), chat, **extra)
    assert chat[-1]["content"][-100:] in text
    assert len(text) > 450_000  # Qwen3 leaves out the reasoning of earlier replies


def test_bundled_templates_render_a_long_chat_within_the_budget() -> None:
    store = TemplateStore(BUNDLED, BUNDLED / "no-user-templates")
    chat = long_conversation()
    for name in store.names():
        text = render_with_figures(store.get(name), chat)
        assert chat[-1]["content"][-100:] in text, name


def test_a_chat_several_times_as_long_still_renders() -> None:
    # 3 MB of text, far past any context window the prompt builder fills: still no budget error.
    chat = long_conversation(3_000_000, 1000)
    text = render_with_figures(InstructionTemplate("Qwen3", QWEN3), chat, tools=TOOLS)
    assert len(text) > 2_500_000


# -- hostile templates --------------------------------------------------------------------------------------

# Each value stays under the per-value cap (8M characters); together they would take gigabytes.
MANY_VALUES: dict[str, str] = {
    "variables": "".join(f"{{% set v{i} = 'x' * 4000000 ~ {i} %}}" for i in range(400)),
    "namespace attributes": "{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = 'x' * 4000000 ~ {i} %}}" for i in range(400)),
    "a chain of lists": "{% set ns = namespace(l=none) %}{% for i in range(100000) %}{% for j in range(1000) %}"
    "{% set ns.l = [ns.l, 'x' * 4000 ~ j] %}{% endfor %}{% endfor %}",
    "a chain of dicts": "{% set ns = namespace(d=none) %}{% for i in range(100000) %}{% for j in range(1000) %}"
    "{% set ns.d = {'up': ns.d, 'n': i * 1000 + j, 's': 'x' * 4000 ~ j} %}{% endfor %}{% endfor %}",
    "slices": "{% set big = 'y' * 4000000 %}{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = big[{i}:] %}}" for i in range(400)),
    "range|list": "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}"
    "{% set ns.l = [ns.l, range(100000)|list] %}{% endfor %}",
    "map|list": "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}"
    "{% set ns.l = [ns.l, range(100000)|map('center', 40)|list] %}{% endfor %}",
    "list of characters": "{{ ('€' * 8000000)|list|length }}",
    "split": "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}"
    "{% set ns.l = [ns.l, (('ab ' * 2000000) ~ i).split()] %}{% endfor %}",
    "star arguments": "{{ cycler(*('€' * 8000000)) }}",
    # Empty pieces: nothing but the list that collects them grows.
    "printed pieces": "{% set e = '' %}{% for i in range(100000) %}{% for j in range(1000) %}"
    + "{{ e }}" * 100
    + "{% endfor %}{% endfor %}",
    "captured pieces": "{% set e = '' %}{% set x %}{% for i in range(100000) %}{% for j in range(1000) %}"
    + "{{ e }}" * 100
    + "{% endfor %}{% endfor %}{% endset %}",
    "macro output": "{% macro m(i) %}{{ 'x' * 4000000 ~ i }}{% endmacro %}{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = m({i}) %}}" for i in range(400)),
    "folded at compile time": "".join(f"{{% set v{i} = 'x'|center(4000000) ~ {i} %}}" for i in range(400)),
}


# Templates that fill the budget with a million or two small items, each built in Python.
SLOW_TO_FILL = {"range|list", "map|list"}

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="reads the peak memory from Linux's /proc"
)


@pytest.fixture(scope="module")
def hostile_renders() -> dict[str, dict[str, Any]]:
    """Each MANY_VALUES template rendered in a fresh process (tests/support/render_peak.py): figures by name."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.render_peak"],
        input=json.dumps(MANY_VALUES),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return figures


@needs_proc
@pytest.mark.parametrize("name", MANY_VALUES.keys())
def test_a_render_that_holds_more_than_the_budget_is_stopped(
    name: str, hostile_renders: dict[str, dict[str, Any]]
) -> None:
    render = hostile_renders[name]
    print(
        f"\n+{render['peak']:.1f} MiB at the peak, {render['after']:+.1f} MiB after, "
        f"{render['elapsed']:.2f} s: {render['message']}"
    )
    assert render["template_error"], render["error"]
    # Stopped by the memory budget, or where a slow CPU builds items for longer than the render's time limit
    # (range|list and map|list took 5 s to reach 64 MiB on a 2 GHz AMD machine) by that, the peak still bounded.
    by_memory = re.match(rf'Template "hostile" was stopped: .*{LIMIT_TEXT}', render["message"])
    by_time = name in SLOW_TO_FILL and "stopped: it ran past the time limit" in render["message"]
    assert by_memory or by_time, render["message"]
    assert not render["trimmed"]  # the template's doing: not trimmed away
    assert "(the limit for one render)" in render["message"] or by_time
    # The budget, and what a check before an allocation may let through once, and allocator overhead; the
    # child process frees a large block first, as a long-running server has (the allocator's worst case).
    assert render["peak"] < MAX_RENDER_BYTES / MIB + 32
    assert render["after"] < 8  # given back at once
    assert not render["chained"]


def test_values_a_render_drops_are_given_back() -> None:
    # 2 GB created in all, never more than a few megabytes held at once.
    source = (
        "{% set ns = namespace(s='') %}{% for i in range(1000) %}{% set ns.s = ('z' * 1000000) ~ i %}"
        "{% set parts = (ns.s ~ ',x,y').split(',') %}{% endfor %}{{ ns.s|length }}"
    )
    assert InstructionTemplate("churn", source).render([]) == "1000003"


# -- the accounting, at the sandbox level -------------------------------------------------------------------


def run(source: str, **variables: Any) -> tuple[Sandbox, list[str]]:
    """Render ``source`` in a Sandbox kept for inspection (the caller releases it)."""
    sandbox = Sandbox(deadline=time.monotonic() + 30)
    template = sandbox.from_string(source)
    return sandbox, list(template.generate(variables))


@pytest.mark.parametrize(
    ("source", "least", "most"),
    [
        ("{% set a = 'x' * 1000000 %}", 1_000_000, 1_001_000),  # a new string
        ("{% set a = ('x' * 1000000)[1:] %}", 2_000_000, 2_002_000),  # and its slice, a copy
        ("{% set a = 'é' * 1000000 %}", 1_000_000, 1_001_000),  # Latin-1: a byte a character
        ("{% set a = '€' * 1000000 %}", 2_000_000, 2_001_000),
        ("{% set a = [0] * 100000 %}", 800_000, 801_000),  # the slots; 0 exists already
        # The text, then the list: its slots and 100,000 new strings ("ab", 51 bytes each), each also in the
        # budget's own records.
        (
            "{% set a = ('ab ' * 100000).split() %}",
            300_000 + 800_000 + 5_100_000,
            300_000 + 8_000_000 + 3_000_000,
        ),
        ("{% set a = range(100000)|list %}", 800_000 + 2_800_000, 800_000 + 6_000_000),  # slots and integers
        ("{% set a = big + [1] %}", 400_000, 401_000),  # a new list: slots only, the items existed
        ("{% set a = big|sort %}", 400_000, 401_000),
        ("{% set a = big[1:] %}", 400_000, 401_000),
        ("{% set a = [big, big] %}", 56, 200),
        ("{% set a = big|first %}", 0, 0),
        ("{{ big|length }}", 0, 200),
    ],
)
def test_what_a_value_is_counted_for(source: str, least: int, most: int) -> None:
    big = [f"existing {i}" for i in range(50_000)]
    sandbox, _ = run(source, big=big)
    try:
        used = sandbox._used
    finally:
        sandbox.release()
    assert least <= used <= most, (source, used)


def test_the_accounting_follows_the_real_allocations() -> None:
    """What the budget counts against what tracemalloc sees, for values that stay alive to the end."""
    source = (
        "{% set ns = namespace(l=none, s=[]) %}{% for i in range(20000) %}"
        "{% set ns.l = [ns.l, ('v' ~ i) * 10, {'k': i * 1000}] %}{% endfor %}"
        "{% set words = ('ab ' * 200000).split() %}{% set text = words|join(',') %}"
    )
    sandbox = Sandbox(deadline=time.monotonic() + 30)
    template = sandbox.from_string(source)
    gc.collect()
    tracemalloc.start()
    try:
        list(template.generate({}))
        traced, _ = tracemalloc.get_traced_memory()
        counted = sandbox._used
    finally:
        tracemalloc.stop()
        sandbox.release()
    print(f"\ncounted {counted / MIB:.2f} MiB, traced {traced / MIB:.2f} MiB")
    assert 0.8 * traced <= counted <= 1.5 * traced


def test_refcount_reading_is_calibrated() -> None:
    # The premise of "new": an object held by one list reads _ONE_HOLDER, one held by two reads one more.
    only = [object()]
    assert budget.refs_at(only, 0) == budget.ONE_HOLDER
    twice = [only[0]]
    assert budget.refs_at(twice, 0) == budget.NEW
    assert sys.getrefcount(only[0]) > 0


def test_the_budget_error_names_the_limit() -> None:
    sandbox = Sandbox()
    with pytest.raises(LimitExceeded, match=LIMIT_TEXT) as caught:
        sandbox.reserve(MAX_RENDER_BYTES + 1)
    assert not caught.value.too_large
    sandbox.reserve(MAX_RENDER_BYTES)  # a check, not a charge
    sandbox.reserve(MAX_RENDER_BYTES)


def test_json_tools_and_the_budget() -> None:
    # tojson output of many tools is counted once per call, and given back when dropped.
    source = (
        "{% set ns = namespace(t='') %}{% for i in range(2000) %}{% set ns.t = tools|tojson %}{% endfor %}"
        "{{ ns.t|length }}"
    )
    text = InstructionTemplate("tools", source).render([], tools=TOOLS)
    assert int(text) == len(json.dumps(TOOLS, ensure_ascii=False))
