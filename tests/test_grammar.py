"""JSON schema -> GBNF (webui/core/grammar.py): the rules a schema yields, clear errors, Ollama's "json", and one
real reply kept to a schema by llama.cpp's grammar sampler."""

from __future__ import annotations

import json
import re
import sys

import pytest

from webui.core.grammar import (
    JSON_OBJECT_GBNF,
    ConverterMissing,
    GrammarError,
    format_grammar,
    json_grammar,
    schema_to_gbnf,
)
from webui.core.params import GenerationParams
from webui.core.service import Service

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "nickname": {"type": "string"},
    },
    "required": ["name", "age"],
}


def rules(grammar: str) -> dict[str, str]:
    """The grammar's rules by name (each rule on one line, as the converter writes them)."""
    found = dict(re.findall(r"^([\w-]+) ::= (.*)$", grammar, re.MULTILINE))
    assert "root" in found, grammar
    return found


def test_required_properties_come_first_and_optional_ones_may_be_left_out() -> None:
    found = rules(schema_to_gbnf(PERSON))
    assert found["root"] == '"{" space name-kv "," space age-kv ( "," space ( nickname-kv ) )? "}" space'
    assert found["age-kv"] == '"\\"age\\"" space ":" space integer'
    assert found["nickname-kv"].endswith("string")


def test_an_enum_allows_exactly_its_values() -> None:
    grammar = schema_to_gbnf({"enum": ["red", "green", 3]})
    assert rules(grammar)["root"] == '"\\"red\\"" | "\\"green\\"" | "3"'


def test_an_array_of_items_repeats_the_item_rule() -> None:
    grammar = schema_to_gbnf({"type": "array", "items": {"type": "integer"}, "minItems": 1})
    root = rules(grammar)["root"]
    assert root.startswith('"[" space integer') and '("," space integer)*' in root


def test_a_nested_object_gets_a_rule_of_its_own() -> None:
    schema = {
        "type": "object",
        "properties": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "required": ["address"],
    }
    found = rules(schema_to_gbnf(schema))
    assert found["root"] == '"{" space address-kv "}" space'
    assert found["address-kv"].endswith("space address")
    assert "address-city-kv" in found["address"] and found["address-city-kv"].endswith("string")


def test_a_schema_the_converter_cannot_handle_is_a_clear_error() -> None:
    with pytest.raises(GrammarError, match="cannot be turned into a grammar: Unrecognized schema"):
        schema_to_gbnf({"type": "colour"})
    with pytest.raises(GrammarError, match="Fetching remote schemas is not allowed"):
        json_grammar({"$ref": "https://example.com/schema.json"})


def test_json_mode_and_ollama_s_json_format_allow_any_object() -> None:
    assert json_grammar(None) == json_grammar({}) == JSON_OBJECT_GBNF
    assert format_grammar("json") == JSON_OBJECT_GBNF
    assert format_grammar("") is None and format_grammar(None) is None
    assert format_grammar(PERSON) == schema_to_gbnf(PERSON)
    with pytest.raises(GrammarError, match="Unknown format"):
        format_grammar("yaml")


def test_without_llama_cpp_a_schema_falls_back_to_any_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_grammar", None)  # import fails as if not installed
    with pytest.raises(ConverterMissing, match="llama-cpp extra"):
        schema_to_gbnf(PERSON)
    assert json_grammar(PERSON) == JSON_OBJECT_GBNF


@pytest.mark.slow
def test_llama_cpp_keeps_a_real_reply_to_the_schema(smol_service: Service) -> None:
    prompt = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"
    params = GenerationParams(temperature=0, max_new_tokens=60, grammar=schema_to_gbnf(PERSON))
    reply = json.loads(smol_service.stream_completion(prompt, params).text())
    assert isinstance(reply["name"], str) and isinstance(reply["age"], int)
    assert set(reply) <= {"name", "age", "nickname"}
