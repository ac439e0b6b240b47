"""Unloading an idle model: the watcher's decisions with a fake clock, Ollama's keep_alive, the API reloading
the model (scripted loader), and `webui serve --idle-unload` with the real default model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.fakes import scripted_service
from tests.support.servers import Server
from tests.support.waiting import eventually
from webui.api.errors import ApiError
from webui.api.ollama_protocol import keep_alive_seconds, unloads
from webui.api.ollama_routes import install_ollama_routes
from webui.api.openai_routes import install_openai_routes
from webui.api.serving import Serving
from webui.cli import build_parser, config_from_args
from webui.core.engine import EngineError
from webui.core.idle import IdleUnloader
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service
from webui.provision import DEFAULT_MODEL_FILE

# -- the watcher's decisions, with a fake idle clock -----------------------------------------------------------


class FakeEngine:
    def __init__(self) -> None:
        self.idle: float | None = 0.0  # None: busy
        self.unloads: list[float] = []

    def unload_if_idle(self, model: str, limit: float) -> bool:
        assert model == "m"
        if self.idle is None or self.idle < limit:
            return False
        self.unloads.append(limit)
        self.idle = None  # nothing loaded any more
        return True


def _watcher(default_s: float | None) -> tuple[IdleUnloader, FakeEngine]:
    fake = FakeEngine()
    return IdleUnloader(fake.unload_if_idle, lambda model: fake.idle, lambda: ["m"], default_s), fake


def test_the_model_is_unloaded_only_after_the_idle_time() -> None:
    watcher, fake = _watcher(600)
    fake.idle = 599
    assert watcher.check() == pytest.approx(1)  # looks again when the time would be up
    assert fake.unloads == []
    fake.idle = None  # a generation runs: the idle time starts again when it ends
    watcher.check()
    assert fake.unloads == []
    fake.idle = 600
    watcher.check()
    assert fake.unloads == [600]


def test_without_a_limit_nothing_is_unloaded() -> None:
    watcher, fake = _watcher(None)
    fake.idle = 10**9
    watcher.check()
    assert fake.unloads == [] and watcher.expires_in("m") is None


def test_keep_alive_sets_the_idle_time_after_a_request_as_ollama_does() -> None:
    watcher, fake = _watcher(300)
    fake.idle = 100
    watcher.keep_alive(-1, "m")  # forever
    watcher.check()
    assert fake.unloads == [] and watcher.expires_in("m") is None
    watcher.keep_alive(60, "m")
    assert watcher.expires_in("m") == 0
    watcher.check()
    assert fake.unloads == [60]
    watcher.keep_alive(None, "m")  # a request without keep_alive: back to --idle-unload
    assert watcher.limit_s("m") == 300
    fake.idle = 0.0
    watcher.keep_alive(0, "m")  # unload as soon as nothing runs
    watcher.check()
    assert fake.unloads == [60, 0]


def test_a_zero_or_negative_default_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        _watcher(0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (30, 30.0),
        ("45", 45.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        (-1, -1.0),
        ("-1", -1.0),
        ("-1m", -60.0),
    ],
)
def test_keep_alive_durations_are_read_as_ollama_reads_them(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m", "", "5x", "1h-2m"])
def test_a_bad_keep_alive_is_a_clear_400(value: str) -> None:
    with pytest.raises(ApiError, match="keep_alive") as caught:
        keep_alive_seconds(value)
    assert caught.value.status == 400
    assert not unloads("5m") and unloads("0m") and unloads(0)


def test_the_cli_flag_accepts_fractional_minutes_and_refuses_nonsense(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["serve", "--idle-unload", "0.5"])
    assert config_from_args(args).idle_unload_minutes == 0.5
    assert config_from_args(build_parser().parse_args(["serve"])).idle_unload_minutes is None
    for bad in ("0", "-3", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--idle-unload", bad])
    assert "--idle-unload" in capsys.readouterr().err


# -- through the API, with the scripted loader ----------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = scripted_service(tmp_path, {"first-chatml.gguf": "Hello| there|."})
    yield service
    service.close()


def _client(serving: Serving) -> TestClient:
    app = FastAPI()
    install_openai_routes(app, serving)
    install_ollama_routes(app, serving)
    return TestClient(app)


def test_an_idle_model_is_unloaded_and_the_next_request_loads_it_again(service: Service) -> None:
    serving = Serving(service, idle_unload_s=0.2)
    serving.idle.start()
    try:
        eventually(lambda: service.engine.state is None, "the idle model is unloaded", within=30)
        assert service.status_line() == "No model loaded."
        with _client(serving) as client:
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "first-chatml", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "Hello there."
        eventually(lambda: service.engine.state is None, "unloaded again after the reply", within=30)
    finally:
        serving.idle.stop()


def test_after_an_idle_unload_the_page_s_next_message_loads_the_model_again(service: Service) -> None:
    history = [ChatMessage("user", "hi")]
    assert service.engine.unload_if_idle(0.0) and service.engine.state is None
    # What the page's Send and the Default / Notebook tabs call: the model comes back, the reply is made.
    reply = service.stream_chat_reply(history, ChatSettings(mode="instruct"), GenerationParams())
    assert "".join(chunk.text for chunk in reply) == "Hello there."
    assert service.engine.state is not None and service.engine.state.entry.name == "first-chatml.gguf"
    assert service.engine.unload_if_idle(0.0)
    assert service.stream_completion("x", GenerationParams()).text() == "Hello there."
    # An unload the user asked for is not undone by the next message.
    service.unload_model()
    with pytest.raises(EngineError, match="No model is loaded"):
        service.stream_chat_reply(history, ChatSettings(mode="instruct"), GenerationParams())
    assert service.resume_idle_model() is None


def test_a_client_without_the_admin_key_gets_the_idle_model_back_but_cannot_switch(
    service: Service, tmp_path: Path
) -> None:
    (tmp_path / "models" / "second-chatml.gguf").write_text("Other|.")
    serving = Serving(service, idle_unload_s=None)
    app = FastAPI()

    @app.middleware("http")
    async def plain_key(request: Any, call_next: Any) -> Any:
        request.state.admin = False  # as the auth middleware marks a request with an --api-key only
        return await call_next(request)

    install_openai_routes(app, serving)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert service.engine.unload_if_idle(0.0)
    with TestClient(app) as client:
        again = client.post("/v1/chat/completions", json={**chat, "model": "first-chatml"})
        assert again.status_code == 200, again.text
        assert again.json()["choices"][0]["message"]["content"] == "Hello there."
        switch = client.post("/v1/chat/completions", json={**chat, "model": "second-chatml"})
        assert switch.status_code == 403 and "admin key" in switch.text
        assert service.engine.unload_if_idle(0.0)
        other = client.post("/v1/chat/completions", json={**chat, "model": "second-chatml"})
        assert other.status_code == 403  # only the model that was unloaded comes back without the admin key
    assert service.engine.state is None


def test_keep_alive_minus_one_keeps_the_model_and_zero_unloads_it_after_the_reply(service: Service) -> None:
    serving = Serving(service, idle_unload_s=None)
    serving.idle.start()
    body = {"model": "first-chatml", "prompt": "hi", "stream": False}
    try:
        with _client(serving) as client:
            kept = client.post("/api/generate", json={**body, "keep_alive": -1})
            assert kept.status_code == 200, kept.text
            [model] = client.get("/api/ps").json()["models"]
            assert datetime.fromisoformat(model["expires_at"]).year > datetime.now(UTC).year + 50
            assert client.post("/api/generate", json={**body, "keep_alive": "soon"}).status_code == 400
            done = client.post("/api/generate", json={**body, "keep_alive": 0})
            assert done.json()["response"] == "Hello there."
            eventually(lambda: service.engine.state is None, "keep_alive 0 unloads after the reply", 30)
            assert client.get("/api/ps").json() == {"models": []}
            again = client.post("/api/chat", json={**body, "messages": [{"role": "user", "content": "x"}]})
            assert again.json()["message"]["content"] == "Hello there."
            assert service.engine.state is not None  # a request without keep_alive: back to "never"
    finally:
        serving.idle.stop()


# -- the real server -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_idle_unload_frees_the_model_and_an_api_request_loads_it_again(
    tmp_path: Path, default_model_path: Path
) -> None:
    server = Server(tmp_path, extra_args=["--idle-unload", "0.02"])  # 1.2 seconds
    (server.config.models_dir / default_model_path.name).symlink_to(default_model_path)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            loaded = lambda: http.get("health").json()["model"]  # noqa: E731
            chat = {
                "model": DEFAULT_MODEL_FILE,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 3,
            }
            for _ in range(2):  # loaded just in time, unloaded when idle, and again
                reply = http.post("v1/chat/completions", json=chat)
                assert reply.status_code == 200, reply.text
                assert reply.json()["usage"]["completion_tokens"] <= 3
                eventually(lambda: loaded() is None, "the idle model is unloaded")
            # Loaded with chosen settings, it comes back after an idle unload with the same settings.
            load = {"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 1024}}
            assert http.post("v1/internal/model/load", json=load).status_code == 200
            eventually(lambda: loaded() is None, "the idle model is unloaded")
            # keep_alive -1: it stays loaded afterwards, so that its settings can be read.
            generate = {"model": DEFAULT_MODEL_FILE, "prompt": "Hi", "stream": False, "keep_alive": -1}
            again = http.post("api/generate", json={**generate, "options": {"num_predict": 3}})
            assert again.status_code == 200, again.text
            assert http.get("v1/internal/model").json()["settings"]["n_ctx"] == 1024
    finally:
        server.stop()
