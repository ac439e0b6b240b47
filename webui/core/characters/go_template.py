"""Ollama Go TEMPLATEs -> HF-style Jinja chat templates, reproducing what Ollama renders.

Supported: text, ``{{ .System }}`` / ``{{ .Prompt }}`` / ``{{ .Response }}`` / ``{{ .Content }}`` / ``{{ .Role
}}``, ``{{ if }}`` / ``{{ else if }}`` / ``{{ else }}`` / ``{{ end }}``, ``{{ range .Messages }}`` (with ``{{
else }}``), ``eq`` / ``ne`` / ``and`` / ``or`` / ``not`` / ``len``, string literals, ``{{-`` / ``-}}`` trim
markers and ``{{/* comments */}}``. Ollama runs a template in one of two ways, and so does the Jinja:

- with ``.Messages`` (or ``.Document``): once, with ``.System`` = every system message joined by a blank line
  and ``.Messages`` = the conversation with consecutive messages of one role merged. The nodes after the last
  top-level ``range`` open the reply, so they are written only when ``add_generation_prompt`` is true.
- otherwise (the "legacy" form): once per system/user/assistant group with ``.System``, ``.Prompt`` and
  ``.Response``; the last group is written only up to its first ``{{ .Response }}`` (the reply being
  generated) — or whole when ``add_generation_prompt`` is false. A template without ``.Response`` gets one
  appended, as Ollama does.

Anything else (variables such as ``$last``, ``with``, ``range`` over other lists, pipes, functions such as
``json`` or ``slice``) is reported as not convertible; the caller keeps the Go text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class _Unconvertible(Exception):
    pass


@dataclass
class GoConversion:
    """The Jinja equivalent of a Go template, or why there is none."""

    jinja: str | None
    problem: str | None = None


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    body: str  # the action text without delimiters and trim markers


@dataclass
class _Output:
    expr: Any


@dataclass
class _Branch:
    kind: str  # "if" or "range"
    expr: Any
    body: list[Any]
    orelse: list[Any]


_WS = " \t\r\n"


def _lex_go(source: str) -> list[_Text | _Action]:
    """Split into text and actions, applying Go's ``{{-`` / ``-}}`` trim markers and dropping comments."""
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(_WS)
        if start < 0:
            items.append(_Text(text))
            return items
        inner = start + 2
        if source[inner : inner + 1] == "-" and source[inner + 1 : inner + 2] in tuple(_WS):
            text = text.rstrip(_WS)
            inner += 2
        items.append(_Text(text))
        end, body = _scan_action(source, inner)
        trim_next = False
        stripped = body.rstrip(_WS)
        if stripped.endswith("-") and stripped[:-1] != stripped[:-1].rstrip(_WS):
            trim_next = True
            body = stripped[:-1]
        body = body.strip(_WS)
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(_Action(body))
        pos = end + 2


def _scan_action(source: str, pos: int) -> tuple[int, str]:
    """Find the ``}}`` closing an action (not inside a string or comment); returns (index, body)."""
    index = pos
    if source[pos:].lstrip(_WS).startswith("/*"):
        close = source.find("*/", pos)
        end = source.find("}}", close) if close >= 0 else -1
        if end < 0:
            raise _Unconvertible("a comment is not closed")
        return end, source[pos:end]
    while index < len(source):
        char = source[index]
        if char in "\"'`":
            close = index + 1
            while close < len(source) and source[close] != char:
                close += 2 if char != "`" and source[close] == "\\" else 1
            index = close + 1
            continue
        if source.startswith("}}", index):
            return index, source[pos:index]
        index += 1
    raise _Unconvertible("an action is not closed with }}")


