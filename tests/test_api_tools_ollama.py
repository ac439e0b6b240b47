"""Tools and thinking through the Ollama-compatible API, with the official ollama client against a real
`webui serve` on the default model (SmolLM2): /api/show's capabilities, the tool loop (calls whole, arguments
as objects, results as ``tool`` messages), ``think`` on, off and as a level, and /api/generate's thinking.

SmolLM2's own template (ChatML) has neither tools nor thinking; the module loads it with a ChatML that renders
tools and opens a thought (tests/support/tool_servers.py), as a tool-calling thinking model's template does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.support import agent_models
from tests.support.servers import Server
from tests.support.thinking import assert_markers_stay_out
from tests.support.tool_servers import (
    TOOLS_THINK_TEMPLATE,
    WEATHER,
    ToolChoiceTransport,
    add_tools_think_template,
    load_with_template,
)
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE
QUESTION = [{"role": "user", "content": "What is the weather in Paris today?"}]
# SmolLM2 reasons inside the opened thought; the thinking budget makes the engine close it so that it answers.
THINKING_OPTIONS = {"seed": 3, "num_predict": 64, "thinking_budget": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("api-tools-ollama"), default_model_path)
    add_tools_think_template(server)
    with server.running() as running:
        yield running


@pytest.fixture(scope="module")
def templated(server: Server) -> Server:
    """The server's model loaded with the template that renders tools and thinks."""
    if "thinking" not in show(server)["capabilities"]:
        load_with_template(server, TOOLS_THINK_TEMPLATE)
    return server


@pytest.fixture(scope="module")
def client(templated: Server) -> ollama.Client:
    return ollama.Client(host=templated.url.rstrip("/"))


@pytest.fixture(scope="module")
def forcing_client(templated: Server) -> ollama.Client:
    """The ollama client, its requests with tools sent with Palabre's ``tool_choice: required``."""
    return ollama.Client(host=templated.url.rstrip("/"), transport=ToolChoiceTransport("required"))


def show(server: Server) -> dict[str, Any]:
    response = httpx.post(f"{server.url}api/show", json={"model": M}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_capabilities_follow_the_loaded_template(server: Server) -> None:
    load_with_template(server, None)
    assert show(server)["capabilities"] == ["completion"]  # SmolLM2's ChatML: neither tools nor thinking
    load_with_template(server, TOOLS_THINK_TEMPLATE)
    assert show(server)["capabilities"] == ["completion", "tools", "thinking"]
    listed = ollama.Client(host=server.url.rstrip("/")).show(M)
    assert listed.capabilities == ["completion", "tools", "thinking"]


def test_the_tool_loop_with_the_ollama_client(forcing_client: ollama.Client, client: ollama.Client) -> None:
    first = forcing_client.chat(
        model=M, messages=QUESTION, tools=[WEATHER], think=False, options={"seed": 1, "num_predict": 96}
    )
    assert first.done_reason == "stop"  # as Ollama ends a reply that called tools
    calls = first.message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"
    arguments = calls[0].function.arguments
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str)

    def answer_with(result: str) -> ollama.ChatResponse:
        messages: list[Any] = [
            *QUESTION,
            first.message,
            *[{"role": "tool", "tool_name": call.function.name, "content": result} for call in calls],
        ]
        return client.chat(
            model=M, messages=messages, tools=[WEATHER], think=False, options={"seed": 1, "num_predict": 32}
        )

    final = answer_with("Sunny, 22 degrees.")
    assert final.message.content and final.message.content.strip()
    assert not final.message.tool_calls
    # The results are in the prompt: a longer one makes a longer prompt.
    longer = answer_with("Sunny, 22 degrees, light wind from the west, no rain expected before the evening.")
    assert longer.prompt_eval_count is not None and final.prompt_eval_count is not None
    assert longer.prompt_eval_count > final.prompt_eval_count + 10


def test_streamed_calls_arrive_whole(forcing_client: ollama.Client) -> None:
    chunks = list(
        forcing_client.chat(
            model=M,
            messages=QUESTION,
            tools=[WEATHER],
            think=False,
            stream=True,
            options={"seed": 1, "num_predict": 96},
        )
    )
    with_calls = [chunk for chunk in chunks if chunk.message.tool_calls]
    assert with_calls, chunks
    for chunk in with_calls:
        for call in chunk.message.tool_calls or []:
            assert call.function.name == "get_weather"
            assert isinstance(call.function.arguments, dict) and "city" in call.function.arguments
    assert chunks[-1].done and chunks[-1].done_reason == "stop"


def test_think_puts_the_reasoning_apart(client: ollama.Client) -> None:
    reply = client.chat(model=M, messages=QUESTION, think=True, options=THINKING_OPTIONS)
    assert reply.message.thinking and reply.message.thinking.strip()
    assert reply.message.content and reply.message.content.strip()
    assert_markers_stay_out(reply.message.thinking, reply.message.content)

    # Streamed: thinking first, in chunks of its own, then the answer.
    kinds = []
    for chunk in client.chat(model=M, messages=QUESTION, think=True, stream=True, options=THINKING_OPTIONS):
        if chunk.message.thinking:
            assert not chunk.message.content
            kinds.append("thinking")
        elif chunk.message.content:
            kinds.append("content")
    assert kinds[0] == "thinking" and "content" in kinds
    assert kinds == sorted(kinds, key=["thinking", "content"].index)
    assert "".join(k[0] for k in kinds).count("tc") == 1


