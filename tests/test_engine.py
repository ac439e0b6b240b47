"""Engine behaviour at its seam, with a scripted loader: queueing, per-job cancel, stop strings, failed loads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader, ScriptedModel
from webui.core.engine import Engine, EngineError
from webui.core.params import GenerationParams
from webui.core.registry import LoaderRegistry


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_text("Hel|lo|,| wor|ld|\nUs|er|:| bye")
    (models / "b.gguf").write_text("x|y|z")
    engine = Engine(LoaderRegistry({"scripted": ScriptedLoader}), models)
    yield engine
    engine.close()


def test_generation_streams_deltas_and_reports_stats(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    job = engine.submit("the prompt", GenerationParams(max_new_tokens=3))
    chunks = list(job)
    assert [c.text for c in chunks] == ["Hel", "lo", ",", ""]
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].stats is not None and chunks[-1].stats.new_tokens == 3
    assert chunks[-1].stats.prompt_tokens == 2


def test_stop_string_split_across_chunks_is_hidden_and_ends_the_reply(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    job = engine.submit("p", GenerationParams(), stops=["\nUser:"])
    assert job.text() == "Hello, world"
    assert job.finish_reason == "stop"


def test_params_stop_strings_are_applied_too(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    assert engine.submit("p", GenerationParams(stop=["wor"])).text() == "Hello, "


def test_cancel_stops_only_that_generation(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    model = engine.require_model().model
    assert isinstance(model, ScriptedModel)
    model.gate = threading.Event()
    first = engine.submit("one", GenerationParams())
    second = engine.submit("two", GenerationParams())
    first.cancel()
    model.gate.set()
    assert list(first)[-1].finish_reason == "cancelled"
    assert second.text() == "Hello, world\nUser: bye"
    assert second.finish_reason == "stop"


def test_jobs_run_in_submission_order(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    jobs = [engine.submit(f"prompt {i}", GenerationParams(max_new_tokens=1)) for i in range(5)]
    for job in jobs:
        job.text()
    model = engine.require_model().model
    assert isinstance(model, ScriptedModel)
    assert model.prompts == [f"prompt {i}" for i in range(5)]


def test_failed_load_keeps_the_previous_model(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    with pytest.raises(EngineError, match="broken"):
        engine.load("b.gguf", "scripted", {"fail": True})
    state = engine.require_model()
    assert state.entry.name == "a.gguf"
    assert engine.submit("p", GenerationParams(max_new_tokens=2)).text() == "Hello"


def test_switching_models_unloads_the_old_one(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    old = engine.require_model().model
    engine.load("b.gguf", "scripted")
    assert isinstance(old, ScriptedModel) and old.unloaded
    assert engine.submit("p", GenerationParams()).text() == "xyz"


def test_clear_errors_for_unknown_model_loader_and_settings(engine: Engine) -> None:
    with pytest.raises(EngineError, match=r"not found\. Available models: a\.gguf, b\.gguf"):
        engine.load("nope.gguf")
    with pytest.raises(EngineError, match="Unknown loader 'exllama'"):
        engine.load("a.gguf", "exllama")
    with pytest.raises(EngineError, match="Invalid scripted settings: fail"):
        engine.load("a.gguf", "scripted", {"fail": "maybe"})
    with pytest.raises(EngineError, match="No model is loaded"):
        engine.submit("p", GenerationParams())


def test_closing_the_stream_early_cancels_it(engine: Engine) -> None:
    engine.load("a.gguf", "scripted")
    stream = engine.generate("p", GenerationParams())
    assert next(stream).text == "Hel"
    stream.close()
    # The worker is free again: the next job runs to its end.
    assert engine.submit("p", GenerationParams(max_new_tokens=2)).text() == "Hello"