_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<field>\$?(?:\.[A-Za-z_]\w*)+|\.|\$)"""
    r"""|(?P<word>[A-Za-z_]\w*)|(?P<paren>[()])|(?P<other>\S+))"""
)
_GO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b"}
_GO_ESCAPES.update({"f": "\f", "v": "\v"})


def _go_string(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]

    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xuU":
            return chr(int(code[1:], 16))
        if code[0].isdigit():
            return chr(int(code, 8))
        return _GO_ESCAPES.get(code, code)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", escape, token[1:-1])


def _tokens(text: str) -> list[tuple[str, str]]:
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        found.append((kind, match.group(kind)))
    return found


_FUNCTIONS = {"eq", "ne", "and", "or", "not", "len"}


def _parse_expr(tokens: list[tuple[str, str]]) -> Any:
    """A Go pipeline without ``|``: a field, a string, or a call of eq/ne/and/or/not/len."""
    expr, rest = _parse_command(tokens)
    if rest:
        raise _Unconvertible(f"it uses {rest[0][1]!r} in an action")
    return expr


def _parse_command(tokens: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
    if not tokens:
        raise _Unconvertible("it has an empty action")
    kind, value = tokens[0]
    if kind == "word" and value in _FUNCTIONS:
        args = []
        rest = tokens[1:]
        while rest and rest[0] != ("paren", ")"):
            arg, rest = _parse_operand(rest)
            args.append(arg)
        if not args or (value in ("eq", "ne") and len(args) < 2):
            raise _Unconvertible(f"it calls {value} with too few arguments")
        return ("call", value, args), rest
    return _parse_operand(tokens)


def _parse_operand(tokens: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
    kind, value = tokens[0]
    if kind == "str":
        return ("str", _go_string(value)), tokens[1:]
    if kind == "field":
        return ("field", value), tokens[1:]
    if kind == "word" and value in ("true", "false"):
        return ("bool", value == "true"), tokens[1:]
    if (kind, value) == ("paren", "("):
        expr, rest = _parse_command(tokens[1:])
        if not rest or rest[0] != ("paren", ")"):
            raise _Unconvertible("it has unbalanced parentheses")
        return expr, rest[1:]
    raise _Unconvertible(f"it uses {value!r}")


def _parse_go(items: list[_Text | _Action]) -> list[Any]:
    """Nest the flat item list into text, output and if/range nodes."""
    position = 0

    def block(until_end: bool) -> tuple[list[Any], str]:
        nonlocal position
        nodes: list[Any] = []
        while position < len(items):
            item = items[position]
            position += 1
            if isinstance(item, _Text):
                if item.text:
                    nodes.append(_Text(item.text))
                continue
            tokens = _tokens(item.body)
            head = tokens[0][1] if tokens else ""
            if head in ("end", "else"):
                if not until_end:
                    raise _Unconvertible(f"it has an unexpected {{{{ {head} }}}}")
                return nodes, item.body
            if head in ("if", "range"):
                nodes.append(branch(head, tokens[1:]))
            elif tokens and tokens[0][0] == "word" and head not in _FUNCTIONS | {"true", "false"}:
                raise _Unconvertible(f"it uses {{{{ {head} }}}}")
            else:
                nodes.append(_Output(_parse_expr(tokens)))
        if until_end:
            raise _Unconvertible("an if or range block is not closed with {{ end }}")
        return nodes, ""

    def branch(kind: str, tokens: list[tuple[str, str]]) -> _Branch:
        if any(token[1] in (":=", "=", ",", "|") for token in tokens):
            raise _Unconvertible(f"its {kind} declares variables or uses pipes")
        node = _Branch(kind, _parse_expr(tokens), [], [])
        node.body, closer = block(True)
        closer_tokens = _tokens(closer)
        if closer_tokens[0][1] == "else":
            if len(closer_tokens) > 1:
                if closer_tokens[1][1] != "if" or kind != "if":
                    raise _Unconvertible(f"it uses {{{{ {closer} }}}}")
                node.orelse = [branch("if", closer_tokens[2:])]  # else-if shares the outer {{ end }}
                return node
            node.orelse, closer = block(True)
            if _tokens(closer)[0][1] != "end":
                raise _Unconvertible("an {{ else }} is followed by another {{ else }}")
        return node

    nodes, _ = block(False)
    return nodes


def _fields(nodes: list[Any]) -> set[str]:
    """Every identifier the template mentions, lower-cased (Ollama's ``Vars``)."""
    found: set[str] = set()

    def expr(e: Any) -> None:
        if e[0] == "field":
            found.update(part.lower() for part in e[1].split(".") if part and part != "$")
        elif e[0] == "call":
            for arg in e[2]:
                expr(arg)

    def walk(items: list[Any]) -> None:
        for node in items:
            if isinstance(node, _Output):
                expr(node.expr)
            elif isinstance(node, _Branch):
                expr(node.expr)
                walk(node.body)
                walk(node.orelse)

    walk(nodes)
    return found


# Go fields -> Jinja expressions: in the legacy form, at the top level of the .Messages form, inside its range.
_ROOT_LEGACY = {"System": "System", "Prompt": "Prompt", "Response": "Response"}
_ROOT_MESSAGES = {"System": "ns.system", "Messages": "ns.messages", "Response": "''", "Prompt": "''"}
_ROOT_ALWAYS = {"Tools": "tools", "Think": "false", "IsThinkSet": "false"}
_MESSAGE_FIELDS = {"Role": "message['role']", "Content": "message['content']"}


class _Emitter:
    """Writes Jinja for parsed Go nodes; ``messages_form`` picks Ollama's ``.Messages`` variables."""

    def __init__(self, messages_form: bool) -> None:
        self.root = {**_ROOT_ALWAYS, **(_ROOT_MESSAGES if messages_form else _ROOT_LEGACY)}
        self.in_range = False
        self.cut = False  # legacy form: once the first {{ .Response }} is written, the rest is dropped

    def expr(self, e: Any) -> str:
        if e[0] == "str":
            return json.dumps(e[1], ensure_ascii=False)
        if e[0] == "bool":
            return "true" if e[1] else "false"
        if e[0] == "call":
            name, args = e[1], [self.expr(arg) for arg in e[2]]
            if name == "eq":
                return "(" + " or ".join(f"{args[0]} == {other}" for other in args[1:]) + ")"
            if name == "ne":
                return f"({args[0]} != {args[1]})"
            if name == "not":
                return f"(not {args[0]})"
            if name == "len":
                return f"({args[0]} | length)"
            return "(" + f" {name} ".join(args) + ")"
        path = e[1]
        names = self.root if path.startswith("$") or not self.in_range else _MESSAGE_FIELDS
        parts = [part for part in path.lstrip("$").split(".") if part]
        if len(parts) != 1 or parts[0] not in names:
            raise _Unconvertible(f"it uses {path!r}")
        return names[parts[0]]

    def nodes(self, items: list[Any], *, stop_at_cut: bool = False) -> str:
        out = []
        for node in items:
            if stop_at_cut and self.cut:
                break
            if isinstance(node, _Text):
                out.append("{{- " + json.dumps(node.text, ensure_ascii=False) + " -}}\n")
            elif isinstance(node, _Output):
                if node.expr[0] not in ("field", "str"):
                    raise _Unconvertible("it prints the result of a function")
                out.append("{{- " + self.expr(node.expr) + " -}}\n")
                if stop_at_cut and node.expr[0] == "field" and node.expr[1].split(".")[-1] == "Response":
                    self.cut = True
            elif node.kind == "if":
                out.append("{%- if " + self.expr(node.expr) + " -%}\n")
                out.append(self.nodes(node.body, stop_at_cut=stop_at_cut))
                if node.orelse and not self.cut:
                    out.append("{%- else -%}\n" + self.nodes(node.orelse, stop_at_cut=stop_at_cut))
                out.append("{%- endif -%}\n")
            else:
                if self.in_range or self.expr(node.expr) != "ns.messages":
                    raise _Unconvertible("it ranges over something other than .Messages")
                self.in_range = True
                out.append("{%- for message in ns.messages -%}\n" + self.nodes(node.body))
                self.in_range = False
                if node.orelse:
                    out.append("{%- else -%}\n" + self.nodes(node.orelse))
                out.append("{%- endfor -%}\n")
        return "".join(out)


_HEADER = "{#- Converted by Palabre from an Ollama Modelfile TEMPLATE (Go); the Go text is kept with the personality. -#}\n"

# Ollama's collate(): consecutive messages of one role are merged; .System joins every system message.
_COLLATE = """{%- set ns = namespace(system='', systems=0, messages=[]) -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- set ns.system = message['content'] if ns.systems == 0 else ns.system ~ '\\n\\n' ~ message['content'] -%}
{%- set ns.systems = ns.systems + 1 -%}
{%- endif -%}
{%- if ns.messages and ns.messages[-1]['role'] == message['role'] and message['role'] != 'tool' -%}
{%- set ns.messages = ns.messages[:-1] + [{'role': message['role'], 'content': ns.messages[-1]['content'] ~ '\\n\\n' ~ message['content']}] -%}
{%- else -%}
{%- set ns.messages = ns.messages + [{'role': message['role'], 'content': message['content']}] -%}
{%- endif -%}
{%- endfor -%}
"""

# Ollama's legacy loop: the template runs once per system/user/assistant group; the last group is written up
# to its {{ .Response }} only (the reply being generated), unless add_generation_prompt is false.
_LEGACY_LOOP = """{%- set ns = namespace(system='', prompt='', response='', role='') -%}
{%- for message in messages -%}
{%- set role = message['role'] -%}
{%- set content = message['content'] -%}
{%- if role == ns.role and role in ('system', 'user', 'assistant') -%}
{%- if role == 'system' -%}{%- set ns.system = ns.system ~ '\\n\\n' ~ content -%}
{%- elif role == 'user' -%}{%- set ns.prompt = ns.prompt ~ '\\n\\n' ~ content -%}
{%- else -%}{%- set ns.response = ns.response ~ '\\n\\n' ~ content -%}{%- endif -%}
{%- elif role == 'system' -%}
{%- if ns.prompt or ns.response -%}
{{- ollama_turn(ns.system, ns.prompt, ns.response) -}}
{%- set ns.prompt = '' -%}{%- set ns.response = '' -%}
{%- endif -%}
{%- set ns.system = content -%}
{%- elif role == 'user' -%}
{%- if ns.response -%}
{{- ollama_turn(ns.system, ns.prompt, ns.response) -}}
{%- set ns.system = '' -%}{%- set ns.response = '' -%}
{%- endif -%}
{%- set ns.prompt = content -%}
{%- elif role == 'assistant' -%}
{%- set ns.response = content -%}
{%- endif -%}
{%- set ns.role = role -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- ollama_open_turn(ns.system, ns.prompt, ns.response) -}}
{%- elif ns.system or ns.prompt or ns.response -%}
{{- ollama_turn(ns.system, ns.prompt, ns.response) -}}
{%- endif -%}
"""


def convert_go_template(source: str) -> GoConversion:
    """Convert an Ollama Go TEMPLATE to an HF-style Jinja chat template (see the module docstring)."""
    try:
        nodes = _parse_go(_lex_go(source))
        names = _fields(nodes)
        if "messages" in names or "document" in names:
            return GoConversion(_HEADER + _COLLATE + _messages_body(nodes))
        if "response" not in names:  # Ollama appends {{ .Response }} to such templates
            nodes.append(_Output(("field", ".Response")))
        full = _Emitter(messages_form=False).nodes(nodes)
        cut = _Emitter(messages_form=False).nodes(nodes, stop_at_cut=True)
    except _Unconvertible as exc:
        return GoConversion(None, f"the TEMPLATE could not be converted to Jinja: {exc}")
    macros = (
        "{%- macro ollama_turn(System, Prompt, Response) -%}\n" + full + "{%- endmacro -%}\n"
        "{%- macro ollama_open_turn(System, Prompt, Response) -%}\n" + cut + "{%- endmacro -%}\n"
    )
    return GoConversion(_HEADER + macros + _LEGACY_LOOP)


def _messages_body(nodes: list[Any]) -> str:
    """Messages form: the nodes after the last top-level range are the generation prompt."""
    emitter = _Emitter(messages_form=True)
    last_range = max(
        (i for i, node in enumerate(nodes) if isinstance(node, _Branch) and node.kind == "range"), default=-1
    )
    if last_range < 0 or last_range == len(nodes) - 1:
        return emitter.nodes(nodes)
    head, tail = nodes[: last_range + 1], nodes[last_range + 1 :]
    return (
        emitter.nodes(head) + "{%- if add_generation_prompt -%}\n" + emitter.nodes(tail) + "{%- endif -%}\n"
    )
