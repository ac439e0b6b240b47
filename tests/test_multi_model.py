"""Several models loaded at once, at the seams (scripted loader): one lane per model, least-recently-used
eviction within the memory budget and the count limit, the page's model apart from the API's, per-model
templates, keep_alive and idle unloads, and the serve options. The real server: test_multi_model_serve.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.fakes import ScriptedLoader, ScriptedModel, ScriptedSettings, scripted_service
from tests.support.machines import GB, FakeMachine, machine
from tests.support.waiting import eventually
from webui.api.ollama_routes import install_ollama_routes
from webui.api.openai_routes import install_openai_routes
from webui.api.serving import Serving
from webui.api.streams import Run
from webui.cli import build_parser, config_from_args
from webui.config import PROJECT_ROOT
from webui.core.engine import Engine, EngineError
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, LoadedState, Service
from webui.core.templates.store import TemplateStore

SHORT = GenerationParams(max_new_tokens=3)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name, pieces in {"a.gguf": "a|a|a", "b.gguf": "b|b|b", "c.gguf": "c|c|c", "d.gguf": "d|d|d"}.items():
        (folder / name).write_text(pieces)
    return folder


def make_engine(models: Path, budget: int | None = None, max_loaded: int | None = None) -> Engine:
    return Engine(
        LoaderRegistry({"scripted": ScriptedLoader}), models, memory_budget=budget, max_loaded=max_loaded
    )


@pytest.fixture
def engine(models: Path) -> Iterator[Engine]:
    engine = make_engine(models, budget=100)
    yield engine
    engine.close()


def loaded_names(engine: Engine) -> set[str]:
    return {state.entry.name for state in engine.loaded()}


def answer(engine: Engine, model: str) -> str:
    with engine.target(model):
        return engine.submit("p", SHORT).text()


def test_each_model_runs_its_own_generations(engine: Engine) -> None:
    engine.load("a.gguf", "scripted", memory_bytes=40)
    engine.load("b.gguf", "scripted", memory_bytes=40, page=False)
    assert loaded_names(engine) == {"a.gguf", "b.gguf"}
    a_model = engine.state_of("a.gguf")
    assert a_model is not None and isinstance(a_model.model, ScriptedModel)
    a_model.model.gate = threading.Event()  # a's generation holds on its first token
    page_job = engine.submit("p", SHORT)  # the page's model: a
    assert page_job.model == "a.gguf"
    # b answers while a's generation is still running: it does not wait behind it.
    assert answer(engine, "b.gguf") == "bbb"
    assert {job.model for job in engine.queue_snapshot().running_jobs} == {"a.gguf"}
    a_model.model.gate.set()
    assert page_job.text() == "aaa"
    assert engine.status().loads == 2 and engine.status().evictions == 0


def test_least_recently_used_models_make_room_only_when_the_budget_says_so(engine: Engine) -> None:
    engine.load("a.gguf", "scripted", memory_bytes=40)
    engine.load("b.gguf", "scripted", memory_bytes=40, page=False)
    answer(engine, "a.gguf")  # a is used after b was loaded: b is now the least recently used
    engine.load("d.gguf", "scripted", memory_bytes=15, page=False)  # 95 of 100: no eviction
    assert loaded_names(engine) == {"a.gguf", "b.gguf", "d.gguf"}
    assert engine.status().evictions == 0
    answer(engine, "d.gguf")
    engine.load("c.gguf", "scripted", memory_bytes=40, page=False)  # 135: b (40) goes, and only b
    assert loaded_names(engine) == {"a.gguf", "c.gguf", "d.gguf"}
    assert engine.status().evictions == 1
    assert engine.status().model == "a.gguf"  # the page keeps its model
    with engine.target("b.gguf"), pytest.raises(EngineError, match="No model is loaded"):
        engine.submit("p", SHORT)


def test_an_idle_model_goes_before_a_busy_one_even_if_used_later(engine: Engine) -> None:
    engine.load("a.gguf", "scripted", memory_bytes=50)
    engine.load("b.gguf", "scripted", memory_bytes=50, page=False)
    a_model = engine.state_of("a.gguf")
    assert a_model is not None and isinstance(a_model.model, ScriptedModel)
    a_model.model.gate = threading.Event()
    busy = engine.submit("p", SHORT)  # a generates (and was used before b was loaded)
    eventually(lambda: engine.queue_snapshot().running is not None, "a's generation runs")
    engine.load("c.gguf", "scripted", memory_bytes=50, page=False)
    assert loaded_names(engine) == {"a.gguf", "c.gguf"}
    a_model.model.gate.set()
    assert busy.text() == "aaa"


def test_the_count_limit_and_a_failed_load(models: Path) -> None:
    engine = make_engine(models, max_loaded=2)
    try:
        engine.load("a.gguf", "scripted")
        engine.load("b.gguf", "scripted", page=False)
        with pytest.raises(EngineError, match="broken"):
            engine.load("c.gguf", "scripted", {"fail": True}, page=False)
        assert loaded_names(engine) == {"a.gguf", "b.gguf"}  # a failed load takes nothing away
        answer(engine, "a.gguf")
        engine.load("c.gguf", "scripted", page=False)
        assert loaded_names(engine) == {"a.gguf", "c.gguf"}
    finally:
        engine.close()


def test_unloading_one_model_keeps_the_others_and_the_page_moves_on(engine: Engine) -> None:
    engine.load("a.gguf", "scripted", memory_bytes=10)
    engine.load("b.gguf", "scripted", memory_bytes=10, page=False)
    assert [model.page for model in engine.status().models] == [True, False]
    engine.unload("b.gguf")
    assert loaded_names(engine) == {"a.gguf"} and engine.status().model == "a.gguf"
    engine.load("b.gguf", "scripted", memory_bytes=10, page=False)
    engine.unload()  # the page's model
    assert loaded_names(engine) == {"b.gguf"} and engine.status().model == "b.gguf"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = scripted_service(
        tmp_path, {"first-chatml.gguf": "Hello| there|.", "second-llama3.gguf": "Other| words"}
    )
    yield service
    service.close()


def _client(serving: Serving) -> TestClient:
    app = FastAPI()
    install_openai_routes(app, serving)
    install_ollama_routes(app, serving)
    return TestClient(app)


def test_an_api_request_loads_its_model_beside_the_page_s(service: Service) -> None:
    serving = Serving(service)
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    with _client(serving) as client:
        other = client.post("/v1/chat/completions", json={**chat, "model": "second-llama3"})
        assert other.json()["choices"][0]["message"]["content"] == "Other words"
        page = service.stream_chat_reply([], ChatSettings(mode="instruct"), SHORT)
        assert "".join(chunk.text for chunk in page) == "Hello there."  # the page keeps its model
        again = client.post("/v1/chat/completions", json={**chat, "model": "second-llama3"})
        assert again.json()["choices"][0]["message"]["content"] == "Other words"
        listed = client.get("/api/ps").json()["models"]
    assert [model["name"] for model in listed] == ["first-chatml.gguf", "second-llama3.gguf"]
    assert service.engine_status().loads == 2
    # Each model keeps the template detected for it; a thread targeting one sees its own.
    first, second = service.detection_of("first-chatml.gguf"), service.detection_of("second-llama3.gguf")
    assert first is not None and second is not None
    with service.job_origin("api", None, "second-llama3.gguf"):
        assert service.detection == second
        assert service.loaded is not None and service.loaded.entry.name == "second-llama3.gguf"
    assert service.detection == first


def test_keep_alive_and_idle_unloads_are_per_model(service: Service) -> None:
    serving = Serving(service, idle_unload_s=None)
    serving.idle.start()
    body = {"prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    try:
        with _client(serving) as client:
            kept = client.post("/api/generate", json={**body, "model": "first-chatml"})
            assert kept.status_code == 200, kept.text
            done = client.post("/api/generate", json={**body, "model": "second-llama3", "keep_alive": 0})
            assert done.json()["response"] == "Other words"
            eventually(
                lambda: service.loaded_model("second-llama3.gguf") is None, "keep_alive 0 unloads that model"
            )
            assert service.loaded_model("first-chatml.gguf") is not None  # the other one stays
            assert [m["name"] for m in client.get("/api/ps").json()["models"]] == ["first-chatml.gguf"]
            # The model the idle watcher unloaded comes back on the next request naming it.
            back = client.post("/api/generate", json={**body, "model": "second-llama3"})
            assert back.json()["response"] == "Other words"
            assert len(client.get("/api/ps").json()["models"]) == 2
            # keep_alive 0 on an empty request unloads only the named model, at once.
            client.post("/api/generate", json={"model": "second-llama3", "keep_alive": 0})
            assert service.loaded_model("second-llama3.gguf") is None
            assert service.loaded is not None and service.loaded.entry.name == "first-chatml.gguf"
    finally:
        serving.idle.stop()


def test_the_page_s_model_comes_back_after_its_idle_unload_while_another_stays(service: Service) -> None:
    service.load_model("second-llama3.gguf", page=False)
    assert service.unload_if_idle(0.0, "first-chatml.gguf")
    assert service.engine_status().model is None  # the page shows why its model is gone
    assert service.engine_status().idle_unload is not None
    reply = service.stream_completion("x", SHORT)
    assert reply.text() == "Hello there."
    assert service.engine_status().model == "first-chatml.gguf"
    assert {state.entry.name for state in service.loaded_models()} == {
        "first-chatml.gguf",
        "second-llama3.gguf",
    }


def test_the_serve_options() -> None:
    args = build_parser().parse_args(["serve", "--model-memory-budget", "8GiB", "--max-loaded-models", "2"])
    config = config_from_args(args)
    assert config.model_memory_budget == 8 * 2**30 and config.max_loaded_models == 2
    assert config_from_args(build_parser().parse_args(["serve"])).model_memory_budget is None
    assert (
        config_from_args(
            build_parser().parse_args(["serve", "--model-memory-budget", "1.5GB"])
        ).model_memory_budget
        == 1_500_000_000
    )
    for bad in (
        ["--model-memory-budget", "lots"],
        ["--model-memory-budget", "0"],
        ["--max-loaded-models", "0"],
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])


def test_the_default_budget_is_what_the_machine_holds_and_an_unloaded_model_is_not_idle(
    service: Service,
) -> None:
    service.machine = FakeMachine(machine(available_gb=3.0))
    assert service.memory_budget() == 3 * GB  # the scripted models hold nothing they can be measured by
    assert service.idle_seconds("first-chatml.gguf") is not None
    service.unload_model()
    assert service.idle_seconds("first-chatml.gguf") is None  # not loaded: the idle watcher leaves it alone
    assert service.engine_status().models == ()


class GatedLoader(ScriptedLoader):
    """Scripted models whose load waits on ``GatedLoader.gate`` (a slow load, held as long as a test needs)."""

    gate = threading.Event()

    def load(self, path: Path, settings: ScriptedSettings) -> ScriptedModel:
        if path.name.startswith("slow"):
            assert GatedLoader.gate.wait(timeout=60)
        return super().load(path, settings)


def test_requests_for_a_loaded_model_go_on_while_another_model_loads(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "fast.gguf").write_text("f|a|s|t")
    (folder / "slow.gguf").write_text("s|l|o|w")
    service = Service(
        LoaderRegistry({"llama.cpp": GatedLoader}),
        models_dir=folder,
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates"),
    )
    serving = Serving(service)
    GatedLoader.gate.clear()
    try:
        service.load_model("fast.gguf")
        loading = threading.Thread(target=serving.start, args=("slow", True, lambda state: []))
        loading.start()
        eventually(lambda: service.engine_status().loading == "slow.gguf", "the slow model is loading")

        def completion(state: LoadedState) -> list[Run]:
            return serving.completion_runs(["x"], SHORT)

        started = serving.start("fast", True, completion)  # not held behind the slow load
        assert started.model == "fast.gguf"
        assert "".join(chunk.text for chunk in started.runs[0].chunks) == "fas"
        assert service.engine_status().loading == "slow.gguf"
        GatedLoader.gate.set()
        loading.join(timeout=60)
        assert {state.entry.name for state in service.loaded_models()} == {"fast.gguf", "slow.gguf"}
    finally:
        GatedLoader.gate.set()
        service.close()


def test_the_status_line_shows_the_page_s_model_s_last_reply_not_another_model_s(service: Service) -> None:
    service.load_model("second-llama3.gguf", page=False)
    assert service.stream_completion("x", GenerationParams(max_new_tokens=3)).text() == "Hello there."
    with service.job_origin("api", None, "second-llama3.gguf"):
        assert service.stream_completion("x", GenerationParams(max_new_tokens=1)).text() == "Other"
    line = service.status_line()
    assert "Last reply: 3 tokens" in line and "Also loaded: second-llama3.gguf." in line
