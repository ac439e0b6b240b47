"""The OpenAI Responses API (POST /v1/responses) with the official openai client against a real `webui serve`:
text replies whole and streamed (every typed event parsed by the SDK, the streamed response equal to the whole
one), a function tool loop on the default model (SmolLM2: a required call follows the tool's schema, its result
goes back as items and the model answers), the reasoning item of a template that opens a thought, the tiny
agent model's reasoning apart from its answer and the tool loop it runs on its own, and the 400s a client sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest
from openai._models import construct_type
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent as RawResponseStreamEvent

from tests.support import agent_models
from tests.support.servers import Server
from tests.support.thinking import assert_markers_stay_out
from webui.api.core_requests import CoreChatRequest
from webui.api.responses_protocol import ResponsesRequest
from webui.api.responses_serving import ResponseAnswer
from webui.api.streams import Started
from webui.core.loader import Chunk, ToolCallDelta
from webui.core.params import GenerationParams
from webui.core.service import ChatSettings
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}
# The Responses API's function tools are flat: no nested "function" object.
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather of a city.",
    "parameters": WEATHER_PARAMETERS,
    "strict": True,
}
TIME: Any = {
    "type": "function",
    "name": "get_time",
    "description": "The local time in a timezone.",
    "parameters": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}
QUESTION = "What is the weather in Paris today?"
# ChatML that opens a thought while thinking is on: SmolLM2 reasons in it until the thinking budget closes it.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% endif %}"
)
THINKING = {"instruction_template_str": THINKING_TEMPLATE, "thinking_budget": 24}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    # One slot: the seeded samples below are compared across requests, and which slot's cached prefix a request
    # reuses changes llama.cpp's rounding of the rest (see the README, Performance, on split prompts).
    server = Server(
        tmp_path_factory.mktemp("api-responses"), default_model_path, extra_args=["--setting", "parallel=1"]
    )
    with server.running() as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


def items_of(response: Any, kind: str) -> list[Any]:
    return [item for item in response.output if item.type == kind]


def follows_schema(arguments: str, schema: dict[str, Any]) -> bool:
    return bool(jsonschema_rs.validator_for(schema).is_valid(json.loads(arguments)))


def replayed(response: Any) -> list[dict[str, Any]]:
    """A response's output items sent back as input, as the SDK gives them."""
    return [item.model_dump(exclude_none=True) for item in response.output]


# -- text ----------------------------------------------------------------------------------------------------


