"""Grammars that make a model's tool calls valid: built from the tools' JSON schemas in the family's own call
syntax, so the reply parses with the family's parser and its arguments match the schema.

``tool_choice: required`` or a named function: the grammar applies from the first token (an optional
``<think>`` block first, for thinking models). ``auto``: the grammar is lazy, it engages only once the model
writes the family's opening marker (llama.cpp's trigger patterns); families whose calls have no opening
marker (Llama 3.x's bare JSON) are parsed only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from webui.core.grammar import schema_rules
from webui.core.reasoning.formats import ReasoningFormat
from webui.core.tools.base import ToolFormat
from webui.core.tools.formats import FORMATS
from webui.core.tools.request import ToolRequest

__all__ = ["MAX_PARALLEL_CALLS", "ToolGrammar", "tool_call_grammar"]

# The most calls a grammar lets one reply make: a small model told it may call several tends to repeat the same
# call until the token limit, and a bound lets the grammar end the reply instead.
MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class _Shape:
    """How a family writes its calls: each call wrapped (``open``/``close`` around every one), or a list."""

    open: str
    close: str
    separator: str
    name_key: str = "name"
    arguments_key: str = "arguments"
    each_wrapped: bool = True  # False: open, then the calls joined by separator, then close


_HERMES = _Shape("<tool_call>\n", "\n</tool_call>", "\n")
_SHAPES: dict[str, _Shape] = {
    "hermes": _HERMES,
    "generic": _HERMES,
    "granite": _HERMES,
    "llama3": _Shape("", "", "; ", arguments_key="parameters"),
    "mistral": _Shape("[TOOL_CALLS][", "]", ", ", each_wrapped=False),
    "command_r": _Shape(
        "<|START_ACTION|>[", "]<|END_ACTION|>", ", ", "tool_name", "parameters", each_wrapped=False
    ),
    "phi4_mini": _Shape("<|tool_call|>", "<|/tool_call|>", ""),
    "lfm2": _Shape("<|tool_call_start|>[", "]<|tool_call_end|>", ", ", each_wrapped=False),
}


@dataclass(frozen=True)
class ToolGrammar:
    """A GBNF grammar for tool calls, the trigger patterns that make it lazy (none: from the first token), and
    the format that parses what it produces."""

    gbnf: str
    triggers: tuple[str, ...]
    parse_format: ToolFormat


def tool_call_grammar(
    family: str,
    request: ToolRequest,
    *,
    reasoning: ReasoningFormat | None = None,
    starts_in_reasoning: bool = False,
) -> ToolGrammar | None:
    """The grammar for ``request`` in ``family``'s syntax; None when nothing should be constrained.

    Families with a call syntax of their own not listed here get the Hermes ``<tool_call>`` JSON form, and a
    parser that reads it besides their own. Raises GrammarError for a schema the converter cannot handle.
    """
    if request.choice == "none":
        return None
    shape = _SHAPES.get(family)
    own = FORMATS.get(family, FORMATS["generic"])
    parse_format = own
    if shape is None:
        shape = _HERMES
        parse_format = ToolFormat(own.name, own.markers + FORMATS["hermes"].markers, own.id_style)
    lazy = not request.forced
    if lazy and not shape.open:
        return None  # a bare JSON call has no marker to trigger on: parse only
    names = [request.choice] if request.forced and request.choice != "required" else request.names
    rules = {f"tool{i}-args": request.schema_of(name) for i, name in enumerate(names)}
    lines = [schema_rules(rules).strip()]
    calls = []
    for i, name in enumerate(names):
        lines.append(
            f"tool{i}-call ::= "
            + " ".join(
                [
                    _lit("{"),
                    "space",
                    _lit(json.dumps(shape.name_key)),
                    "space",
                    _lit(":"),
                    "space",
                    _lit(json.dumps(name, ensure_ascii=False)),
                    "space",
                    _lit(","),
                    "space",
                    _lit(json.dumps(shape.arguments_key)),
                    "space",
                    _lit(":"),
                    "space",
                    f"tool{i}-args",
                    _lit("}"),
                ]
            )
        )
        calls.append(f"tool{i}-call")
    lines.append("call ::= " + " | ".join(calls))
    repeat = request.parallel
    if shape.each_wrapped:
        item = f"{_lit(shape.open)} call {_lit(shape.close)}" if shape.open else "call"
        lines.append(f"item ::= {item}")
        separator = _lit(shape.separator) if shape.separator else ""
        body = f"item ({separator} item){{0,{MAX_PARALLEL_CALLS - 1}}}" if repeat else "item"
    else:
        more = f"({_lit(shape.separator)} call){{0,{MAX_PARALLEL_CALLS - 1}}}"
        body = f"{_lit(shape.open)} call {more} {_lit(shape.close)}"
        if not repeat:
            body = f"{_lit(shape.open)} call {_lit(shape.close)}"
    lines.append(f"calls ::= {body}")
    lines.append(f"root ::= {_reasoning_prefix(reasoning, starts_in_reasoning, lazy)}calls")
    triggers = (rf"[\s\S]*?({re.escape(shape.open)})[\s\S]*",) if lazy else ()
    return ToolGrammar("\n".join(lines) + "\n", triggers, parse_format)


def _reasoning_prefix(reasoning: ReasoningFormat | None, starts_in_reasoning: bool, lazy: bool) -> str:
    """A forced call may follow the model's thinking: ``<think>...</think>`` first (no '<' inside)."""
    if lazy or reasoning is None or reasoning.name != "think":
        return ""
    if starts_in_reasoning:
        return '[^<]* "</think>" [ \\n]* '
    return '("<think>" [^<]* "</think>" [ \\n]*)? '


def _lit(text: str) -> str:
    """A GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)
