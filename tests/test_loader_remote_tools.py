"""The remote loader's chat endpoint with tools and thinking: what it sends a server (tools, tool_choice,
chat_template_kwargs, reasoning_effort, the history in OpenAI's shape) and how the server's reasoning and tool
calls come back, against a scripted OpenAI server, through the OpenAI SDK in front of Palabre's API, and against
a real `webui serve` as the upstream server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.support.config import make_config
from tests.support.openai_server import ScriptedOpenAIServer, ScriptedReply
from tests.support.servers import Server
from webui.api.ollama_routes import install_ollama_routes
from webui.api.openai_routes import install_openai_routes
from webui.api.serving import Serving
from webui.core.loader import Chunk
from webui.core.params import GenerationParams
from webui.core.service import ChatMessage, ChatSettings, Service, ToolCall, ToolRequest
from webui.provision import DEFAULT_MODEL_FILE

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}

# llama.cpp's shape: reasoning_content, then the answer, then two calls (the first in pieces, the second whole,
# as Ollama's compatible endpoint sends them, its name repeated on a later delta as some servers do).
THINK_AND_CALL = ScriptedReply(
    deltas=[
        {"role": "assistant", "content": None, "reasoning_content": "The user wants "},
        {"reasoning_content": "the weather."},
        {"content": "Let me look."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_server_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": '"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_server_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ]
        },
    ],
    finish_reason="tool_calls",
)
# vLLM's and Ollama's name for the reasoning.
VLLM_REASONING = ScriptedReply(deltas=[{"reasoning": "Sunny it is."}, {"content": "It is sunny in Paris."}])

HISTORY = [
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage(
        "assistant",
        "",
        reasoning="I should call the tool.",
        tool_calls=(ToolCall("call_a", "get_weather", '{"city": "Paris"}'),),
    ),
    ChatMessage("tool", "Sunny, 22 C", tool_call_id="call_a", name="get_weather"),
]


def _service(root: Path, server: ScriptedOpenAIServer, **settings: Any) -> Service:
    from webui.app import build_service

    service = build_service(make_config(root / "user_data"))
    service.load_model("", "remote", {"base_url": server.base_url, "endpoint": "chat", **settings})
    return service


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAIServer]:
    server = ScriptedOpenAIServer([THINK_AND_CALL, VLLM_REASONING]).start()
    yield server
    server.stop()


@pytest.fixture
def service(tmp_path: Path, scripted: ScriptedOpenAIServer) -> Iterator[Service]:
    service = _service(tmp_path, scripted)
    yield service
    service.close()


def _calls(chunks: list[Chunk]) -> list[dict[str, str]]:
    """The reply's calls put together from their deltas, by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                assert not call["id"], "a call's id comes once"
                call["id"], call["name"] = delta.id, delta.name
            call["arguments"] += delta.arguments
    return [calls[index] for index in sorted(calls)]


def test_reasoning_and_tool_calls_come_back_apart_with_the_servers_ids(
    service: Service, scripted: ScriptedOpenAIServer
) -> None:
    tools = ToolRequest.build([WEATHER, TIME], "required")
    stream = service.stream_chat_reply(
        [HISTORY[0]], ChatSettings(), GenerationParams(), tools=tools, template_kwargs={"custom": 1}
    )
    chunks = list(stream)
    assert "".join(c.reasoning for c in chunks) == "The user wants the weather."
    assert "".join(c.text for c in chunks) == "Let me look."
    assert _calls(chunks) == [
        {"id": "call_server_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_server_2", "name": "get_time", "arguments": "{}"},
    ]
    assert stream.job.finish_reason == "tool_calls"
    assert stream.stats is not None and stream.stats.new_tokens == 7  # the server's usage

    sent = scripted.requests[-1]
    assert sent["tools"] == [WEATHER, TIME]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is True
    kwargs = sent["chat_template_kwargs"]
    assert kwargs["custom"] == 1 and kwargs["enable_thinking"] is True


def test_the_history_goes_in_openais_shape_and_the_next_answer_is_text(
    service: Service, scripted: ScriptedOpenAIServer
) -> None:
    list(service.stream_chat_reply([HISTORY[0]], ChatSettings(), GenerationParams()))  # the scripted call
    params = GenerationParams(reasoning_effort="high")
    tools = ToolRequest.build([WEATHER], "get_weather", parallel=False)
    stream = service.stream_chat_reply(HISTORY, ChatSettings(), params, tools=tools)
    chunks = list(stream)
    assert "".join(c.reasoning for c in chunks) == "Sunny it is."
    assert "".join(c.text for c in chunks) == "It is sunny in Paris."
    assert stream.job.finish_reason == "stop"

    sent = scripted.requests[-1]
    assert [message for message in sent["messages"] if message["role"] != "system"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            "reasoning_content": "I should call the tool.",
        },
        {"role": "tool", "content": "Sunny, 22 C", "tool_call_id": "call_a"},
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["reasoning_effort"] == "high"
    assert sent["chat_template_kwargs"]["reasoning_effort"] == "high"
    assert "continue_final_message" not in sent  # a tool result is answered, not continued


