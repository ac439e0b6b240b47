"""The API's translation layer at its seam: names, options, errors, and cancel-on-disconnect (scripted loader)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tests.support.fakes import ScriptedModel, scripted_service
from webui.api.core_requests import apply_overrides, chat_message
from webui.api.errors import ApiError
from webui.api.ollama_protocol import ollama_overrides, unloads
from webui.api.ollama_routes import install_ollama_routes
from webui.api.openai_routes import install_openai_routes
from webui.api.serving import Serving, find_entry, seeded
from webui.api.streams import Run, Started, follow
from webui.core.grammar import JSON_OBJECT_GBNF, json_grammar
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service

PIECES = "Hello| there|,| friend|."


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Two scripted "GGUF" models; the scripted loader stands in for llama.cpp (GGUF files infer it)."""
    service = scripted_service(tmp_path, {"first-chatml.gguf": PIECES, "second-chatml.gguf": "Other| words"})
    yield service
    service.close()


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    """The OpenAI and Ollama routers alone; ``x-admin: no`` plays a request without an admin key."""
    app = FastAPI()

    @app.middleware("http")
    async def admin_flag(request: Request, call_next):  # type: ignore[no-untyped-def]
        request.state.admin = request.headers.get("x-admin") != "no"
        return await call_next(request)

    serving = Serving(service)
    install_openai_routes(app, serving)
    install_ollama_routes(app, serving)
    with TestClient(app) as test_client:
        yield test_client


def _model(service: Service) -> ScriptedModel:
    state = service.engine.require_model()
    assert isinstance(state.model, ScriptedModel)
    return state.model


# -- pure translation ----------------------------------------------------------------------------------------


def test_a_model_is_found_by_name_file_stem_and_ollama_tag() -> None:
    entries = [ModelEntry("Qwen/qwen-q4.gguf", Path("/m/Qwen/qwen-q4.gguf"), "gguf", 1)]
    for name in ("Qwen/qwen-q4.gguf", "qwen-q4.gguf", "qwen-q4", "Qwen/qwen-q4:latest", "QWEN-Q4"):
        assert find_entry(entries, name) is entries[0], name
    assert find_entry(entries, "llama") is None


def test_ollama_options_map_onto_generation_params() -> None:
    overrides, sources = ollama_overrides(
        {
            "num_predict": 7,
            "repeat_penalty": 1.2,
            "repeat_last_n": 32,
            "mirostat": 2,
            "stop": "END",
            "num_ctx": 4096,  # a load setting: accepted, not a sampler value
            "tfs_z": 1.0,  # no Palabre setting: accepted and ignored
            "dry_multiplier": 0.8,  # Palabre's own name
        }
    )
    assert overrides == {
        "max_new_tokens": 7,
        "repetition_penalty": 1.2,
        "repetition_penalty_range": 32,
        "mirostat_mode": 2,
        "stop": ["END"],
        "dry_multiplier": 0.8,
    }
    assert sources["max_new_tokens"] == "num_predict"
    assert ollama_overrides({"num_predict": -1}) == ({}, {})  # no limit: the preset's value stays
    with pytest.raises(ApiError, match="Unknown option 'temprature'"):
        ollama_overrides({"temprature": 0.5})
    assert unloads(0) and unloads("0") and not unloads("5m") and not unloads(None)


def test_a_bad_value_is_reported_under_the_requests_own_field_name() -> None:
    with pytest.raises(ApiError) as caught:
        apply_overrides(GenerationParams(), {"max_new_tokens": 0}, {"max_new_tokens": "max_tokens"})
    assert caught.value.status == 400
    assert caught.value.param == "max_tokens"
    assert "max_tokens" in caught.value.message


def test_api_messages_become_chat_messages() -> None:
    assert chat_message("developer", "Be brief.") == ChatMessage("system", "Be brief.")
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert chat_message("user", parts) == ChatMessage("user", "one\ntwo")
    with pytest.raises(ApiError, match="base64 data: URL"):  # not a URL an image may come from
        chat_message("user", [{"type": "image_url", "image_url": {"url": "x"}}])
    with pytest.raises(ApiError, match="'input_audio'"):
        chat_message("user", [{"type": "input_audio", "input_audio": {"data": "x"}}])
    assert chat_message("tool", "42", tool_call_id="call_1", name="f") == ChatMessage(
        "tool", "42", tool_call_id="call_1", name="f"
    )
    with pytest.raises(ApiError, match="'bot'"):
        chat_message("bot", "Hi")


def test_json_grammars_and_seeds() -> None:
    assert json_grammar(None) == JSON_OBJECT_GBNF
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    assert "answer" in json_grammar(schema)
    params = GenerationParams(seed=41)
    assert [seeded(params, i).seed for i in range(3)] == [41, 42, 43]
    assert seeded(GenerationParams(), 2).seed == -1


# -- routes over a scripted model ----------------------------------------------------------------------------


