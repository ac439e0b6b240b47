"""The Service facade at its seam (scripted loader): reply tidying and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader
from webui.config import PROJECT_ROOT
from webui.core.engine import EngineError
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.prompts import ChatMessage
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, Service
from webui.core.templates.store import TemplateStore


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "chatty-chatml.gguf").write_text(" | Hi|,|  there|\n| |")
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=models,
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates"),
    )
    service.load_model("chatty-chatml.gguf", "scripted")
    yield service
    service.close()


def test_chat_reply_loses_its_leading_and_trailing_whitespace(service: Service) -> None:
    history = [ChatMessage("user", "hello")]
    stream = service.stream_chat_reply(history, ChatSettings(mode="chat"), GenerationParams())
    deltas = [c.text for c in stream]
    assert "".join(deltas) == "Hi,  there"
    assert deltas[:2] == ["", "Hi"]  # streamed as it comes, not held to the end


def test_continue_keeps_the_leading_space(service: Service) -> None:
    history = [ChatMessage("user", "hello"), ChatMessage("assistant", "Well")]
    stream = service.stream_chat_reply(history, ChatSettings(), GenerationParams(), continue_last=True)
    assert "".join(c.text for c in stream) == "  Hi,  there"


def test_prompt_problems_become_engine_errors(service: Service) -> None:
    with pytest.raises(EngineError, match="Unknown-Template"):
        service.build_chat_prompt(
            [ChatMessage("user", "x")], ChatSettings(template="Unknown-Template"), GenerationParams()
        )
    with pytest.raises(EngineError, match="continue"):
        service.build_chat_prompt(
            [ChatMessage("user", "x")], ChatSettings(), GenerationParams(), continue_last=True
        )


def test_detected_template_comes_from_the_file_name(service: Service) -> None:
    assert service.detection is not None
    assert (service.detection.template.name, service.detection.reason) == ("ChatML", "file name")
    assert 'template "ChatML"' in service.status_line()


def test_the_built_prompt_carries_the_context_and_the_room_kept_for_the_reply(service: Service) -> None:
    history = [ChatMessage("user", "hello")]
    built = service.build_chat_prompt(history, ChatSettings(), GenerationParams(max_new_tokens=512))
    assert (built.context_tokens, built.reply_tokens) == (4096, 512)
    limited = GenerationParams(truncation_length=1024, max_new_tokens=900)
    built = service.build_chat_prompt(history, ChatSettings(), limited)
    assert (built.context_tokens, built.reply_tokens) == (1024, 512)  # at most half the context
    assert service.prompt_budget(GenerationParams(truncation_length=9999)).context_tokens == 4096
    assert service.prompt_budget(limited).prompt_tokens == 512


def test_a_raw_completion_keeps_its_whitespace_and_the_prompt_as_sent(service: Service) -> None:
    stream = service.stream_completion("Once", GenerationParams())
    assert stream.text() == "  Hi,  there\n "
    assert stream.prompt == "Once" and stream.warnings == [] and stream.finish_reason is not None


def test_unloading_forgets_the_detected_template(service: Service) -> None:
    service.unload_model()
    assert service.detection is None and service.loaded is None
    assert service.status_line() == "No model loaded."
    with pytest.raises(EngineError):
        service.prompt_budget(GenerationParams())
