"""Shared pieces of the tool-call parsers: parsed calls, markers, ids, and lenient value readers."""

from __future__ import annotations

import ast
import json
import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class RawCall:
    """One finished call as a format reads it: ``arguments`` is a JSON object text, ``id`` the model's own."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Match:
    """A marker resolved: ``buffer[:end]`` was markup (plus these calls) and leaves the content stream."""

    calls: tuple[RawCall, ...]
    end: int


# A marker that turned out not to open a call: its text goes back to the content.
FAIL = Match((), -1)


@dataclass(frozen=True)
class Schemas:
    """Parameter types per tool name, so tag formats with unquoted values read ``"42"`` as the string it is."""

    types: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Where unfinished bracket scans stopped, by start index; the parser clears it whenever its buffer moves.
    scans: dict[int, Any] = field(default_factory=dict)

    @classmethod
    def from_tools(cls, tools: Sequence[Mapping[str, Any]] | None) -> Schemas:
        """Read OpenAI-shaped ``tools`` (``{type, function: {name, parameters}}``) or bare function dicts."""
        out: dict[str, dict[str, str]] = {}
        for tool in tools or ():
            fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                continue
            props = (fn.get("parameters") or {}).get("properties") or {}
            out[fn["name"]] = {k: str(v.get("type", "")) for k, v in props.items() if isinstance(v, Mapping)}
        return cls(out)

    def coerce(self, tool: str, key: str, raw: str) -> Any:
        """A tag value as its schema type; without a schema, JSON when it reads as JSON, else the text."""
        kind = self.types.get(tool, {}).get(key, "")
        if kind == "string":
            return raw
        try:
            return json.loads(raw)
        except ValueError:
            return raw


# A format's reader: given the buffer (starting with its marker) and whether the stream has ended,
# a Match, FAIL, or None while more text could still change the answer.
Reader = Callable[[str, bool, Schemas], Match | None]


@dataclass(frozen=True)
class Marker:
    """An opening text and how to read what follows; ``at_start`` ones count only before any real text."""

    text: str
    read: Reader
    at_start: bool = False


@dataclass(frozen=True)
class ToolFormat:
    """A family's tool-call syntax: the markers that may open a call, and the kind of ids its template wants."""

    name: str
    markers: tuple[Marker, ...]
    id_style: str = "openai"  # "openai" (call_...), "mistral" (9 alphanumerics) or "model" (keep the model's)


def new_call_id(rng: random.Random, style: str = "openai") -> str:
    """A fresh id: Mistral templates reject anything but 9 alphanumerics; the rest take OpenAI's shape."""
    if style == "mistral":
        return "".join(rng.choice(_ALNUM) for _ in range(9))
    return "call_" + "".join(rng.choice(_ALNUM) for _ in range(24))


def is_mistral_id(value: str) -> bool:
    """Whether an id is what Mistral's template accepts."""
    return len(value) == 9 and all(c in _ALNUM for c in value)


_STRUCTURE = re.compile(r"""[{}\[\]()"']""")
_IN_STRING = {'"': re.compile(r'[\\"]'), "'": re.compile(r"[\\']")}


def bracket_end(text: str, start: int, scans: dict[int, Any] | None = None) -> int | None:
    """End of the bracketed value at ``start`` ({ or [ or ( ), skipping quoted strings; None if unfinished.

    Returns -1 when ``start`` does not open a bracket. Both quote kinds count, so pythonic calls scan too.
    With ``scans`` (the parser's, for a buffer that only grows) an unfinished scan resumes where it stopped,
    so a long call fed token by token costs linear time.
    """
    if start >= len(text):
        return None
    if text[start] not in "{[(":
        return -1
    closing = {"{": "}", "[": "]", "(": ")"}
    pos, stack, quote = start, [], ""
    if scans is not None and start in scans and scans[start][0] <= len(text):
        pos, saved, quote = scans[start]
        stack = list(saved)
    while True:
        if quote:
            found = _IN_STRING[quote].search(text, pos)
            if found is None or (found.group() == "\\" and found.end() >= len(text)):
                pos = len(text) if found is None else found.start()
                break
            pos = found.end() + (1 if found.group() == "\\" else 0)
            if found.group() == quote:
                quote = ""
            continue
        found = _STRUCTURE.search(text, pos)
        if found is None:
            pos = len(text)
            break
        c, pos = found.group(), found.end()
        if c in "\"'":
            quote = c
        elif c in closing:
            stack.append(closing[c])
        elif not stack or stack.pop() != c:
            return -1
        elif not stack:
            return pos
    if scans is not None:
        scans[start] = (pos, tuple(stack), quote)
    return None


