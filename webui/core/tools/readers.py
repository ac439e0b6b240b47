"""Readers for the call syntaxes: each takes the buffer from its marker on and returns a Match, FAIL or None."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from webui.core.tools.base import (
    FAIL,
    Match,
    RawCall,
    Reader,
    Schemas,
    args_text,
    bracket_end,
    calls_from_json,
    calls_from_pythonic,
    loose_end,
    loose_to_json,
    skip_ws,
)


def _optional_suffix(buf: str, end: int, suffix: str, final: bool) -> int | None:
    """Where a call ends when a closing tag may follow it; None while the tail could still become that tag."""
    if not suffix:
        return end
    at = skip_ws(buf, end)
    rest = buf[at:]
    if rest.startswith(suffix):
        return at + len(suffix)
    if not final and suffix.startswith(rest):
        return None  # only whitespace or part of the tag so far: wait
    return end


def json_reader(marker: str, suffix: str = "", prefix: str = "") -> Reader:
    """A JSON object or list right after ``marker`` (after ``prefix`` if given), then an optional ``suffix``."""

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        start = skip_ws(buf, len(marker))
        if prefix:
            if len(buf) - start < len(prefix):
                return None if not final and prefix.startswith(buf[start:]) else FAIL
            if not buf.startswith(prefix, start):
                return FAIL
            start += len(prefix)
        if start >= len(buf):
            return FAIL if final else None
        # Calls are objects with quoted keys: prose such as "{name: x}..." is let go at once, not at its end.
        inner = skip_ws(buf, start + 1)
        if inner < len(buf) and buf[inner] not in ('"' if buf[start] == "{" else '{"'):
            return FAIL
        end = bracket_end(buf, start, schemas.scans)
        if end is None:
            return FAIL if final else None
        if end < 0:
            return FAIL
        calls = calls_from_json(buf[start:end])
        if calls is None:
            return FAIL
        stop = _optional_suffix(buf, end, suffix, final)
        return None if stop is None else Match(calls, stop)

    return read


def until_reader(
    marker: str, ends: tuple[str, ...], body: Callable[[str, Schemas], tuple[RawCall, ...] | None]
) -> Reader:
    """Everything up to the first of ``ends`` is the call body; at the end of the stream, the rest is."""

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        hits = [(buf.find(e, len(marker)), e) for e in ends]
        found = [(i, e) for i, e in hits if i >= 0]
        if found:
            i, e = min(found)
            stop = i + len(e)
        elif final:
            i = stop = len(buf)
        else:
            return None
        calls = body(buf[len(marker) : i], schemas)
        return Match(calls, stop) if calls else FAIL

    return read


def json_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """A body that is JSON: one call object or a list of them."""
    return calls_from_json(text.strip())


_NAMED_JSON = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(\{.*\})\s*", re.S)


def named_json_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """JSON calls, or the bare ``name {...}`` that prompted models (Gemma 3 via LM Studio) often write."""
    calls = calls_from_json(text.strip())
    if calls:
        return calls
    named = _NAMED_JSON.fullmatch(text)
    if named is None:
        return None
    try:
        args = args_text(json.loads(named.group(2)))
    except ValueError:
        return None
    return None if args is None else (RawCall(named.group(1), args),)


def pythonic_or_json_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """LFM2 and Llama 3.2 write ``[f(a=1)]``; some fine-tunes write JSON in the same place."""
    return calls_from_pythonic(text) or calls_from_json(text.strip())


_PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)
_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.S)


def xml_params_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """Qwen3-Coder / Seed-OSS: ``<function=f><parameter=k>\\nv\\n</parameter></function>``; strings unquoted."""
    calls: list[RawCall] = []
    for fn in _FUNCTION.finditer(text):
        name = fn.group(1).strip()
        args = {}
        for p in _PARAM.finditer(fn.group(2)):
            raw = p.group(2)
            # The template puts the value on its own line; those two newlines are layout, not value.
            raw = raw[1:] if raw.startswith("\n") else raw
            raw = raw[:-1] if raw.endswith("\n") else raw
            args[p.group(1).strip()] = schemas.coerce(name, p.group(1).strip(), raw)
        calls.append(RawCall(name, json.dumps(args, ensure_ascii=False)))
    return tuple(calls) if calls else None


_ARG_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


def glm_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """GLM-4.5/4.6: the name, then ``<arg_key>k</arg_key><arg_value>v</arg_value>`` pairs."""
    first = text.find("<arg_key>")
    name = (text if first < 0 else text[:first]).strip()
    if not name or any(c in name for c in "<>{}\n"):
        return None
    args = {k.strip(): schemas.coerce(name, k.strip(), v) for k, v in _ARG_PAIR.findall(text)}
    return (RawCall(name, json.dumps(args, ensure_ascii=False)),)


def tool_call_tag_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """A ``<tool_call>`` body in whichever shape it is: JSON (Hermes), XML parameters (Qwen3-Coder) or GLM."""
    stripped = text.strip()
    if stripped.startswith("<function="):
        return xml_params_body(stripped, schemas)
    if stripped.startswith(("{", "[")):
        return json_body(stripped, schemas)
    return glm_body(stripped, schemas)


def tool_call_tag_reader(marker: str, close: str) -> Reader:
    """``<tool_call>`` with JSON (closing tag optional, Granite 3.1 omits it) or a tagged body (closing tag needed)."""
    as_json = json_reader(marker, close)
    tagged = until_reader(marker, (close,), tool_call_tag_body)

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        start = skip_ws(buf, len(marker))
        if start >= len(buf):
            return FAIL if final else None
        return as_json(buf, final, schemas) if buf[start] in "{[" else tagged(buf, final, schemas)

    return read


_MISTRAL_NAME = re.compile(r"[A-Za-z0-9_.\-]*")


def mistral_reader(buf: str, final: bool, schemas: Schemas) -> Match | None:
    """``[TOOL_CALLS][{...}]`` (v0.3/Nemo) or ``[TOOL_CALLS]f[CALL_ID]id[ARGS]{...}`` (Small 3.2 and later)."""
    marker = "[TOOL_CALLS]"
    start = skip_ws(buf, len(marker))
    if start >= len(buf):
        return FAIL if final else None
    if buf[start] == "[" and not buf.startswith("[ARGS]", start):
        return json_reader(marker)(buf, final, schemas)
    name_end = _MISTRAL_NAME.match(buf, start)
    i = name_end.end() if name_end else start
    name = buf[start:i]
    call_id = ""
    if buf.startswith("[CALL_ID]", i):
        j = buf.find("[ARGS]", i)
        if j < 0:
            return FAIL if final else None
        call_id = buf[i + len("[CALL_ID]") : j].strip()
        i = j
    if not buf.startswith("[ARGS]", i):
        waiting = i == len(buf) or "[ARGS]".startswith(buf[i:]) or "[CALL_ID]".startswith(buf[i:])
        return None if waiting and not final else FAIL
    if not name:
        return FAIL
    args_start = skip_ws(buf, i + len("[ARGS]"))
    end = bracket_end(buf, args_start, schemas.scans)
    if end is None:
        return FAIL if final else None
    if end < 0:
        return FAIL
    try:
        args = args_text(json.loads(buf[args_start:end]))
    except ValueError:
        return FAIL
    return FAIL if args is None else Match((RawCall(name, args, call_id),), end)


DEEPSEEK_OPENERS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool_calls_begin｜>",
    "<｜tool calls begin｜>",
    "<｜tool\\_calls\\_begin｜>",
    "<｜tool▁calls｜>",
)
_DS_CALL = re.compile(r"<｜tool▁call▁begin｜>(.*?)<｜tool▁sep｜>(.*?)(?:<｜tool▁call▁end｜>|$)", re.S)
_DS_FENCE = re.compile(r"^\s*([^\n`]+?)\s*\n?```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def deepseek_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """V3/R1: ``function<sep>f\\n```json{...}```; V3.1: ``f<sep>{...}``, each between call begin and end."""
    calls: list[RawCall] = []
    for kind, rest in _DS_CALL.findall(text):
        if kind.strip() == "function":
            fence = _DS_FENCE.match(rest)
            if fence is None:
                return None
            name, raw = fence.group(1), fence.group(2)
        else:
            name, raw = kind.strip(), rest.strip()
        try:
            args = args_text(json.loads(raw))
        except ValueError:
            return None
        if args is None or not name:
            return None
        calls.append(RawCall(name.strip(), args))
    return tuple(calls) if calls else None


_KIMI_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*([^<]+?)\s*<\|tool_call_argument_begin\|>(.*?)\s*(?:<\|tool_call_end\|>|$)",
    re.S,
)


def kimi_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """``functions.f:0<arg_begin>{...}``: the id is the whole ``functions.NAME:IDX`` and the template wants it back."""
    calls: list[RawCall] = []
    for call_id, raw in _KIMI_CALL.findall(text):
        name = call_id.split(":", 1)[0]
        name = name.removeprefix("functions.")
        try:
            args = args_text(json.loads(raw))
        except ValueError:
            return None
        if args is None or not name:
            return None
        calls.append(RawCall(name, args, call_id))
    return tuple(calls) if calls else None


def loose_call_reader(marker: str, close: str, quote: str) -> Reader:
    """Gemma 4 / FunctionGemma: ``call:f{k:<q>v<q>}`` then the closing tag (optional at the end of the stream)."""

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        start = skip_ws(buf, len(marker))
        head = "call:"
        if len(buf) - start < len(head):
            return None if not final and head.startswith(buf[start:]) else FAIL
        if not buf.startswith(head, start):
            return FAIL
        brace = buf.find("{", start)
        if brace < 0:
            return FAIL if final or "\n" in buf[start:] else None
        name = buf[start + len(head) : brace].strip()
        end = loose_end(buf, brace, quote)
        if end is None:
            return FAIL if final else None
        if end < 0 or not name:
            return FAIL
        try:
            args = args_text(loose_to_json(buf[brace:end], quote))
        except ValueError:
            return FAIL
        if args is None:
            return FAIL
        stop = _optional_suffix(buf, end, close, final)
        return None if stop is None else Match((RawCall(name, args),), stop)

    return read


_HARMONY_TO = re.compile(r"to=functions\.([^\s<]+)")


def harmony_reader(marker: str) -> Reader:
    """gpt-oss: a header up to ``<|message|>``; with ``to=functions.f`` the message up to ``<|call|>`` is the call.

    Any other header (a final answer, a preamble) is markup only: it is dropped and its message stays content.
    """

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        body = buf.find("<|message|>")
        if body < 0:
            return FAIL if final else None
        header = buf[len(marker) : body]
        if "<|start|>" in header or "<|end|>" in header:
            return FAIL  # a malformed header: keep the text rather than swallow a whole turn
        target = _HARMONY_TO.search(header)
        body += len("<|message|>")
        if target is None:
            return Match((), body)
        close = buf.find("<|call|>", body)
        if close < 0 and not final:
            return None
        raw = buf[body:] if close < 0 else buf[body:close]
        try:
            args = args_text(json.loads(raw))
        except ValueError:
            return FAIL
        stop = len(buf) if close < 0 else close + len("<|call|>")
        return FAIL if args is None else Match((RawCall(target.group(1), args),), stop)

    return read


def drop_reader(marker: str) -> Reader:
    """A lone control token (gpt-oss ``<|end|>``): markup, never content."""

    def read(buf: str, final: bool, schemas: Schemas) -> Match | None:
        return Match((), len(marker))

    return read


def python_tag_body(text: str, schemas: Schemas) -> tuple[RawCall, ...] | None:
    """Llama 3.x after ``<|python_tag|>``: a built-in ``x.call(k=v)``, a JSON call, or code for the interpreter."""
    stripped = text.strip()
    if not stripped:
        return None
    calls = calls_from_pythonic(stripped) or calls_from_json(stripped)
    if calls:
        return calls
    # Bare code is the code_interpreter built-in; llama.cpp names that tool "python".
    return (RawCall("python", json.dumps({"code": stripped}, ensure_ascii=False)),)


_LIST_OPENING = re.compile(r"\[\s*(?:\{|[A-Za-z_][\w.]*\s*\()")
_LIST_OPENING_SO_FAR = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?")


def list_reader(buf: str, final: bool, schemas: Schemas) -> Match | None:
    """A bracketed list of calls, pythonic or JSON, as the whole of a reply's opening."""
    # Decide from the first characters: a reply that opens with "[Note] it's..." must not wait for its end.
    if not _LIST_OPENING.match(buf):
        so_far = _LIST_OPENING_SO_FAR.match(buf)
        return None if not final and so_far and so_far.end() == len(buf) else FAIL
    end = bracket_end(buf, 0, schemas.scans)
    if end is None:
        return FAIL if final else None
    if end < 0:
        return FAIL
    calls = pythonic_or_json_body(buf[:end], schemas)
    return Match(calls, end) if calls else FAIL
