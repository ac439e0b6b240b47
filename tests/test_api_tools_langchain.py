"""LangChain's chat models with tools against a real `webui serve` on the default model: ChatOpenAI's bound
tools through a whole loop (called, streamed, answered from the result) and ChatOllama's bound tools and
reasoning. The model is loaded with a ChatML that renders tools and opens a thought
(tests/support/tool_servers.py), as a tool-calling thinking model's template does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from tests.support.servers import Server
from tests.support.thinking import assert_markers_stay_out
from tests.support.tool_servers import (
    TOOLS_THINK_TEMPLATE,
    ToolChoiceTransport,
    add_tools_think_template,
    load_with_template,
)
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE
QUESTION = "What is the weather in Paris today?"


@tool
def get_weather(city: str) -> str:
    """The current weather of a city."""
    return f"Sunny and 22 degrees Celsius in {city}."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("api-tools-langchain"), default_model_path)
    add_tools_think_template(server)
    with server.running() as running:
        load_with_template(running, TOOLS_THINK_TEMPLATE)
        yield running


def chat_openai(server: Server, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.url}v1",
        api_key="unused",
        model=M,
        temperature=0,
        seed=1,
        max_retries=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        **kwargs,
    )


def run_tools(reply: AIMessage) -> list[ToolMessage]:
    results = []
    for call in reply.tool_calls:
        assert call["name"] == "get_weather"
        result = get_weather.invoke(call)
        assert isinstance(result, ToolMessage)
        results.append(result)
    return results


def test_chat_openai_bound_tools_run_a_whole_loop(server: Server) -> None:
    llm = chat_openai(server, max_completion_tokens=96)
    messages: list[BaseMessage] = [HumanMessage(QUESTION)]
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    assert isinstance(called, AIMessage) and called.tool_calls
    assert called.response_metadata["finish_reason"] == "tool_calls"
    assert isinstance(called.tool_calls[0]["args"]["city"], str)
    assert called.tool_calls[0]["id"]

    messages += [called, *run_tools(called)]
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert isinstance(answer, AIMessage) and not answer.tool_calls
    assert isinstance(answer.content, str) and answer.content.strip()


def test_chat_openai_streams_calls_that_add_up(server: Server) -> None:
    llm = chat_openai(server, max_completion_tokens=96, streaming=True)
    chunks = list(llm.bind_tools([get_weather], tool_choice="required").stream([HumanMessage(QUESTION)]))
    assert len(chunks) > 2
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk  # type: ignore[assignment]
    assert isinstance(total, AIMessageChunk)
    # The name and id come once per call, so they add up to themselves (not "get_weatherget_weather").
    assert [call["name"] for call in total.tool_calls][:1] == ["get_weather"]
    assert all(call["name"] == "get_weather" for call in total.tool_calls)
    assert isinstance(total.tool_calls[0]["args"]["city"], str)


def test_chat_ollama_bound_tools_and_reasoning(server: Server) -> None:
    forced = ChatOllama(
        base_url=server.url.rstrip("/"),
        model=M,
        temperature=0,
        seed=1,
        num_predict=96,
        reasoning=False,
        client_kwargs={"transport": ToolChoiceTransport("required")},  # SmolLM2 calls only when made to
    )
    messages: list[BaseMessage] = [HumanMessage(QUESTION)]
    called = forced.bind_tools([get_weather]).invoke(messages)
    assert isinstance(called, AIMessage) and called.tool_calls
    assert isinstance(called.tool_calls[0]["args"]["city"], str)

    plain = ChatOllama(
        base_url=server.url.rstrip("/"), model=M, temperature=0, seed=1, num_predict=48, reasoning=False
    )
    messages += [called, *run_tools(called)]
    answer = plain.bind_tools([get_weather]).invoke(messages)
    assert isinstance(answer.content, str) and answer.content.strip()

    thinking = ChatOllama(
        base_url=server.url.rstrip("/"),
        model=M,
        seed=3,
        num_predict=64,
        reasoning=True,
    )
    thought = thinking.bind(options={"thinking_budget": 12}).invoke([HumanMessage(QUESTION)])
    assert thought.additional_kwargs.get("reasoning_content", "").strip()
    assert isinstance(thought.content, str) and thought.content.strip()
    assert_markers_stay_out(thought.additional_kwargs["reasoning_content"], thought.content)
