"""The Anthropic Messages API (/v1/messages, /v1/messages/count_tokens) with the official anthropic client against
a real `webui serve`: messages whole and streamed (raw events and the client's ``messages.stream`` helper), a
tool loop on the default model (SmolLM2, made to call with tool_choice any: the input follows the tool's
schema), thinking blocks apart from the answer with the tiny agent model, which also runs a tool loop on its
own, token counts, the API key, and refusals in Anthropic's error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema_rs
import pytest
from anthropic.types import Message, TextBlock, ThinkingBlock, ToolUseBlock

from tests.support import agent_models
from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE
KEY = "anthropic-test-key"
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather and forecast of a city.",
    "input_schema": WEATHER_SCHEMA,
}
TIME: Any = {
    "name": "get_time",
    "description": "The local time in a timezone.",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}
QUESTION: Any = [{"role": "user", "content": "What is the weather in Paris today?"}]
# The 2.x client has no sampler fields (temperature, top_p, top_k): they go in the body as extras.
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-anthropic")
    with Server(root, default_model_path, extra_args=["--api-key", KEY]).running() as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url.rstrip("/"), api_key=KEY, max_retries=0)


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def tool_uses(message: Message) -> list[ToolUseBlock]:
    return [block for block in message.content if isinstance(block, ToolUseBlock)]


def follows_schema(value: Any, schema: dict[str, Any]) -> bool:
    return bool(jsonschema_rs.validator_for(schema).is_valid(value))


def events_of(client: anthropic.Anthropic, **arguments: Any) -> list[Any]:
    """The raw events of a streamed message (``stream=True``), pings included."""
    with client.messages.create(**arguments, stream=True) as stream:
        return list(stream)


def wire_event_names(server: Server, body: dict[str, Any]) -> list[str]:
    """The ``event:`` names of a streamed answer as they come over the wire."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{server.url}v1/messages", json=body, headers=headers, timeout=120) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert not any(line.startswith("data: [DONE]") for line in lines)
    return [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]


# -- messages ------------------------------------------------------------------------------------------------


def test_a_message_whole_and_streamed(client: anthropic.Anthropic, server: Server) -> None:
    arguments: dict[str, Any] = dict(
        model=M, max_tokens=24, messages=QUESTION, extra_body=GREEDY, system="You are a weather reporter."
    )
    whole = client.messages.create(**arguments)
    assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
    assert [block.type for block in whole.content] == ["text"]
    assert text_of(whole).strip()
    assert whole.stop_reason in ("end_turn", "max_tokens") and whole.stop_sequence is None
    assert whole.usage.output_tokens > 0
    assert whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0) > 0

    # Raw events, in Anthropic's order: one text block between message_start and message_stop.
    events = events_of(client, **arguments)
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == [
        "content_block_start",
        *["content_block_delta"] * (len(kinds) - 5),
        "content_block_stop",
    ]
    assert events[0].message.content == [] and events[0].message.stop_reason is None
    streamed = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert streamed.strip()
    assert events[-2].delta.stop_reason in ("end_turn", "max_tokens") and events[-2].usage.output_tokens > 0

    # The client's helper puts the same message together.
    with client.messages.stream(**arguments) as stream:
        deltas = [event.text for event in stream if event.type == "text"]
        final = stream.get_final_message()
    assert "".join(deltas) == text_of(final) and text_of(final).strip()
    assert final.content[0].type == "text" and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 0

    # On the wire every event is named, with a ping after message_start, as Anthropic's stream has.
    names = wire_event_names(server, {**arguments, "stream": True})
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"


def test_max_tokens_ends_the_reply_with_its_stop_reason(client: anthropic.Anthropic) -> None:
    answer = client.messages.create(
        model=M,
        max_tokens=3,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        extra_body=GREEDY,
    )
    assert answer.stop_reason == "max_tokens" and answer.usage.output_tokens == 3


