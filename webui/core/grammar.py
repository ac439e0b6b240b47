"""JSON schema -> GBNF: grammars that keep a reply to JSON (OpenAI's response_format, Ollama's ``format``, and
tool calls next), for the loaders whose capabilities honour ``grammar``.

The schema converter is llama.cpp's own (pure Python, shipped in llama-cpp-python), imported when a schema is
first converted: the core imports without the llama-cpp extra, and llama.cpp's converter knows every schema
feature its grammar engine can enforce ($ref, anyOf, patterns, formats ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# A JSON object, after llama.cpp's grammars/json.gbnf; used for JSON mode and when no converter is installed.
JSON_OBJECT_GBNF = r"""root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws
array  ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" ws
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,3} )? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""


class GrammarError(ValueError):
    """A JSON schema that cannot be turned into a grammar; the message says why, for the user."""


class ConverterMissing(GrammarError):
    """llama-cpp-python, whose schema converter this module uses, is not installed."""


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of the JSON values ``schema`` allows.

    Raises GrammarError for a schema the converter does not handle, and ConverterMissing when
    llama-cpp-python is not installed.
    """
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError as exc:
        raise ConverterMissing(
            "Turning a JSON schema into a grammar needs llama-cpp-python: install Palabre's llama-cpp extra."
        ) from exc
    text = json.dumps(_with_integer_ranges(json.loads(json.dumps(schema))))
    try:
        return str(json_schema_to_gbnf(text))
    except Exception as exc:  # the converter raises plain exceptions (assert, KeyError ...) for what it lacks
        raise GrammarError(f"The JSON schema cannot be turned into a grammar: {exc}") from exc


# Integer ranges up to this size are written out as an enum; the converter ignores minimum and maximum.
_MAX_ENUMERATED_RANGE = 1024


def _with_integer_ranges(schema: Any) -> Any:
    """The schema with each small bounded integer range turned into the enum of its values.

    llama-cpp-python's converter drops ``minimum`` / ``maximum``, so ``{"type": "integer", "minimum": 1,
    "maximum": 7}`` would allow any integer; as an enum the grammar allows exactly 1 to 7.
    """
    if isinstance(schema, list):
        return [_with_integer_ranges(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _with_integer_ranges(value) for key, value in schema.items()}
    if out.get("type") == "integer" and "enum" not in out:
        low = out.get("minimum")
        high = out.get("maximum")
        if isinstance(out.get("exclusiveMinimum"), int) and not isinstance(out.get("exclusiveMinimum"), bool):
            low = out["exclusiveMinimum"] + 1
        if isinstance(out.get("exclusiveMaximum"), int) and not isinstance(out.get("exclusiveMaximum"), bool):
            high = out["exclusiveMaximum"] - 1
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            first, last = math.ceil(low), math.floor(high)
            if 0 <= last - first < _MAX_ENUMERATED_RANGE:
                out["enum"] = list(range(first, last + 1))
    return out


def schema_rules(schemas: Mapping[str, Mapping[str, Any]]) -> str:
    """GBNF rules for several JSON schemas at once, each named by its key (no ``root``: the caller writes it).

    Keys must be GBNF rule names (letters, digits and dashes). Raises as ``schema_to_gbnf``.
    """
    try:
        from llama_cpp.llama_grammar import SchemaConverter
    except ImportError as exc:
        raise ConverterMissing(
            "Turning a JSON schema into a grammar needs llama-cpp-python: install Palabre's llama-cpp extra."
        ) from exc
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        for name, schema in schemas.items():
            resolved = converter.resolve_refs(_with_integer_ranges(json.loads(json.dumps(schema))), name)
            converter.visit(resolved, name)
        return str(converter.format_grammar())
    except Exception as exc:  # the converter raises plain exceptions (assert, KeyError ...) for what it lacks
        raise GrammarError(f"A tool's JSON schema cannot be turned into a grammar: {exc}") from exc


def json_grammar(schema: Mapping[str, Any] | None) -> str:
    """A grammar for replies that are a JSON object, following ``schema`` when one is given.

    Without a schema (JSON mode), and when no converter is installed (a remote loader without the llama-cpp
    extra), the grammar allows any JSON object. A schema the converter refuses raises GrammarError.
    """
    if not schema:
        return JSON_OBJECT_GBNF
    try:
        return schema_to_gbnf(schema)
    except ConverterMissing:
        return JSON_OBJECT_GBNF


def format_grammar(fmt: str | Mapping[str, Any] | None) -> str | None:
    """The grammar of Ollama's ``format``: ``"json"`` for any JSON object, a JSON schema for its shape;
    None when no format is asked (``""`` or absent)."""
    if not fmt:
        return None
    if isinstance(fmt, str):
        if fmt != "json":
            raise GrammarError(f'Unknown format {fmt!r}: use "json" or a JSON schema.')
        return JSON_OBJECT_GBNF
    return json_grammar(fmt)