def skip_ws(text: str, i: int) -> int:
    """Index of the first non-whitespace character at or after ``i``."""
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def args_text(value: Any) -> str | None:
    """Arguments as a JSON object text; a JSON-encoded string is decoded once (some models double-encode)."""
    if value is None:
        value = {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def call_from_obj(obj: Any) -> RawCall | None:
    """A call from one JSON object in any of the common shapes (name/arguments, parameters, tool_name)."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's own shape, echoed back by some models
        inner = dict(obj["function"])
        inner.setdefault("id", obj.get("id"))
        obj = inner
    name = obj.get("name", obj.get("tool_name"))
    if not isinstance(name, str) or not name:
        return None
    for key in ("arguments", "parameters", "args"):
        if key in obj:
            args = args_text(obj[key])
            break
    else:
        args = "{}"
    if args is None:
        return None
    raw_id = obj.get("id", obj.get("tool_call_id"))
    return RawCall(name, args, raw_id if isinstance(raw_id, str) else "")


def calls_from_json(text: str) -> tuple[RawCall, ...] | None:
    """Calls from a JSON object or list of objects; None unless every element is a call."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    # llama.cpp's generic grammar wraps calls as {"tool_call": {...}} (or {"tool_calls": [...]}).
    if isinstance(value, dict) and isinstance(value.get("tool_call"), dict) and len(value) == 1:
        value = value["tool_call"]
    elif isinstance(value, dict) and isinstance(value.get("tool_calls"), list) and len(value) == 1:
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls = [call_from_obj(item) for item in items]
    if not items or any(c is None for c in calls):
        return None
    return tuple(c for c in calls if c is not None)


def _call_name(node: ast.expr) -> str | None:
    """``f`` or ``a.b``; Llama's built-ins are ``brave_search.call(...)``, named by the object."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _call_name(node.value)
        if base is None:
            return None
        return base if node.attr == "call" else f"{base}.{node.attr}"
    return None


def calls_from_pythonic(text: str) -> tuple[RawCall, ...] | None:
    """Calls from ``[f(a=1), g(b="x")]`` or a single ``f(a=1)``; keyword literals only, else None."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls: list[RawCall] = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = _call_name(node.func)
        if name is None:
            return None
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError):
            return None
        text_args = args_text(args)
        if text_args is None:
            return None
        calls.append(RawCall(name, text_args))
    return tuple(calls) if calls else None


def loose_end(text: str, start: int, quote: str) -> int | None:
    """End of a ``{...}`` in Gemma's loose syntax, where strings sit between ``quote`` delimiters."""
    if start >= len(text):
        return None
    if text[start] != "{":
        return -1
    depth = 0
    i = start
    while i < len(text):
        if text.startswith(quote, i):
            close = text.find(quote, i + len(quote))
            if close < 0:
                return None
            i = close + len(quote)
            continue
        c = text[i]
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def loose_to_json(text: str, quote: str) -> Any:
    """Gemma's ``{k:<q>str<q>,n:1}`` as a value: delimited strings and bare keys become JSON; raises ValueError."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith(quote, i):
            close = text.find(quote, i + len(quote))
            if close < 0:
                raise ValueError("unterminated string")
            out.append(json.dumps(text[i + len(quote) : close], ensure_ascii=False))
            i = close + len(quote)
            continue
        c = text[i]
        if c.isalpha() or c == "_":
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] in "_-."):
                j += 1
            word = text[i:j]
            after = skip_ws(text, j)
            if after < len(text) and text[after] == ":":
                out.append(json.dumps(word))
            elif word in ("true", "false", "null"):
                out.append(word)
            else:
                out.append(json.dumps(word))  # a bare word value: read it as the string it most likely is
            i = j
            continue
        out.append(c)
        i += 1
    return json.loads("".join(out))