def test_text_blocks_system_blocks_and_sampler_fields_are_taken(client: anthropic.Anthropic) -> None:
    answer = client.messages.create(
        model=M,
        max_tokens=16,
        system=[{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hello!"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi. How can I help?"}]},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        ],
        stop_sequences=["\n\n"],
        metadata={"user_id": "someone"},
        # Sampler fields the 2.x client no longer has (older clients and other tools send them) and Palabre's.
        extra_body={"temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "seed": 3},
    )
    assert "\n\n" not in text_of(answer)
    assert answer.stop_reason in ("end_turn", "max_tokens", "stop_sequence")


def test_a_stop_sequence_that_ends_the_reply_is_named(client: anthropic.Anthropic) -> None:
    ask = {"model": M, "max_tokens": 40, "messages": [{"role": "user", "content": "Describe the sea."}]}
    whole = client.messages.create(**ask, stop_sequences=["e"])  # type: ignore[arg-type]
    assert (whole.stop_reason, whole.stop_sequence) == ("stop_sequence", "e")
    assert "e" not in text_of(whole)
    with client.messages.stream(**ask, stop_sequences=["e"]) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "e")


# -- tools ---------------------------------------------------------------------------------------------------


def test_the_tool_loop_calls_then_answers_from_the_result(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model=M,
        max_tokens=96,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    calls = tool_uses(first)
    assert calls and all(call.name == "get_weather" for call in calls)
    assert all(call.id.startswith("toolu_") for call in calls) and len({c.id for c in calls}) == len(calls)
    assert all(follows_schema(call.input, WEATHER_SCHEMA) for call in calls)

    # The assistant's content goes back as the client gave it, and a tool_result answers each call.
    history: Any = [
        *QUESTION,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 22 degrees Celsius."}
                for call in calls
            ],
        },
    ]
    for choice in ({"type": "none"}, {"type": "auto"}):
        final = client.messages.create(
            model=M,
            max_tokens=48,
            messages=history,
            tools=[WEATHER],
            tool_choice=choice,
            extra_body={"seed": 1},
        )
        assert not tool_uses(final), choice
        assert text_of(final).strip()
        assert final.stop_reason in ("end_turn", "max_tokens")

    # A result given as text blocks, marked as an error, is taken too.
    history[-1]["content"] = [
        {
            "type": "tool_result",
            "tool_use_id": calls[0].id,
            "content": [{"type": "text", "text": "The weather service is down."}],
            "is_error": True,
        },
        {"type": "text", "text": "Please answer anyway."},
    ]
    final = client.messages.create(
        model=M,
        max_tokens=24,
        messages=history,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        extra_body=GREEDY,
    )
    assert text_of(final).strip() and not tool_uses(final)


