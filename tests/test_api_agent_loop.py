"""An agent framework (pydantic-ai, through its OpenAI chat model) running a tool loop to its end against a real
`webui serve` on the default model: the model calls the tool, the framework runs it and sends the result back,
and the model answers in text, whole and streamed. SmolLM2 is too small to choose well between calling and
answering, so the agent decides for it (pydantic-ai's per-step tool_choice): a call on the first step, text
after the result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

QUESTION = "What is the weather in Paris today?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("api-agent"), default_model_path).running() as running:
        yield running


@dataclass
class CallToolFirst(AbstractCapability[None]):
    """A tool call on the first step, then an answer in text."""

    def get_model_settings(self) -> Callable[[RunContext[None]], ModelSettings]:
        def settings(ctx: RunContext[None]) -> ModelSettings:
            return {"tool_choice": "required" if ctx.run_step <= 1 else "none"}

        return settings


def weather_agent(server: Server, cities: list[str]) -> Agent[None, str]:
    model = OpenAIChatModel(
        DEFAULT_MODEL_FILE, provider=OpenAIProvider(base_url=f"{server.url}v1", api_key="unused")
    )
    agent = Agent(
        model,
        instructions="You answer questions about the weather. Use the tools.",
        model_settings={"temperature": 0.0, "seed": 1, "max_tokens": 96},
        capabilities=[CallToolFirst()],
    )

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        cities.append(city)
        return f"Sunny, 22 degrees Celsius in {city}."

    return agent


def test_the_agent_runs_the_tool_and_answers(server: Server) -> None:
    cities: list[str] = []
    result = weather_agent(server, cities).run_sync(QUESTION)
    assert len(cities) >= 1 and all(isinstance(city, str) and city for city in cities)
    assert isinstance(result.output, str) and result.output.strip()
    parts = [part for message in result.all_messages() for part in message.parts]
    calls = [part for part in parts if isinstance(part, ToolCallPart)]
    returns = [part for part in parts if isinstance(part, ToolReturnPart)]
    assert calls and [c.tool_call_id for c in calls] == [r.tool_call_id for r in returns]
    assert all(call.tool_name == "get_weather" for call in calls)
    assert result.usage.requests == 2  # the call, then the answer
    assert result.usage.output_tokens > 0


def test_the_agent_streams_its_loop(server: Server) -> None:
    cities: list[str] = []
    agent = weather_agent(server, cities)

    async def run() -> str:
        async with agent.run_stream(QUESTION) as streamed:
            return await streamed.get_output()

    output = asyncio.run(run())
    assert cities and output.strip()
