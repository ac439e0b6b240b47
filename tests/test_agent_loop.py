"""The page's tool loop through real parts: the tiny agent model (llama.cpp) calls an MCP server's get_weather
(the SDK's stdio transport), reads the result and answers; the whole turn is saved and comes back on reload.
A tool that is not read-only waits for the approval callback; a rejection reaches the model as the result and
the tool never runs; the round limit ends a loop that would not stop."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_models import WEATHER, WEATHER_TOOL, weather_answer, weather_question
from tests.support.config import make_config
from tests.support.mcp_server import stdio_entry
from webui.core.agent import REJECTED, Toolbox, ToolSession, ToolSpec, ToolStep
from webui.core.agent.loop import Decision
from webui.core.chats.agent_reply import AgentReply
from webui.core.chats.conversation import Conversations, history_of
from webui.core.params import GenerationParams
from webui.core.service import ChatSettings, Service

pytestmark = [pytest.mark.slow]


def greedy() -> GenerationParams:
    return GenerationParams(temperature=0, max_new_tokens=96)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[Service]:
    from webui.app import build_service

    user_data = tmp_path_factory.mktemp("agent-loop") / "user_data"
    service = build_service(make_config(user_data, agent_gguf_path))
    service.load_model(agent_gguf_path.name, loader="llama.cpp", settings={"n_ctx": 1024})
    yield service
    service.close()


@pytest.fixture(scope="module")
def weather_box(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolbox]:
    """The MCP test server over stdio, from mcp.json, with only its get_weather enabled (the model was trained
    with that one tool offered)."""
    user_data = tmp_path_factory.mktemp("mcp-user-data")
    (user_data / "mcp.json").write_text(json.dumps({"mcpServers": {"weather": stdio_entry()}}))
    box = Toolbox(user_data)
    box.start_servers()
    box.update(enabled=["get_weather"])
    yield box
    box.close()


class Approvals:
    """An approval callback that answers as told and remembers what it was asked."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.asked: list[ToolStep] = []

    def pending(self, step: ToolStep) -> bool:
        return True

    def ask(self, step: ToolStep) -> Decision:
        self.asked.append(step)
        return self.decision


class GuardedWeather:
    """get_weather as a tool that is not read-only (so it needs approval); counts its runs."""

    def __init__(self) -> None:
        self.runs: list[Mapping[str, Any]] = []
        fn = WEATHER_TOOL["function"]
        self.spec = ToolSpec(fn["name"], fn["description"], fn["parameters"], read_only=False)

    def run(self, arguments: Mapping[str, Any]) -> str:
        self.runs.append(arguments)
        return json.dumps(WEATHER[str(arguments["city"])])


def run_reply(reply: Any) -> list[str]:
    return [update.kind for update in reply]


def test_the_model_calls_an_mcp_tool_and_answers_from_its_result(
    service: Service, weather_box: Toolbox
) -> None:
    assert service.chats is not None
    conversations = Conversations(service, service.chats)
    conversation = service.chats.create()
    approvals = Approvals("reject")
    session = ToolSession(weather_box.enabled(), approvals)
    reply = conversations.send(
        conversation.id, weather_question("Paris"), ChatSettings(), greedy(), tools=session
    )
    assert isinstance(reply, AgentReply)
    kinds = run_reply(reply)
    assert "step" in kinds and "round" in kinds and "approval" not in kinds  # readOnlyHint: no question
    assert approvals.asked == []
    saved = service.chats.get(conversation.id).messages[-1]
    assert saved.content == weather_answer("Paris")
    [round_] = saved.tool_rounds
    [call] = round_.calls
    assert (call.name, json.loads(call.arguments), call.status) == ("get_weather", {"city": "Paris"}, "done")
    assert json.loads(call.result) == WEATHER["Paris"] and call.seconds is not None
    # On reload the history shows the call and its result to the model again, in order.
    roles = [(m.role, bool(m.tool_calls)) for m in history_of(service.chats.get(conversation.id))]
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False)]


def test_a_tool_that_is_not_read_only_waits_for_approval(service: Service) -> None:
    assert service.chats is not None
    tool = GuardedWeather()
    approvals = Approvals("approve")
    conversation = service.chats.create()
    reply = Conversations(service, service.chats).send(
        conversation.id,
        weather_question("London"),
        ChatSettings(),
        greedy(),
        tools=ToolSession([tool], approvals),
    )
    kinds = run_reply(reply)
    assert kinds.index("approval") < kinds.index("round")
    assert [step.name for step in approvals.asked] == ["get_weather"]
    assert json.loads(approvals.asked[0].arguments) == {"city": "London"}  # the full arguments are shown
    assert tool.runs == [{"city": "London"}]
    assert service.chats.get(conversation.id).messages[-1].content == weather_answer("London")


def test_a_rejected_call_never_runs_and_the_model_is_told(service: Service) -> None:
    assert service.chats is not None
    tool = GuardedWeather()
    conversation = service.chats.create()
    reply = Conversations(service, service.chats).send(
        conversation.id,
        weather_question("Tokyo"),
        ChatSettings(),
        greedy(),
        tools=ToolSession([tool], Approvals("reject"), max_rounds=2),
    )
    run_reply(reply)
    assert tool.runs == []
    stored = service.chats.get(conversation.id)
    first = stored.messages[-1].tool_rounds[0].calls[0]
    assert (first.status, first.result) == ("rejected", REJECTED)
    tool_messages = [m for m in history_of(stored) if m.role == "tool"]
    assert tool_messages and all(m.content == REJECTED for m in tool_messages)
    assert reply.loop.stream is not None
    assert REJECTED in reply.loop.stream.prompt.text  # the model was shown the rejection as the result


def test_the_round_limit_ends_the_loop(service: Service) -> None:
    """A model asked about a trained city calls again each time it is shown its own call rejected; the limit
    stops the rounds and the last generation is offered no tools."""
    assert service.chats is not None
    tool = GuardedWeather()
    conversation = service.chats.create()
    reply = Conversations(service, service.chats).send(
        conversation.id,
        weather_question("Rome"),
        ChatSettings(),
        greedy(),
        tools=ToolSession([tool], Approvals("reject"), max_rounds=1),
    )
    run_reply(reply)
    stored = service.chats.get(conversation.id).messages[-1]
    assert len(stored.tool_rounds) == 1 and tool.runs == []


def test_regenerating_a_tool_reply_runs_the_loop_again(service: Service, weather_box: Toolbox) -> None:
    assert service.chats is not None
    conversations = Conversations(service, service.chats)
    conversation = service.chats.create()
    session = ToolSession(weather_box.enabled(), Approvals("reject"))
    run_reply(
        conversations.send(
            conversation.id, weather_question("Madrid"), ChatSettings(), greedy(), tools=session
        )
    )
    run_reply(conversations.regenerate(conversation.id, ChatSettings(), greedy(), tools=session))
    last = service.chats.get(conversation.id).messages[-1]
    assert len(last.alternatives) == 2 and last.content == weather_answer("Madrid")
    assert len(last.tool_rounds) == 1
    exported = service.chats.export_json(conversation.id)
    imported = service.chats.import_json(exported)
    again = service.chats.get(imported.id).messages[-1]
    assert again.tool_rounds == last.tool_rounds  # export / import keep the steps