def test_streamed_tool_use_input_is_put_together_by_the_client(client: anthropic.Anthropic) -> None:
    arguments: dict[str, Any] = dict(
        model=M,
        max_tokens=96,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    whole = client.messages.create(**arguments)
    expected = [(call.name, call.input) for call in tool_uses(whole)]
    assert expected

    with client.messages.stream(**arguments) as stream:
        for _ in stream:
            pass
        final = stream.get_final_message()
    assert [(call.name, call.input) for call in tool_uses(final)] == expected
    assert final.stop_reason == "tool_use"

    # On the wire: each tool_use block opens with its id, name and an empty input, then input_json_delta
    # pieces whose text is the input's JSON.
    events = events_of(client, **arguments)
    starts = [e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert [(e.content_block.name, e.content_block.input) for e in starts] == [(n, {}) for n, _ in expected]
    for start, (_, value) in zip(starts, expected, strict=True):
        pieces = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta"
            and e.index == start.index
            and e.delta.type == "input_json_delta"
        ]
        assert json.loads("".join(pieces)) == value


def test_a_forced_call_follows_the_schema_whatever_the_seed(client: anthropic.Anthropic) -> None:
    for seed in range(8):
        answer = client.messages.create(
            model=M,
            max_tokens=128,
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            extra_body={"temperature": 1.0, "seed": seed},
        )
        calls = tool_uses(answer)
        assert len(calls) == 1, (seed, answer.content)
        assert calls[0].name == "get_weather" and follows_schema(calls[0].input, WEATHER_SCHEMA), seed


def test_a_named_tool_choice_calls_that_tool(client: anthropic.Anthropic) -> None:
    answer = client.messages.create(
        model=M,
        max_tokens=96,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    )
    calls = tool_uses(answer)
    assert [call.name for call in calls] == ["get_time"]
    assert follows_schema(calls[0].input, TIME["input_schema"])


def test_output_config_format_gives_json_that_follows_the_schema(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    answer = client.messages.create(
        model=M,
        max_tokens=64,
        messages=QUESTION,
        extra_body=GREEDY,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert follows_schema(json.loads(text_of(answer)), schema)


def test_the_client_lists_the_models_by_name(client: anthropic.Anthropic) -> None:
    assert M in [model.id for model in client.models.list().data]


# -- token counts --------------------------------------------------------------------------------------------


def test_count_tokens_counts_the_prompt_the_model_gets(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=M, messages=QUESTION).input_tokens
    longer = client.messages.count_tokens(
        model=M, messages=[{"role": "user", "content": "What is the weather in Paris today? " * 4}]
    ).input_tokens
    with_tools = client.messages.count_tokens(model=M, messages=QUESTION, tools=[WEATHER]).input_tokens
    with_system = client.messages.count_tokens(model=M, messages=QUESTION, system="Be brief.").input_tokens
    assert 0 < short < longer and short < with_tools and short < with_system

    # About what the reply's usage reports for the same prompt (the loader may count a BOS token more).
    answer = client.messages.create(model=M, max_tokens=2, messages=QUESTION, tools=[WEATHER])
    used = answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0)
    assert abs(used - with_tools) <= 1


# -- the API key ---------------------------------------------------------------------------------------------


def test_the_api_key_is_needed_and_taken_as_x_api_key_or_bearer(server: Server) -> None:
    base_url = server.url.rstrip("/")
    wrong = anthropic.Anthropic(base_url=base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.messages.create(model=M, max_tokens=2, messages=QUESTION)
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    missing = httpx.post(f"{server.url}v1/messages", json={"model": M, "max_tokens": 2, "messages": QUESTION})
    assert missing.status_code == 401
    assert missing.json()["type"] == "error" and missing.json()["error"]["type"] == "authentication_error"

    bearer = anthropic.Anthropic(base_url=base_url, auth_token=KEY, max_retries=0)  # Authorization: Bearer
    assert bearer.messages.create(model=M, max_tokens=2, messages=QUESTION).usage.output_tokens > 0


# -- refusals ------------------------------------------------------------------------------------------------

IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": None}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "Hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": [IMAGE]}]}, "not an image"),  # a PNG's signature only
    ({"messages": [{"role": "assistant", "content": [IMAGE]}]}, "image content blocks are not supported"),
    (
        {
            "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
            ]
        },
        "'tool_use' are not supported in user messages",
    ),
    (
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "Server tools are not available here: web_search",
    ),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ({"tool_choice": {"type": "any"}}, "needs tools"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"thinking": {"type": "enabled", "budget_tokens": -5}}, "budget_tokens"),
    ({"temperature": 9}, "temperature"),
    ({"preset": "no-such-preset"}, "no-such-preset"),
]


@pytest.mark.parametrize(("change", "reason"), BAD_REQUESTS)
def test_bad_requests_are_400s_in_anthropics_shape(
    server: Server, change: dict[str, Any], reason: str
) -> None:
    body = {"model": M, "max_tokens": 8, "messages": QUESTION, **change}
    body = {key: value for key, value in body.items() if value is not None}
    reply = httpx.post(f"{server.url}v1/messages", json=body, headers={"x-api-key": KEY}, timeout=60)
    assert reply.status_code == 400, reply.text
    payload = reply.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert reason in payload["error"]["message"], payload


