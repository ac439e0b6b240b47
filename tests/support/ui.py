"""Helpers and fixtures shared by the unit tests of the page's handlers (tests/test_ui_*_handlers.py and co).

The fixtures reach the test modules as a pytest plugin: tests/conftest.py names this module in ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from webui.app import build_service
from webui.core.params import GenerationParams, field_specs
from webui.ui.convert import DETECTED_TEMPLATE, widget_values

SPECS = field_specs()

HISTORY = [
    {"role": "user", "content": "a"},
    {"role": "assistant", "content": "b"},
    {"role": "user", "content": "c"},
]


def values_with(**changes: Any) -> list[Any]:
    """Default widget values with some widgets changed (as the page would send them)."""
    values = widget_values(SPECS, GenerationParams())
    index = {spec.name: i for i, spec in enumerate(SPECS)}
    for name, value in changes.items():
        values[index[name]] = value
    return values


def chat_values(**param_changes: Any) -> list[Any]:
    """No personality, chat settings (instruct mode, detected template), then the parameter widgets."""
    return [
        "(none)",
        "instruct",
        "",
        "Assistant",
        "You",
        "",
        "",
        DETECTED_TEMPLATE,
        *values_with(**param_changes),
    ]


def last_prompt(service: Any) -> str:
    """The last prompt the scripted model was given."""
    prompts: list[str] = service.engine.state.model.prompts
    return prompts[-1]


@pytest.fixture
def scripted_service(tmp_path: Path) -> Iterator[Any]:
    """A Service with the scripted model a.gguf ("Hello!") loaded; llama.cpp offered beside it."""
    from tests.support.fakes import ScriptedLoader
    from webui.core.registry import LoaderRegistry

    config = make_config(tmp_path / "user_data")
    (config.models_dir / "a.gguf").write_text("Hel|lo|!")
    registry = LoaderRegistry({"scripted": ScriptedLoader, "llama.cpp": "loaders.llama_cpp:LlamaCppLoader"})
    service = build_service(config, registry)
    service.load_model("a.gguf", "scripted")
    yield service
    service.close()


@pytest.fixture
def settings_file(scripted_service: Any) -> Any:
    """The settings.yaml of the scripted Service's user_data."""
    from webui.core.settings import SettingsFile

    return SettingsFile(Path(scripted_service.engine.models_dir).parent / "settings.yaml")
