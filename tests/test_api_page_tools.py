"""The page's tools for API clients, against a real `webui serve` with the tiny agent model and the MCP test
server (stdio, from user_data/mcp.json; every call it runs is logged to a file): with "API clients may use
these tools too" off (the default) no server tool is offered or run; on, the official OpenAI (chat whole and
streamed, Responses), Ollama and Anthropic clients get the answer the model built from the MCP tool's result,
the server-side call hidden from them; a tool that is not read-only is offered only when tools.yaml allows it
for the API; a client's own tool named like a server tool stays the client's. The setting is written the way
the page writes it (tools.yaml, through webui.core.agent.toolbox)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import anthropic
import ollama
import openai
import pytest

from tests.support.agent_models import WEATHER_TOOL, weather_answer, weather_question
from tests.support.mcp_server import stdio_entry
from tests.support.servers import Server, wait_until_serving
from webui.config import PROJECT_ROOT
from webui.core.agent.toolbox import ToolSettings, write_tool_settings

pytestmark = [pytest.mark.slow]

# Everything but the MCP server's get_weather and save_note is switched off (the model knows get_weather).
OFF = ["calculator", "current_datetime", "read_file", "fetch_page", "explode"]
GREEDY = {"temperature": 0.0, "max_tokens": 96, "seed": 1}


class PageToolsServer(Server):
    """``webui serve`` with the tiny agent model; ``configure`` restarts it with other tool choices."""

    def __init__(self, root: Path, model: Path) -> None:
        super().__init__(root)
        self.root = root
        self.agent_model = model
        self.config = type(self.config)(user_data_dir=self.config.user_data_dir)
        models = self.config.user_data_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / model.name).symlink_to(model)
        self.current: tuple[bool, bool, tuple[str, ...]] | None = None
        self.calls = root / "calls-0.txt"

    def start(self) -> None:
        command = [sys.executable, "-m", "webui", "serve", "--port", str(self.port)]
        command += ["--user-data-dir", str(self.config.user_data_dir)]
        command += ["--model", self.agent_model.name, "--setting", "n_ctx=1024"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_serving(self.url, self.process, self.log)

    def configure(self, *, expose: bool, guarded: bool = False, allowed: Sequence[str] = ()) -> None:
        """The user's choices (as the Tools panel saves them) and the MCP server's mode; a restart when they
        change (a fresh calls log each time)."""
        wanted = (expose, guarded, tuple(allowed))
        if wanted == self.current:
            return
        self.stop()
        user_data = self.config.user_data_dir
        self.calls = self.root / f"calls-{len(list(self.root.glob('calls-*')))}.txt"
        self.calls.touch()
        mcp = {"mcpServers": {"weather": stdio_entry(guarded=guarded, calls=self.calls)}}
        (user_data / "mcp.json").write_text(json.dumps(mcp))
        settings = ToolSettings(disabled=OFF, expose_to_api=expose, api_allowed=list(allowed))
        write_tool_settings(user_data, settings)
        self.start()
        self.current = wanted

    def calls_run(self) -> list[str]:
        return self.calls.read_text().splitlines()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[PageToolsServer]:
    running = PageToolsServer(tmp_path_factory.mktemp("api-page-tools"), agent_gguf_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def model(agent_gguf_path: Path) -> str:
    return agent_gguf_path.name


def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0, timeout=120)


def ask(server: Server, model: str, question: str, **extra: object) -> openai.types.chat.ChatCompletion:
    return openai_client(server).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        **GREEDY,  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def prompt_tokens(server: Server, model: str) -> int:
    """The prompt of a question that needs no tool: longer exactly when tools are offered."""
    reply = ask(server, model, "Say hello.")
    assert reply.usage is not None
    return reply.usage.prompt_tokens


def test_api_tools_are_the_enabled_ones_that_need_no_approval(tmp_path: Path) -> None:
    """Without a webui server: what Toolbox.api_tools gives the API, from tools.yaml as the page saves it (the
    MCP test server's tools all ask first here)."""
    from webui.core.agent import Toolbox

    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"weather": stdio_entry(guarded=True)}}))
    box = Toolbox(tmp_path)
    box.start_servers()
    try:
        assert box.api_tools() == []  # off by default
        box.update(enabled=["calculator", "get_weather", "save_note"], expose_to_api=True)
        assert [t.spec.name for t in box.api_tools()] == ["calculator"]  # the others ask first
        box.update(api_allowed=["get_weather"])
        assert [t.spec.name for t in box.api_tools()] == ["calculator", "get_weather"]
        assert Toolbox(tmp_path).settings.api_allowed == ["get_weather"]  # stored in tools.yaml
        box.update(expose_to_api=False)
        assert box.api_tools() == []
    finally:
        box.close()


def test_off_by_default_nothing_is_offered_or_run(server: PageToolsServer, model: str) -> None:
    server.configure(expose=False)
    reply = ask(server, model, weather_question("Paris"))
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content != weather_answer("Paris")
    assert server.calls_run() == [] and "palabre_tool_steps" not in (reply.model_extra or {})
    # Nothing a request says turns them on: its own tools are all it gets.
    own = ask(server, model, weather_question("Paris"), tools=[WEATHER_TOOL])
    assert own.choices[0].finish_reason == "tool_calls"
    assert server.calls_run() == []