def test_a_server_that_takes_no_extras_gets_only_openais_fields(
    tmp_path: Path, scripted: ScriptedOpenAIServer
) -> None:
    service = _service(tmp_path, scripted, send_extras=False)
    try:
        list(service.stream_chat_reply(HISTORY, ChatSettings(), GenerationParams(enable_thinking=False)))
    finally:
        service.close()
    sent = scripted.requests[-1]
    assert "chat_template_kwargs" not in sent and "tools" not in sent
    assert "reasoning_content" not in sent["messages"][1]


@pytest.fixture
def http(service: Service) -> Iterator[TestClient]:
    """Palabre's OpenAI and Ollama routes in process over the remote model."""
    app = FastAPI()

    @app.middleware("http")
    async def admin(request: Request, call_next: Any) -> Any:
        request.state.admin = True
        return await call_next(request)

    serving = Serving(service)
    install_openai_routes(app, serving)
    install_ollama_routes(app, serving)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def api(http: TestClient) -> openai.OpenAI:
    """The official client over the in-process routes."""
    return openai.OpenAI(base_url=f"{http.base_url}/v1", api_key="none", http_client=http, max_retries=0)


def test_the_openai_client_gets_the_upstream_calls_through_palabre(api: openai.OpenAI) -> None:
    with api.chat.completions.stream(
        model="scripted-model",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice="required",
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in choice.message.tool_calls or []
        if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]
    assert calls == [("call_server_1", "get_weather", {"city": "Paris"}), ("call_server_2", "get_time", {})]
    assert choice.message.content == "Let me look."
    assert getattr(choice.message, "reasoning_content", None) == "The user wants the weather."


def test_ollamas_chat_gets_the_upstream_thinking_first_and_each_call_whole(http: TestClient) -> None:
    body = {
        "model": "scripted-model",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER, TIME],
    }
    lines = http.post("/api/chat", json=body).text.splitlines()
    events = [json.loads(line) for line in lines]
    messages = [event["message"] for event in events]
    assert [m["thinking"] for m in messages if "thinking" in m] == ["The user wants ", "the weather."]
    assert all(not m["content"] for m in messages if "thinking" in m)  # thinking in chunks of its own
    calls = [call for m in messages for call in m.get("tool_calls", [])]
    assert calls == [
        {
            "id": "call_server_1",
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
        },
        {"id": "call_server_2", "function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]
    thinking_at = max(i for i, m in enumerate(messages) if "thinking" in m)
    content_at = next(i for i, m in enumerate(messages) if m["content"])
    assert thinking_at < content_at
    assert events[-1]["done"] is True and events[-1]["done_reason"] == "stop"

    # The next reply (reasoning, then text), whole, with think false: no thinking, no calls.
    whole = http.post("/api/chat", json={**body, "stream": False, "think": False}).json()
    assert whole["message"] == {"role": "assistant", "content": "It is sunny in Paris."}


# -- a real upstream: `webui serve` with the default model -------------------------------------------------


@pytest.mark.slow
def test_a_forced_call_through_a_palabre_server_upstream(tmp_path: Path, default_model_path: Path) -> None:
    """Palabre as the remote server: its grammar-forced call on SmolLM2 comes back through the loader."""
    from webui.app import build_service

    with Server(tmp_path / "upstream", default_model_path).running() as upstream:
        service = build_service(make_config(tmp_path / "user_data"))
        try:
            service.load_model(DEFAULT_MODEL_FILE, "remote", {"base_url": upstream.url, "endpoint": "chat"})
            tools = ToolRequest.build([WEATHER], "required", parallel=False)
            question = [ChatMessage("user", "What is the weather in Paris?")]
            stream = service.stream_chat_reply(
                question, ChatSettings(), GenerationParams(seed=3, max_new_tokens=96), tools=tools
            )
            chunks = list(stream)
            calls = _calls(chunks)
            assert stream.job.finish_reason == "tool_calls"
            assert [call["name"] for call in calls] == ["get_weather"]
            assert calls[0]["id"].startswith("call_")
            assert isinstance(json.loads(calls[0]["arguments"])["city"], str)
            # The result goes back; without tools the model answers in text.
            history = [
                *question,
                ChatMessage(
                    "assistant",
                    "",
                    tool_calls=(ToolCall(calls[0]["id"], "get_weather", calls[0]["arguments"]),),
                ),
                ChatMessage("tool", "Sunny, 22 C", tool_call_id=calls[0]["id"], name="get_weather"),
            ]
            answer = service.stream_chat_reply(
                history, ChatSettings(), GenerationParams(seed=3, max_new_tokens=40)
            )
            assert "".join(chunk.text for chunk in answer).strip()
            assert answer.job.finish_reason in ("stop", "length")
        finally:
            service.close()