def test_think_false_and_levels(client: ollama.Client) -> None:
    off = client.chat(model=M, messages=QUESTION, think=False, options=THINKING_OPTIONS)
    assert off.message.thinking is None
    assert off.message.content and off.message.content.strip()
    high = client.chat(model=M, messages=QUESTION, think="high", options=THINKING_OPTIONS)
    assert high.message.thinking
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model=M, messages=QUESTION, think="deep", options=THINKING_OPTIONS)
    assert refused.value.status_code == 400 and "think" in refused.value.error


def test_generate_thinks_too(client: ollama.Client) -> None:
    prompt = "What is the capital of France?"
    # A short budget: SmolLM2 would answer inside its thought and stop there.
    thought = client.generate(
        model=M, prompt=prompt, think=True, options={**THINKING_OPTIONS, "thinking_budget": 4}
    )
    assert thought.thinking and thought.thinking.strip()
    assert thought.response and thought.response.strip()
    plain = client.generate(model=M, prompt=prompt, think=False, options=THINKING_OPTIONS)
    assert plain.thinking is None and plain.response and plain.response.strip()


def test_bad_tools_are_a_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(
            model=M, messages=QUESTION, tools=[{"type": "function", "function": {"description": "x"}}]
        )
    assert refused.value.status_code == 400 and "no function name" in refused.value.error


# -- a thinking, tool-calling model (the tiny agent model, Qwen3's template) -------------------------------


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-tools-ollama-agent")
    with Server(root, agent_gguf_path, extra_args=["--model", agent_gguf_path.name]).running() as running:
        yield running


@pytest.fixture(scope="module")
def agent(agent_server: Server) -> ollama.Client:
    return ollama.Client(host=agent_server.url.rstrip("/"))


def test_a_model_that_is_not_loaded_is_judged_by_its_files_template(
    server: Server, agent_gguf_path: Path
) -> None:
    (server.config.models_dir / agent_gguf_path.name).symlink_to(agent_gguf_path)
    shown = ollama.Client(host=server.url.rstrip("/")).show(agent_gguf_path.name)
    assert shown.capabilities == ["completion", "tools", "thinking"]  # Qwen3's template, read from the GGUF


def test_think_with_a_thinking_model(agent: ollama.Client, agent_gguf_path: Path) -> None:
    model = agent_gguf_path.name
    question, reasoning, answer = agent_models.QUESTIONS[1]
    asked = [{"role": "user", "content": question}]
    thought = agent.chat(model=model, messages=asked, think=True, options={"temperature": 0})
    assert (thought.message.thinking, thought.message.content) == (reasoning, answer)

    chunks = list(
        agent.chat(model=model, messages=asked, think=True, stream=True, options={"temperature": 0})
    )
    thinking = [c.message.thinking for c in chunks if c.message.thinking]
    content = [c.message.content for c in chunks if c.message.content]
    assert "".join(thinking) == reasoning and "".join(content) == answer
    first_content = next(i for i, c in enumerate(chunks) if c.message.content)
    assert all(not c.message.thinking for c in chunks[first_content:])  # all the thinking came first

    plain = agent.chat(model=model, messages=asked, think=False, options={"temperature": 0})
    assert plain.message.thinking is None and plain.message.content == answer


def test_a_tool_loop_the_model_runs_on_its_own(agent_server: Server, agent_gguf_path: Path) -> None:
    """No tool_choice (Ollama has none): the model decides to call, then answers from the result.

    Sent as raw JSON: the ollama client re-orders a tool's schema keys (required before properties), and the
    tiny model was trained on the definition as written."""
    url = f"{agent_server.url}api/chat"
    model = agent_gguf_path.name
    city = "Tokyo"
    messages: list[Any] = [{"role": "user", "content": agent_models.weather_question(city)}]
    request = {
        "model": model,
        "tools": [agent_models.WEATHER_TOOL],
        "stream": False,
        "options": {"temperature": 0},
    }
    first = httpx.post(url, json={**request, "messages": messages}, timeout=120).json()
    message = first["message"]
    assert message["thinking"] == agent_models.weather_call_reasoning(city)
    calls = message["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", {"city": city})
    ]
    assert calls[0]["function"]["index"] == 0 and calls[0]["id"]
    assert first["done_reason"] == "stop"

    # The reply goes back as received, the result named by its tool (Ollama's tool_name).
    messages += [
        message,
        {"role": "tool", "tool_name": "get_weather", "content": agent_models.weather_result(city)},
    ]
    final = httpx.post(url, json={**request, "messages": messages}, timeout=120).json()["message"]
    assert "tool_calls" not in final
    assert final["content"] == agent_models.weather_answer(city)
    assert final["thinking"] == agent_models.weather_answer_reasoning(city)