def test_on_the_server_runs_its_tool_and_the_client_gets_the_answer(
    server: PageToolsServer, model: str
) -> None:
    server.configure(expose=True)
    reply = ask(server, model, weather_question("Paris"))
    choice = reply.choices[0]
    assert choice.message.content == weather_answer("Paris")  # built from the MCP tool's result
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert server.calls_run() == ['get_weather {"city": "Paris"}']
    # The server's call is told in an extra field (official clients keep it as an extra).
    [step] = (reply.model_extra or {})["palabre_tool_steps"]
    assert (step["choice"], step["name"], step["status"]) == (0, "get_weather", "done")
    assert (
        json.loads(step["arguments"]) == {"city": "Paris"} and json.loads(step["result"])["temperature"] == 22
    )
    assert reply.usage is not None
    # Both rounds are counted: more than the first round's prompt alone.
    assert reply.usage.prompt_tokens > prompt_tokens(server, model)


def test_on_streamed_only_the_answer_comes(server: PageToolsServer, model: str) -> None:
    server.configure(expose=True)
    stream = openai_client(server).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": weather_question("Tokyo")}],
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,  # type: ignore[arg-type]
    )
    content, finishes, calls, usage, steps = "", [], [], None, []
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
                steps = (chunk.model_extra or {}).get("palabre_tool_steps", [])
    assert content == weather_answer("Tokyo")
    assert finishes == ["stop"] and calls == []
    assert [step["name"] for step in steps] == ["get_weather"]  # on the choice's last chunk
    assert usage is not None and usage.completion_tokens > 0
    assert server.calls_run()[-1] == 'get_weather {"city": "Tokyo"}'


def test_on_the_ollama_and_anthropic_clients_get_the_answer(server: PageToolsServer, model: str) -> None:
    server.configure(expose=True)
    client = ollama.Client(host=server.url.rstrip("/"))
    reply = client.chat(
        model=model,
        messages=[{"role": "user", "content": weather_question("London")}],
        options={"temperature": 0, "num_predict": 96, "seed": 1},
    )
    assert reply.message.content == weather_answer("London")
    assert not reply.message.tool_calls and reply.done_reason == "stop"
    assert server.calls_run()[-1] == 'get_weather {"city": "London"}'
    parts = list(
        client.chat(
            model=model,
            messages=[{"role": "user", "content": weather_question("Rome")}],
            options={"temperature": 0, "num_predict": 96, "seed": 1},
            stream=True,
        )
    )
    assert "".join(part.message.content or "" for part in parts) == weather_answer("Rome")
    assert [part.done for part in parts].count(True) == 1 and parts[-1].done_reason == "stop"
    assert not any(part.message.tool_calls for part in parts)
    assert server.calls_run()[-1] == 'get_weather {"city": "Rome"}'
    message = anthropic.Anthropic(base_url=server.url.rstrip("/"), api_key="unused").messages.create(
        model=model,
        max_tokens=96,
        extra_body={"temperature": 0, "seed": 1},  # the 2.x client has no sampler fields
        messages=[{"role": "user", "content": weather_question("Berlin")}],
    )
    texts = [block.text for block in message.content if block.type == "text"]
    assert texts == [weather_answer("Berlin")] and message.stop_reason == "end_turn"
    assert server.calls_run()[-1] == 'get_weather {"city": "Berlin"}'


def test_on_the_responses_api_gets_the_answer(server: PageToolsServer, model: str) -> None:
    server.configure(expose=True)
    response = openai_client(server).responses.create(
        model=model, input=weather_question("Madrid"), temperature=0, max_output_tokens=96
    )
    assert response.output_text == weather_answer("Madrid") and response.status == "completed"
    assert [item.type for item in response.output if item.type == "function_call"] == []
    assert server.calls_run()[-1] == 'get_weather {"city": "Madrid"}'


def test_a_clients_tool_named_like_a_server_tool_is_the_clients(server: PageToolsServer, model: str) -> None:
    server.configure(expose=True)
    before = server.calls_run()
    reply = ask(server, model, weather_question("Madrid"), tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Madrid"}
    assert server.calls_run() == before  # the client runs it, not the server


def test_a_client_with_tools_of_its_own_also_gets_the_servers(server: PageToolsServer, model: str) -> None:
    server.configure(expose=True)
    lookup = {
        "type": "function",
        "function": {
            "name": "lookup_train",
            "description": "Find a train between two stations.",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
        },
    }
    reply = ask(server, model, weather_question("Berlin"), tools=[lookup])
    choice = reply.choices[0]
    assert choice.message.content == weather_answer("Berlin") and not choice.message.tool_calls
    assert server.calls_run()[-1] == 'get_weather {"city": "Berlin"}'
    # Forcing a call of its own tools (or asking for none) leaves the server's out.
    before = server.calls_run()
    for choice_ in ("required", "none"):
        other = ask(server, model, weather_question("Berlin"), tools=[lookup], tool_choice=choice_)
        assert other.choices[0].message.content != weather_answer("Berlin")
        assert all(c.function.name == "lookup_train" for c in other.choices[0].message.tool_calls or [])
    assert server.calls_run() == before


def test_a_tool_that_asks_first_is_offered_only_when_allowed_for_the_api(
    server: PageToolsServer, model: str
) -> None:
    server.configure(expose=False, guarded=True)
    bare = prompt_tokens(server, model)
    # On, but get_weather (and save_note) are not read-only: nobody could approve, so neither is offered.
    server.configure(expose=True, guarded=True)
    assert prompt_tokens(server, model) == bare
    reply = ask(server, model, weather_question("Rome"))
    assert reply.choices[0].message.content != weather_answer("Rome") and server.calls_run() == []
    # Allowed for the API in tools.yaml (the stored "always"): offered and run.
    server.configure(expose=True, guarded=True, allowed=["get_weather"])
    assert prompt_tokens(server, model) > bare
    reply = ask(server, model, weather_question("Rome"))
    assert reply.choices[0].message.content == weather_answer("Rome")
    assert server.calls_run() == ['get_weather {"city": "Rome"}']
