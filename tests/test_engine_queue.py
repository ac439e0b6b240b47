"""The engine's queue at its seam (scripted loader): fair order, a visible position, withdrawal on cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader, ScriptedModel
from webui.core.engine import Engine, GenerationJob
from webui.core.params import GenerationParams
from webui.core.registry import LoaderRegistry

ONE = GenerationParams(max_new_tokens=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_text("Hel|lo")
    engine = Engine(LoaderRegistry({"scripted": ScriptedLoader}), models)
    engine.load("a.gguf", "scripted")
    yield engine
    engine.close()


def _gated(engine: Engine) -> tuple[ScriptedModel, threading.Event]:
    model = engine.require_model().model
    assert isinstance(model, ScriptedModel)
    model.gate = threading.Event()
    return model, model.gate


def _wait_running(engine: Engine, job: GenerationJob) -> None:
    """Until the worker has taken ``job`` (bounded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = engine.queue_snapshot().running
        if running is not None and running.id == job.id:
            return
        time.sleep(0.01)
    raise AssertionError(f"{job.id} never started")


def test_the_snapshot_shows_the_running_job_and_the_queue_in_order(engine: Engine) -> None:
    assert engine.queue_snapshot().running is None
    assert engine.queue_snapshot().activity == "idle"
    _model, gate = _gated(engine)
    first = engine.submit("page prompt", ONE)
    with engine.origin("api", "chatcmpl-1"):
        second = engine.submit("api prompt", ONE)
        third = engine.submit("api prompt 2", ONE)
    fourth = engine.submit("page again", ONE)
    _wait_running(engine, first)

    snapshot = engine.queue_snapshot()
    assert snapshot.activity == "generating"
    assert snapshot.running is not None
    assert (snapshot.running.id, snapshot.running.source, snapshot.running.position) == (first.id, "page", 0)
    assert [(j.id, j.source, j.request_id, j.position, j.state) for j in snapshot.queued] == [
        (second.id, "api", "chatcmpl-1", 1, "queued"),
        (third.id, "api", "chatcmpl-1", 2, "queued"),
        (fourth.id, "page", None, 3, "queued"),
    ]
    gate.set()
    for job in (first, second, third, fourth):
        job.text()
    assert engine.queue_snapshot().running is None
    assert engine.queue_snapshot().queued == ()


def test_labels_apply_only_inside_the_block_and_only_to_that_thread(engine: Engine) -> None:
    other: list[GenerationJob] = []
    with engine.origin("api", "r1"):
        thread = threading.Thread(target=lambda: other.append(engine.submit("x", ONE)))
        thread.start()
        thread.join()
        inside = engine.submit("y", ONE)
    after = engine.submit("z", ONE)
    assert (other[0].source, inside.source, after.source) == ("page", "api", "page")
    assert inside.request_id == "r1" and after.request_id is None
    for job in (*other, inside, after):
        job.text()


def test_a_cancelled_queued_job_leaves_the_queue_at_once_and_the_rest_keep_their_order(
    engine: Engine,
) -> None:
    model, gate = _gated(engine)
    jobs = [engine.submit(f"prompt {i}", ONE) for i in range(4)]
    _wait_running(engine, jobs[0])

    jobs[2].cancel()
    # Its reader is answered now, while the engine is still busy with the first job.
    assert [c.finish_reason for c in jobs[2]] == ["cancelled"]
    assert jobs[2].finish_reason == "cancelled"
    queued = engine.queue_snapshot().queued
    assert [(j.id, j.position) for j in queued] == [(jobs[1].id, 1), (jobs[3].id, 2)]

    gate.set()
    for job in (jobs[0], jobs[1], jobs[3]):
        assert job.text() == "Hel"
    assert model.prompts == ["prompt 0", "prompt 1", "prompt 3"]  # FIFO, the withdrawn one never ran


def test_cancelling_the_running_job_stops_it_and_the_next_one_runs(engine: Engine) -> None:
    _model, gate = _gated(engine)
    running = engine.submit("a", GenerationParams())
    waiting = engine.submit("b", ONE)
    _wait_running(engine, running)
    running.cancel()
    gate.set()
    assert list(running)[-1].finish_reason == "cancelled"
    assert waiting.text() == "Hel"
    assert engine.queue_snapshot().queued == ()


def test_idle_time_counts_only_when_nothing_runs_or_waits(engine: Engine) -> None:
    _model, gate = _gated(engine)
    job = engine.submit("a", ONE)
    assert engine.idle_seconds() is None
    gate.set()
    job.text()
    idle = engine.idle_seconds()
    assert idle is not None and idle >= 0.0
    assert engine.unload_if_idle(3600.0) is False
    assert engine.state is not None
    assert engine.unload_if_idle(0.0) is True
    assert engine.state is None
    assert engine.unload_if_idle(0.0) is False  # nothing left to unload