def test_the_client_sees_its_own_errors(client: anthropic.Anthropic, server: Server) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=QUESTION)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "claude-sonnet-4-5" in missing.value.message and M in missing.value.message
    with pytest.raises(anthropic.BadRequestError, match="not an image"):
        client.messages.create(model=M, max_tokens=8, messages=[{"role": "user", "content": [IMAGE]}])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model=M, messages=[])
    not_json = httpx.post(
        f"{server.url}v1/messages",
        content=b"{not json",
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


# -- a thinking, tool-calling model (the tiny agent model, Qwen3's template) -------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[anthropic.Anthropic]:
    root = tmp_path_factory.mktemp("api-anthropic-agent")
    server = Server(root, agent_gguf_path, extra_args=["--model", agent_gguf_path.name])
    with server.running():
        yield anthropic.Anthropic(base_url=server.url.rstrip("/"), api_key="unused", max_retries=0)


AGENT = agent_models.GGUF_NAME


def thinking_of(message: Message) -> list[str]:
    return [block.thinking for block in message.content if isinstance(block, ThinkingBlock)]


def test_thinking_comes_as_its_own_block(agent: anthropic.Anthropic) -> None:
    question, reasoning, answer = agent_models.QUESTIONS[0]
    asked: Any = [{"role": "user", "content": question}]
    reply = agent.messages.create(model=AGENT, max_tokens=200, messages=asked, extra_body=GREEDY)
    assert [block.type for block in reply.content] == ["thinking", "text"]
    assert thinking_of(reply) == [reasoning] and text_of(reply) == answer
    assert reply.content[0].signature == ""  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"

    # Streamed: thinking deltas in the first block, a signature, then the answer's text in the second.
    with agent.messages.stream(model=AGENT, max_tokens=200, messages=asked, extra_body=GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "".join(e.thinking for e in events if e.type == "thinking") == reasoning
    assert "".join(e.text for e in events if e.type == "text") == answer
    assert [e.type for e in events if e.type in ("thinking", "signature", "text")] == sorted(
        (e.type for e in events if e.type in ("thinking", "signature", "text")),
        key=["thinking", "signature", "text"].index,
    )
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert thinking_of(final) == [reasoning] and text_of(final) == answer

    # Turned on with a budget it is the same; turned off there is no thinking block.
    budgeted = agent.messages.create(
        model=AGENT,
        max_tokens=200,
        messages=asked,
        extra_body=GREEDY,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert thinking_of(budgeted) == [reasoning] and text_of(budgeted) == answer
    omitted = agent.messages.create(
        model=AGENT,
        max_tokens=200,
        messages=asked,
        extra_body=GREEDY,
        thinking={"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
    )
    assert thinking_of(omitted) == [""] and text_of(omitted) == answer  # thought, but not shown
    off = agent.messages.create(
        model=AGENT, max_tokens=200, messages=asked, extra_body=GREEDY, thinking={"type": "disabled"}
    )
    assert [block.type for block in off.content] == ["text"] and text_of(off) == answer
    with agent.messages.stream(
        model=AGENT, max_tokens=200, messages=asked, extra_body=GREEDY, thinking={"type": "disabled"}
    ) as stream:
        assert not [e for e in stream if e.type == "thinking"]
        assert text_of(stream.get_final_message()) == answer


def test_the_agent_model_runs_a_tool_loop_on_its_own(agent: anthropic.Anthropic) -> None:
    """tool_choice auto: the model thinks, calls get_weather, then answers from the result."""
    city = "Tokyo"
    function = agent_models.WEATHER_TOOL["function"]
    tools: Any = [
        {
            "name": function["name"],
            "description": function["description"],
            "input_schema": function["parameters"],
        }
    ]
    asked: Any = [{"role": "user", "content": agent_models.weather_question(city)}]
    with agent.messages.stream(
        model=AGENT, max_tokens=200, messages=asked, tools=tools, extra_body=GREEDY
    ) as stream:
        for _ in stream:
            pass
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    assert thinking_of(first) == [agent_models.weather_call_reasoning(city)]
    calls = tool_uses(first)
    assert [(call.name, call.input) for call in calls] == [("get_weather", {"city": city})]

    # The thinking goes back with the call (within the loop the model reads it), then the tool's result.
    history: Any = [
        *asked,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": calls[0].id,
                    "content": agent_models.weather_result(city),
                }
            ],
        },
    ]
    final = agent.messages.create(
        model=AGENT, max_tokens=200, messages=history, tools=tools, extra_body=GREEDY
    )
    assert final.stop_reason == "end_turn" and not tool_uses(final)
    assert text_of(final) == agent_models.weather_answer(city)
    assert thinking_of(final) == [agent_models.weather_answer_reasoning(city)]
