"""Schemathesis against the app's own OpenAPI schema: whatever a client sends, no answer is a 5xx.

The app is the one `webui serve` runs (webui.server.create_app: the API routes, access control and the page),
built in-process over a scripted loader so that thousands of generated requests stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.support.fakes import ScriptedLoader
from webui.app import build_service
from webui.config import AppConfig
from webui.core.registry import LoaderRegistry
from webui.core.service import Service

MODEL = "first-chatml.gguf"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real Service over a scripted "GGUF" model (GGUF files infer the llama.cpp loader)."""
    config = AppConfig(user_data_dir=tmp_path_factory.mktemp("schema") / "user_data")
    config.models_dir.mkdir(parents=True)
    (config.models_dir / MODEL).write_text("Hello| there|,| friend|.")
    service = build_service(config, LoaderRegistry({"llama.cpp": ScriptedLoader}))
    service.load_model(MODEL)
    yield service
    service.close()


@pytest.fixture(scope="module")
def app(service: Service) -> Iterator[Any]:
    from webui.server import create_app

    # Schemathesis' ASGI client names the server "testserver": a name the web policy must be told about.
    config = AppConfig(user_data_dir=Path(service.engine.models_dir).parent, allowed_hosts=("testserver",))
    app = create_app(service, config)
    yield app
    app.state.idle_unloader.stop()


def _cases(operation: Any) -> Any:
    """Valid requests, and (where the schema leaves room) invalid ones, which must be 4xx, never 5xx."""
    valid = operation.as_strategy()
    try:
        invalid = operation.as_strategy(GenerationMode.NEGATIVE)
    except Exception:  # nothing to get wrong (no parameters, no body)
        return valid
    return st.one_of(valid, invalid)


def _operations(app: Any) -> list[Any]:
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in api_schema.get_all_operations()]


def test_no_request_makes_a_server_error(app: Any, service: Service) -> None:
    """No 5xx for any request the schema allows (or nearly allows); answers match their declared schema.

    Each operation gets its own bounded Hypothesis run (schemathesis' pytest fixture loader does not work
    with pytest 9, so the operations are walked here); every failure is reported, not just the first.
    """
    operations = _operations(app)
    assert len(operations) >= 20  # OpenAI, Ollama and internal routes are all in the schema
    failures: list[str] = []
    for operation in operations:

        @given(case=_cases(operation))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,  # no .hypothesis folder in the working tree
            derandomize=True,  # the same requests every run: a failure here is reproducible
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failing example is enough
        )
        def check(case: Any) -> None:
            if service.engine.state is None:  # an earlier case unloaded it: keep generation covered
                service.load_model(MODEL)
            case.call_and_validate(
                checks=[not_a_server_error, content_type_conformance, response_schema_conformance]
            )

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
