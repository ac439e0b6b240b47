"""The tool-call families, and which one a chat template speaks (read from its text, never the file name)."""

from __future__ import annotations

from webui.core.tools.base import Marker, ToolFormat
from webui.core.tools.readers import (
    DEEPSEEK_OPENERS,
    deepseek_body,
    drop_reader,
    harmony_reader,
    json_body,
    json_reader,
    kimi_body,
    list_reader,
    loose_call_reader,
    mistral_reader,
    named_json_body,
    python_tag_body,
    pythonic_or_json_body,
    tool_call_tag_reader,
    until_reader,
    xml_params_body,
)

_TC = "<tool_call>"
_TC_END = "</tool_call>"
_HERMES = Marker(_TC, tool_call_tag_reader(_TC, _TC_END))
# Llama 3.x ends a built-in call with <|eom_id|>; loaders usually strip it, so the stream's end closes it too.
_PY_TAG = Marker(
    "<|python_tag|>", until_reader("<|python_tag|>", ("<|eom_id|>", "<|eot_id|>"), python_tag_body)
)
_JSON_AT_START = Marker("{", json_reader(""), at_start=True)
# Llama 3.2 (vLLM's template) writes ``[f(a=1)]`` as the whole reply; generic models write ``[{...}]``.
_LIST_AT_START = Marker("[", list_reader, at_start=True)

FORMATS: dict[str, ToolFormat] = {
    "hermes": ToolFormat("hermes", (_HERMES,)),
    "qwen3_coder": ToolFormat("qwen3_coder", (_HERMES,)),
    "glm": ToolFormat("glm", (_HERMES,)),
    "seed_oss": ToolFormat(
        "seed_oss",
        (
            Marker(
                "<seed:tool_call>", until_reader("<seed:tool_call>", ("</seed:tool_call>",), xml_params_body)
            ),
        ),
    ),
    "llama3": ToolFormat("llama3", (_JSON_AT_START, _LIST_AT_START, _PY_TAG)),
    "mistral": ToolFormat("mistral", (Marker("[TOOL_CALLS]", mistral_reader),), id_style="mistral"),
    "deepseek": ToolFormat(
        "deepseek",
        tuple(Marker(m, until_reader(m, ("<｜tool▁calls▁end｜>",), deepseek_body)) for m in DEEPSEEK_OPENERS),
    ),
    "command_r": ToolFormat(
        "command_r",
        (Marker("<|START_ACTION|>", until_reader("<|START_ACTION|>", ("<|END_ACTION|>",), json_body)),),
    ),
    "granite": ToolFormat(
        "granite",
        (Marker("<|tool_call|>", json_reader("<|tool_call|>", "<|/tool_call|>")), _HERMES),
    ),
    "phi4_mini": ToolFormat(
        "phi4_mini",
        (
            Marker("<|tool_call|>", json_reader("<|tool_call|>", "<|/tool_call|>")),
            Marker("functools", json_reader("functools")),
        ),
    ),
    "gpt_oss": ToolFormat(
        "gpt_oss",
        (
            Marker("<|start|>", harmony_reader("<|start|>")),
            Marker("<|channel|>", harmony_reader("<|channel|>")),
            Marker("<|end|>", drop_reader("<|end|>")),
            Marker("<|return|>", drop_reader("<|return|>")),
        ),
    ),
    "kimi": ToolFormat(
        "kimi",
        (
            Marker(
                "<|tool_calls_section_begin|>",
                until_reader("<|tool_calls_section_begin|>", ("<|tool_calls_section_end|>",), kimi_body),
            ),
        ),
        id_style="model",
    ),
    "gemma4": ToolFormat(
        "gemma4", (Marker("<|tool_call>", loose_call_reader("<|tool_call>", "<tool_call|>", '<|"|>')),)
    ),
    "function_gemma": ToolFormat(
        "function_gemma",
        (
            Marker(
                "<start_function_call>",
                loose_call_reader("<start_function_call>", "<end_function_call>", "<escape>"),
            ),
        ),
    ),
    "lfm2": ToolFormat(
        "lfm2",
        (
            Marker(
                "<|tool_call_start|>",
                until_reader("<|tool_call_start|>", ("<|tool_call_end|>",), pythonic_or_json_body),
            ),
        ),
    ),
    "generic": ToolFormat(
        "generic",
        (
            _HERMES,
            Marker(
                "[TOOL_REQUEST]",
                until_reader("[TOOL_REQUEST]", ("[END_TOOL_REQUEST]", "[TOOL_REQUEST_END]"), named_json_body),
            ),
            _JSON_AT_START,
            _LIST_AT_START,
        ),
    ),
}

# Substring tests on the template source, most specific first: several templates also mention <tool_call>.
_DETECT: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The real gpt-oss template writes "to=" + "functions." in pieces; <|call|> ends its calls.
    ("gpt_oss", ("<|constrain|>", "to=functions.", "<|call|>")),
    ("deepseek", ("tool▁calls▁begin", "tool_calls_begin")),
    ("kimi", ("<|tool_calls_section_begin|>",)),
    ("command_r", ("<|START_ACTION|>",)),
    ("function_gemma", ("<start_function_call>",)),
    ("gemma4", ("<|tool_call>",)),
    ("lfm2", ("<|tool_call_start|>", "<|tool_list_start|>")),
    ("seed_oss", ("<seed:tool_call>",)),
    ("glm", ("<arg_key>",)),
    ("qwen3_coder", ("<parameter=",)),
    ("mistral", ("[TOOL_CALLS]",)),
    ("phi4_mini", ("<|/tool_call|>", "<|tool|>")),
    ("granite", ("<|tool_call|>",)),
    ("hermes", ("<tool_call>",)),
    ("llama3", ("<|python_tag|>", "ipython", '"parameters": ')),
)


def detect_tool_format(template: str | None) -> str:
    """The family a chat template's text speaks; ``generic`` when nothing in it names one."""
    text = template or ""
    for name, needles in _DETECT:
        if any(n in text for n in needles):
            return name
    return "generic"


def get_tool_format(name: str) -> ToolFormat:
    """A family by name; unknown names fall back to the generic reader rather than fail a reply."""
    return FORMATS.get(name, FORMATS["generic"])
