"""The Parameters tab's handlers: widget values -> GenerationParams and loader settings, presets, the labels of
parameters the loaded loader ignores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loaders.llama_cpp import LlamaCppSettings
from tests.support.config import make_config
from tests.support.ui import SPECS, values_with
from webui.app import build_service
from webui.core.params import PER_REQUEST_NAMES, GenerationParams
from webui.ui.convert import (
    InputError,
    loader_settings_from_values,
    not_used_label,
    params_from_values,
    parse_list,
    parse_mapping,
    widget_values,
)

# The scripted_service fixture comes from tests/support/ui.py (a plugin named in tests/conftest.py).


# -- widget values -> GenerationParams -------------------------------------------------------------------------


def test_default_widget_values_round_trip_to_the_schema_defaults() -> None:
    assert params_from_values(SPECS, values_with()) == GenerationParams()


def test_every_field_has_a_widget_value() -> None:
    drawn = [name for name in GenerationParams.model_fields if name not in PER_REQUEST_NAMES]
    assert [spec.name for spec in SPECS] == drawn
    assert len(widget_values(SPECS, GenerationParams())) == len(drawn)


def test_slider_floats_become_ints_and_changes_apply() -> None:
    params = params_from_values(SPECS, values_with(max_new_tokens=64.0, temperature=0.0, top_k=1.0))
    assert params.max_new_tokens == 64 and isinstance(params.max_new_tokens, int)
    assert params.temperature == 0.0 and params.top_k == 1


def test_list_fields_accept_json_or_one_item_per_line() -> None:
    assert parse_list("stop", '["\\n###", "User:"]') == ["\n###", "User:"]
    assert parse_list("stop", "###\nUser:\n") == ["###", "User:"]
    assert parse_list("stop", "  ") == []
    params = params_from_values(SPECS, values_with(stop="</s>\nUser:", dry_sequence_breakers='["\\n", ":"]'))
    assert params.stop == ["</s>", "User:"]
    assert params.dry_sequence_breakers == ["\n", ":"]


def test_default_list_widget_text_keeps_newline_items() -> None:
    values = values_with()
    shown = values[[s.name for s in SPECS].index("dry_sequence_breakers")]
    assert parse_list("dry_sequence_breakers", shown) == GenerationParams().dry_sequence_breakers


@pytest.mark.parametrize(
    ("text", "fragment"),
    [('["unclosed"', "not a valid JSON list"), ("[1, 2]", "list of strings")],
)
def test_invalid_list_text_names_the_field(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match="stop") as info:
        params_from_values(SPECS, values_with(stop=text))
    assert fragment in str(info.value)


def test_logit_bias_json_is_checked_by_the_schema() -> None:
    assert parse_mapping("logit_bias", "") == {}
    params = params_from_values(SPECS, values_with(logit_bias='{"50256": -100}'))
    assert params.logit_bias == {50256: -100.0}
    with pytest.raises(InputError, match="logit_bias"):
        params_from_values(SPECS, values_with(logit_bias="{oops"))
    with pytest.raises(InputError, match="logit_bias"):
        params_from_values(SPECS, values_with(logit_bias='{"not-a-token": 1}'))
    with pytest.raises(InputError, match="JSON object"):
        params_from_values(SPECS, values_with(logit_bias="[1]"))


def test_out_of_bounds_and_empty_numbers_give_readable_errors() -> None:
    with pytest.raises(InputError, match=r"Invalid parameters: temperature: .*less than or equal to 5"):
        params_from_values(SPECS, values_with(temperature=9.0))
    with pytest.raises(InputError, match="seed: a number is required"):
        params_from_values(SPECS, values_with(seed=None))
    with pytest.raises(InputError, match="Expected"):
        params_from_values(SPECS, [])


def test_not_used_label_marks_only_fields_the_loader_ignores() -> None:
    honoured = frozenset({"temperature"})
    assert not_used_label("temperature", "remote", honoured) == "temperature"
    assert not_used_label("dry_multiplier", "remote", honoured) == "dry_multiplier (not used by remote)"
    assert not_used_label("dry_multiplier", None, None) == "dry_multiplier"


# -- loader settings ------------------------------------------------------------------------------------------


def test_loader_settings_from_widgets() -> None:
    names = ["n_ctx", "n_threads", "use_mmap", "tensor_split", "rope_freq_base"]
    settings = loader_settings_from_values(LlamaCppSettings, names, [2048.0, None, False, "", 0.0])
    assert settings == {"n_ctx": 2048, "use_mmap": False, "tensor_split": "", "rope_freq_base": 0.0}
    assert isinstance(settings["n_ctx"], int)
    LlamaCppSettings.model_validate(settings)


# -- presets and labels over a Service -----------------------------------------------------------------------


def test_presets_save_apply_delete(tmp_path: Path) -> None:
    from webui.ui.parameters_tab import ParametersTab

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        tab = ParametersTab(service)
        dropdown, status = tab.save_preset("Mine", *values_with(temperature=0.3, stop="###"))
        assert dropdown["value"] == "Mine" and "Mine" in dropdown["choices"] and "saved" in status
        assert service.presets.load("Mine").overlay == {"temperature": 0.3, "stop": ["###"]}
        applied = tab.apply_preset("Mine")
        assert params_from_values(SPECS, applied[:-1]) == GenerationParams(temperature=0.3, stop=["###"])
        with pytest.warns(UserWarning, match="not allowed"):
            _, status = tab.save_preset("../escape", *values_with())
        assert status.startswith("⚠️")
        with pytest.warns(UserWarning, match="bundled"):
            tab.delete_preset("Deterministic")
        dropdown, status = tab.delete_preset("Mine")
        assert dropdown["value"] == "Default" and "Mine" not in dropdown["choices"]
    finally:
        service.close()


def test_parameters_not_used_by_the_loader_are_marked(scripted_service: Any) -> None:
    from webui.ui.parameters_tab import ParametersTab

    labels = {  # the Thinking fields are shown or hidden instead (tests/test_ui_thinking.py)
        spec.name: update["label"]
        for spec, update in zip(SPECS, ParametersTab(scripted_service).labels(), strict=True)
        if spec.group != "Thinking"
    }
    assert labels["max_new_tokens"] == "max_new_tokens"
    assert labels["temperature"] == "temperature (not used by scripted)"
    scripted_service.unload_model()
    assert ParametersTab(scripted_service).labels()[1]["label"] == SPECS[1].name