def test_chat_completion_text_usage_and_finish_reason(client: TestClient) -> None:
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there, friend."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 5
    short = client.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 2, "n": 2}).json()
    assert [c["text"] for c in short["choices"]] == ["Hello there", "Hello there"]
    assert [c["finish_reason"] for c in short["choices"]] == ["length", "length"]
    assert short["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_streamed_chat_ends_with_usage_and_done(client: TestClient) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        lines = [line for line in reply.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    import json

    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "Hello there, friend."
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5


def test_errors_have_openai_and_ollama_shapes(client: TestClient) -> None:
    unknown = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    bad = client.post("/v1/completions", json={"prompt": "x", "n": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error" and bad.json()["error"]["param"] == "n"
    broken = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "text/plain"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    # The scripted loader honours no grammar: JSON mode is refused, not silently ignored.
    json_mode = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
    )
    assert json_mode.status_code == 400 and "cannot constrain" in json_mode.json()["error"]["message"]
    ollama = client.post("/api/show", json={"model": "nope"})
    assert ollama.status_code == 404 and ollama.json() == {"error": "model 'nope' not found"}


def test_naming_another_model_loads_it_only_for_an_admin(client: TestClient, service: Service) -> None:
    body = {"model": "second-chatml", "prompt": "x"}
    refused = client.post("/v1/completions", json=body, headers={"x-admin": "no"})
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert service.engine.require_model().entry.name == "first-chatml.gguf"
    loaded = client.post("/v1/completions", json=body)
    assert loaded.status_code == 200
    assert loaded.json()["model"] == "second-chatml.gguf"
    assert loaded.json()["choices"][0]["text"] == "Other words"
    # Loaded beside the page's model (both fit the memory budget): the page keeps its model.
    listed = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in listed] == ["first-chatml.gguf", "second-chatml.gguf"]
    assert service.engine.require_model().entry.name == "first-chatml.gguf"


def test_ollama_chat_streams_ndjson_with_counts(client: TestClient) -> None:
    import json

    body = {"model": "first-chatml.gguf", "messages": [{"role": "user", "content": "hi"}]}
    with client.stream("POST", "/api/chat", json=body) as reply:
        objects = [json.loads(line) for line in reply.iter_lines() if line]
    assert "".join(o["message"]["content"] for o in objects) == "Hello there, friend."
    final = objects[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == 5 and final["prompt_eval_count"] > 0
    assert all(not o["done"] for o in objects[:-1])


# -- cancel on disconnect ------------------------------------------------------------------------------------


def _consume(started: Started, gone_after: int) -> list[str]:
    """Read ``started`` until ``gone_after`` chunks, then play a client that went away."""
    seen: list[str] = []

    async def disconnected() -> bool:
        return len(seen) >= gone_after

    async def read() -> None:
        async for _run, chunk in follow(started, disconnected, poll_s=0.01):
            seen.append(chunk.text)

    asyncio.run(read())
    return seen


def test_a_client_that_goes_away_cancels_its_generation(service: Service) -> None:
    _model(service).pieces = ["x"] * 400
    _model(service).delay = 0.01
    params = GenerationParams(max_new_tokens=400)
    serving = Serving(service)
    started = serving.start("", True, lambda state: serving.completion_runs(["a"], params))
    seen = _consume(started, gone_after=3)
    job = started.runs[0].job
    # The engine runs one job at a time: once a later job is done, the cancelled one has ended.
    service.stream_completion("z", GenerationParams(max_new_tokens=1)).text()
    assert job.finish_reason == "cancelled"
    assert job.stats is not None and job.stats.new_tokens < 400
    assert len(seen) < 400


def test_a_client_that_goes_away_while_queued_never_runs(service: Service) -> None:
    model = _model(service)
    model.gate = threading.Event()  # the first generation waits until released
    serving = Serving(service)
    first = service.stream_completion("a", GenerationParams(max_new_tokens=3))
    queued = serving.start(
        "",
        True,
        lambda state: serving.chat_runs([ChatMessage("user", "b")], ChatSettings(), GenerationParams()),
    )
    assert _consume(queued, gone_after=0) == []
    model.gate.set()
    assert first.text() == "Hello there,"
    queued_job = queued.runs[0].job
    service.stream_completion("z", GenerationParams(max_new_tokens=1)).text()
    assert queued_job.finish_reason == "cancelled"
    assert model.prompts == ["a", "z"]  # the queued request's prompt never reached the model


def test_runs_report_usage_once_per_prompt(service: Service) -> None:
    serving = Serving(service)
    started = serving.start(
        "", True, lambda s: serving.completion_runs(["a b", "c d e"], GenerationParams(), n=2)
    )
    for run in started.runs:
        run.job.text()
    assert [run.index for run in started.runs] == [0, 1, 2, 3]
    assert started.usage() == (2 + 3, 4 * 5)
    assert isinstance(started.runs[0], Run)


def test_the_openapi_schema_documents_every_sampler_field(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/api/chat", "/api/generate"} <= set(
        schema["paths"]
    )
    fields = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"min_p", "top_k", "dry_multiplier", "max_tokens", "mode", "character"} <= set(fields)
    assert "default" not in fields["min_p"]  # absent = the preset's value, not a copied default
