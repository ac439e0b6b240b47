from __future__ import annotations

import pytest
from pydantic import ValidationError

from webui.core.params import (
    PARAM_NAMES,
    PER_REQUEST_NAMES,
    GenerationParams,
    describe_validation_error,
    field_specs,
)

REQUIRED = {
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
    "repetition_penalty_range", "frequency_penalty", "presence_penalty", "mirostat_mode", "mirostat_tau",
    "mirostat_eta", "xtc_threshold", "xtc_probability", "dry_multiplier", "dry_base", "dry_allowed_length",
    "dry_sequence_breakers", "seed", "stop", "ban_eos_token", "add_bos_token", "skip_special_tokens",
    "truncation_length", "logit_bias", "grammar",
}  # fmt: skip


def test_schema_has_every_sampler_field_the_issue_lists() -> None:
    assert REQUIRED <= PARAM_NAMES


def test_every_field_has_a_description_and_a_widget_kind() -> None:
    specs = field_specs()
    assert {s.name for s in specs} == PARAM_NAMES - PER_REQUEST_NAMES  # logprobs: no widget
    for spec in specs:
        assert spec.description, spec.name
        if spec.kind in ("float", "int"):
            assert spec.minimum is not None and spec.maximum is not None, spec.name
            assert spec.minimum <= spec.default <= spec.maximum, spec.name


def test_bounds_are_enforced_with_a_readable_message() -> None:
    with pytest.raises(ValidationError) as info:
        GenerationParams(temperature=-1, top_p=2)
    message = describe_validation_error(info.value)
    assert "temperature" in message and "top_p" in message


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        GenerationParams.model_validate({"temprature": 0.5})


def test_non_default_is_sparse_and_round_trips() -> None:
    params = GenerationParams().overlay({"temperature": 0.2, "stop": ["\n\n"]})
    assert params.non_default() == {"temperature": 0.2, "stop": ["\n\n"]}
    assert GenerationParams().overlay(params.non_default()) == params


def test_logit_bias_accepts_json_string_keys() -> None:
    assert GenerationParams.model_validate({"logit_bias": {"42": -100}}).logit_bias == {42: -100.0}


def test_empty_stop_strings_are_dropped() -> None:
    assert GenerationParams(stop=["", "###"]).stop == ["###"]