def test_a_reply_is_a_response_with_one_message_item(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=M, input="Say hello.", instructions="Answer briefly.", max_output_tokens=24, temperature=0.5
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == M and response.created_at > 0
    assert response.instructions == "Answer briefly." and response.temperature == 0.5
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    [part] = message.content
    assert part.type == "output_text" and part.text.strip() and part.annotations == []
    assert response.output_text == part.text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert response.status in ("completed", "incomplete")


def test_a_reply_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=M, input="Tell me a long story about a dragon.", max_output_tokens=5
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 5
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"

    # Streamed, the last event says so too (as OpenAI's: response.incomplete).
    events = list(
        client.responses.create(model=M, input="Tell me a long story.", max_output_tokens=5, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


def test_a_streamed_reply_is_typed_events_ending_in_the_whole_response(client: openai.OpenAI) -> None:
    arguments: Any = dict(model=M, input="Name three colours.", max_output_tokens=32, temperature=0)
    whole = client.responses.create(**arguments)
    events = list(client.responses.create(**arguments, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress"
    assert kinds[2:5] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    done = next(event for event in events if event.type == "response.output_text.done")
    final = events[-1].response
    assert deltas == done.text == final.output_text == whole.output_text  # the same seeded reply
    assert final.id == events[0].response.id
    assert final.usage is not None and final.usage.output_tokens == whole.usage.output_tokens

    # The SDK's stream helper rebuilds the response from the events.
    with client.responses.stream(**arguments) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        if whole.status == "completed":
            assert stream.get_final_response().output_text == whole.output_text
    assert "".join(texts) == whole.output_text


def test_the_stream_names_each_event_on_its_event_line(server: Server) -> None:
    body = {"model": M, "input": "Hi!", "max_output_tokens": 6, "stream": True}
    with httpx.stream("POST", f"{server.url}v1/responses", json=body, timeout=120) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = answer.read().decode()
    blocks = [block for block in text.split("\n\n") if block.strip()]
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        assert json.loads(data_line[len("data: ") :])["type"] == event_line[len("event: ") :]


def test_a_client_that_leaves_mid_stream_frees_the_engine(client: openai.OpenAI) -> None:
    long: Any = dict(
        model=M, input="Tell me a story.", max_output_tokens=1500, extra_body={"ban_eos_token": True}
    )
    with client.responses.stream(**long) as stream:
        started = time.monotonic()
        deltas = 0
        for event in stream:
            deltas += event.type == "response.output_text.delta"
            if deltas == 20:
                break
        rate = deltas / (time.monotonic() - started)  # tokens per second on this machine, now
    # The abandoned reply had ~1480 tokens to go; had it kept the engine, the next request would wait for them.
    begun = time.monotonic()
    assert client.responses.create(model=M, input="Hi", max_output_tokens=2).usage is not None
    # Half the time the rest of it would take: a busy machine may slow the next request, never by that much.
    assert time.monotonic() - begun < (1480 / rate) / 2


def test_every_event_shape_is_accumulated_by_the_sdk_into_the_whole_response() -> None:
    """At the seam, without a model: chunks of every kind, in an unusual order (text after calls, a call
    without arguments), read by the SDK's own stream state; it rebuilds exactly the response."""
    body = ResponsesRequest(input="Hi")
    answer = ResponseAnswer(
        "resp_1", Started([], "m"), body, CoreChatRequest([], ChatSettings(), GenerationParams())
    )
    chunks = [
        Chunk(reasoning="Let me ", tokens=1),
        Chunk(reasoning="think.", tokens=1),
        Chunk("Calling.", tokens=1),
        Chunk(tool_calls=(ToolCallDelta(0, "call_a", "f", '{"x": '),), tokens=1),
        Chunk(tool_calls=(ToolCallDelta(0, arguments="1}"),), tokens=1),
        Chunk(tool_calls=(ToolCallDelta(1, "call_b", "g"),), tokens=1),
        Chunk(" Done.", tokens=1, finish_reason="tool_calls"),
    ]
    raw = answer.events_of(chunks)
    assert [event["sequence_number"] for event in raw] == list(range(len(raw)))
    state: Any = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in raw:
        state.handle_event(construct_type(type_=RawResponseStreamEvent, value=event))
    final = state._completed_response
    assert final is not None and final.status == "completed"
    assert [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
        "message",
    ]
    assert final.output[0].content[0].text == "Let me think."
    assert [(c.call_id, c.name, c.arguments) for c in items_of(final, "function_call")] == [
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", "{}"),
    ]
    assert final.output_text == "Calling. Done."
    # Reasoning tokens are never more than the output tokens the loader counted (none without a loader).
    assert final.usage.output_tokens_details.reasoning_tokens == 0
    assert (
        final.model_dump(exclude_none=True)["output"]
        == answer.response.model_dump(exclude_none=True)["output"]
    )


# -- tools ---------------------------------------------------------------------------------------------------


def test_the_function_tool_loop_calls_then_answers_from_the_result(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=M,
        input=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        extra_body={"seed": 1},
        max_output_tokens=96,
    )
    assert first.status == "completed"
    [call] = first.output  # only the call: no text
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id is not None and call.id.startswith("fc_")
    assert follows_schema(call.arguments, WEATHER_PARAMETERS)
    assert first.tools[0].name == "get_weather"  # type: ignore[union-attr]

    # The call goes back as the SDK gives it, with its output.
    history: Any = [
        {"role": "user", "content": QUESTION},
        *replayed(first),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 22 degrees Celsius."},
    ]
    for tool_choice in ("auto", "none"):
        final = client.responses.create(
            model=M,
            input=history,
            tools=[WEATHER],
            tool_choice=tool_choice,
            max_output_tokens=48,
            extra_body={"seed": 1},
        )
        assert not items_of(final, "function_call")
        assert final.output_text.strip()


def test_a_streamed_call_is_rebuilt_by_the_sdk(client: openai.OpenAI) -> None:
    arguments: Any = dict(
        model=M,
        input=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        extra_body={"seed": 5},
        max_output_tokens=96,
    )
    whole = client.responses.create(**arguments)
    with client.responses.stream(**arguments) as stream:
        events = list(stream)
        final = stream.get_final_response()
    [call] = items_of(final, "function_call")
    [expected] = items_of(whole, "function_call")
    assert (call.name, call.arguments) == (expected.name, expected.arguments)
    assert follows_schema(call.arguments, WEATHER_PARAMETERS)
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert pieces == done[0].arguments == call.arguments
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.call_id == call.call_id
    assert final.output[0].parsed_arguments is None or isinstance(final.output[0].parsed_arguments, dict)  # type: ignore[union-attr]


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=M,
        input=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_time"},
        parallel_tool_calls=False,
        extra_body={"seed": 2},
        max_output_tokens=96,
    )
    calls = items_of(response, "function_call")
    assert [call.name for call in calls] == ["get_time"]
    assert follows_schema(calls[0].arguments, TIME["parameters"])


def test_a_json_schema_text_format_is_followed(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=M,
        input="Give the weather in Paris as JSON.",
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}},
        max_output_tokens=64,
        extra_body={"seed": 3},
    )
    assert follows_schema(response.output_text, schema)


# -- the conversation the model sees -------------------------------------------------------------------------

# A template that refuses to render and shows what it was given: the messages, with their reasoning and calls.
SHOW_MESSAGES = (
    "{% set ns = namespace(s='') %}{% for m in messages %}"
    "{% set ns.s = ns.s ~ '[' ~ m.role ~ ':' ~ m.content %}"
    "{% if m.reasoning_content %}{% set ns.s = ns.s ~ ' thought=' ~ m.reasoning_content %}{% endif %}"
    "{% for c in m.tool_calls or [] %}{% set ns.s = ns.s ~ ' call=' ~ c.function.name %}{% endfor %}"
    "{% if m.tool_call_id %}{% set ns.s = ns.s ~ ' answers=' ~ m.tool_call_id %}{% endif %}"
    "{% set ns.s = ns.s ~ ']' %}{% endfor %}{{ raise_exception(ns.s) }}"
)


def rendered(client: openai.OpenAI, **request: Any) -> str:
    """What SHOW_MESSAGES saw of the request's conversation."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=M, max_output_tokens=4, extra_body={"instruction_template_str": SHOW_MESSAGES}, **request
        )
    return refused.value.message


def test_input_items_become_the_conversation(client: openai.OpenAI) -> None:
    assert "[system:Be brief.][user:Hi]" in rendered(client, instructions="Be brief.", input="Hi")
    items: Any = [
        {"role": "developer", "content": "Use tools."},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "Weather"}, {"type": "input_text", "text": "?"}],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Call it."}],
        },
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_a", "output": "Sunny"},
    ]
    assert (
        "[system:Use tools.][user:Weather\n?][assistant: thought=Call it. call=get_weather][tool:Sunny answers=call_a]"
        in (rendered(client, input=items))
    )
    # An answer from an earlier turn, as an output message; its reasoning is not sent again after a new question.
    earlier: Any = [
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "id": "rs_0", "summary": [{"type": "summary_text", "text": "Greet."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"role": "user", "content": "Bye"},
    ]
    assert "[user:Hi][assistant:Hello!][user:Bye]" in rendered(client, input=earlier)


# -- thinking ------------------------------------------------------------------------------------------------


def test_reasoning_is_its_own_item_before_the_message(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=M, input=QUESTION, max_output_tokens=80, extra_body={**THINKING, "seed": 3}
    )
    reasoning, message = response.output[0], response.output[-1]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.summary == []
    assert reasoning.content and reasoning.content[0].type == "reasoning_text"
    assert reasoning.content[0].text.strip()
    assert message.type == "message" and response.output_text.strip()
    assert_markers_stay_out(reasoning.content[0].text, response.output_text)
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens >= THINKING["thinking_budget"] - 2  # type: ignore[operator]

    events = list(
        client.responses.create(
            model=M, input=QUESTION, max_output_tokens=80, extra_body={**THINKING, "seed": 3}, stream=True
        )
    )
    reasoned = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert reasoned == reasoning.content[0].text
    kinds = [e.type for e in events if e.type.endswith(".delta")]
    assert kinds == sorted(kinds, key=["response.reasoning_text.delta", "response.output_text.delta"].index)


def test_effort_none_turns_thinking_off(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=M,
        input=QUESTION,
        max_output_tokens=24,
        reasoning={"effort": "none"},
        extra_body={**THINKING, "seed": 3},
    )
    assert not items_of(response, "reasoning")
    assert response.output_text.strip()
    assert response.reasoning is not None and response.reasoning.effort == "none"


# -- refusals ------------------------------------------------------------------------------------------------


def test_bad_requests_are_400s_that_say_why(client: openai.OpenAI) -> None:
    call = {"type": "function_call", "name": "get_weather", "arguments": "{}"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search_preview"}, WEATHER]}, "tools of type: web_search_preview"),
        ({"previous_response_id": "resp_123"}, "does not store responses"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference is not supported"),
        (
            {"input": [{"type": "computer_call_output"}]},
            "items of type 'computer_call_output' are not supported",
        ),
        ({"input": [call]}, "input[0] (function_call): call_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "must be a base64 data: URL",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "'input_file' are not supported",
        ),
        ({"input": []}, "input is empty"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "nope"),
        ({"tools": [WEATHER], "tool_choice": {"type": "mcp"}}, "tool_choice must be"),
        ({"tools": [{"type": "function", "parameters": {}}]}, "no function name"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort 'extreme' is not one of"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "needs a schema"),
        ({"model": "no-such-model"}, "does not exist"),
    ]
    for extra, reason in cases:
        request: dict[str, Any] = {"model": M, "input": "Hi", "max_output_tokens": 4, **extra}
        with pytest.raises(
            openai.BadRequestError if "model" not in extra else openai.NotFoundError
        ) as refused:
            client.responses.create(**request)
        assert reason in refused.value.message, (extra, refused.value.message)
        body: Any = refused.value.body
        assert set(body) >= {"message", "type", "param", "code"}, body


def test_stored_responses_are_not_kept(client: openai.OpenAI) -> None:
    response = client.responses.create(model=M, input="Hi", max_output_tokens=2, store=True)
    with pytest.raises(openai.NotFoundError, match="does not store responses"):
        client.responses.retrieve(response.id)


# -- a thinking, tool-calling model (the tiny agent model, Qwen3's template) -------------------------------


AGENT_KEY = "agent-key"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[openai.OpenAI]:
    root = tmp_path_factory.mktemp("api-responses-agent")
    # Behind an API key, as a server an agent reaches over the network would be.
    server = Server(
        root, agent_gguf_path, extra_args=["--model", agent_gguf_path.name, "--api-key", AGENT_KEY]
    )
    with server.running():
        yield openai.OpenAI(base_url=f"{server.url}v1", api_key=AGENT_KEY, max_retries=0)


def agent_model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_the_api_key_is_needed_as_for_chat_completions(agent: openai.OpenAI) -> None:
    stranger = openai.OpenAI(base_url=str(agent.base_url), api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.responses.create(model=agent_model(agent), input="Hi", max_output_tokens=2)
    response = agent.responses.create(model=agent_model(agent), input="Hi", max_output_tokens=2)
    assert (
        response.status == "incomplete" and response.usage is not None and response.usage.output_tokens == 2
    )


AGENT_WEATHER: Any = {"type": "function", **agent_models.WEATHER_TOOL["function"]}


def test_a_thinking_models_reasoning_item_is_apart_from_its_message(agent: openai.OpenAI) -> None:
    question, reasoning, answer = agent_models.QUESTIONS[0]
    response = agent.responses.create(model=agent_model(agent), input=question, temperature=0)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == reasoning  # type: ignore[union-attr,index]
    assert response.output_text == answer
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens

    with agent.responses.stream(model=agent_model(agent), input=question, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == reasoning
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [item.type for item in done] == ["reasoning", "message"]
    assert final.output_text == answer and final.output[0].content[0].text == reasoning  # type: ignore[union-attr,index]

    off = agent.responses.create(
        model=agent_model(agent), input=question, temperature=0, reasoning={"effort": "none"}
    )
    assert [item.type for item in off.output] == ["message"] and off.output_text == answer


def test_a_tool_calling_model_runs_the_loop_on_its_own(agent: openai.OpenAI) -> None:
    """tool_choice auto: the model thinks, decides to call, then answers from the result."""
    city = "Tokyo"
    question: Any = [{"role": "user", "content": agent_models.weather_question(city)}]
    with agent.responses.stream(
        model=agent_model(agent), input=question, tools=[AGENT_WEATHER], temperature=0
    ) as stream:
        first = stream.get_final_response()
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    assert first.output[0].content[0].text == agent_models.weather_call_reasoning(city)  # type: ignore[union-attr,index]
    call = first.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": city}

    # The output goes back as items (its reasoning too: within the tool loop the template shows it).
    history = [
        *question,
        *replayed(first),
        {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": agent_models.weather_result(city),
        },
    ]
    final = agent.responses.create(
        model=agent_model(agent), input=history, tools=[AGENT_WEATHER], temperature=0
    )
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == agent_models.weather_answer(city)
    assert final.output[0].content[0].text == agent_models.weather_answer_reasoning(city)  # type: ignore[union-attr,index]
