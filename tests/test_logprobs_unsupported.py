"""A request for logprobs to a model whose loader cannot report them (the remote loader: a server's chat
endpoint) is a 400 in each protocol's own error shape, never an answer with the logprobs quietly missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tests.support.config import make_config
from tests.support.openai_server import ScriptedOpenAIServer, ScriptedReply
from webui.api.ollama_routes import install_ollama_routes
from webui.api.openai_routes import install_openai_routes
from webui.api.responses_routes import install_responses_routes
from webui.api.serving import Serving
from webui.core.service import Service

MODEL = "scripted-model"
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    from webui.app import build_service

    upstream = ScriptedOpenAIServer([ScriptedReply([{"content": "Hello."}])]).start()
    service = build_service(make_config(tmp_path / "user_data"))
    try:
        service.load_model("", "remote", {"base_url": upstream.base_url, "endpoint": "chat"})
        yield service
    finally:
        service.close()
        upstream.stop()


@pytest.fixture
def http(service: Service) -> Iterator[TestClient]:
    """Palabre's OpenAI, Responses and Ollama routes in process over the remote model."""
    app = FastAPI()

    @app.middleware("http")
    async def admin(request: Request, call_next: Any) -> Any:
        request.state.admin = True
        return await call_next(request)

    serving = Serving(service)
    install_openai_routes(app, serving)
    install_responses_routes(app, serving)
    install_ollama_routes(app, serving)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def api(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http.base_url}/v1", api_key="none", http_client=http, max_retries=0)


def test_openai_chat_completions_and_responses_refuse_logprobs(api: openai.OpenAI) -> None:
    assert api.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == "Hello."
    with pytest.raises(openai.BadRequestError, match="logprobs") as chat:
        api.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)
    assert chat.value.body["param"] == "logprobs"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        api.chat.completions.create(
            model=MODEL, messages=MESSAGES, logprobs=True, top_logprobs=2, stream=True
        )
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        api.completions.create(model=MODEL, prompt="Hi", logprobs=1)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        api.completions.create(model=MODEL, prompt="Hi", max_tokens=0, echo=True, logprobs=0)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        api.responses.create(model=MODEL, input="Hi", include=["message.output_text.logprobs"])


def test_ollama_refuses_logprobs_in_its_error_shape(http: TestClient) -> None:
    for path, body in (
        ("/api/chat", {"model": MODEL, "messages": MESSAGES, "logprobs": True, "stream": False}),
        ("/api/generate", {"model": MODEL, "prompt": "Hi", "logprobs": True, "top_logprobs": 2}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 400
        assert set(response.json()) == {"error"} and "logprobs" in response.json()["error"]
