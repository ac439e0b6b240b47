"""Tools and thinking through the OpenAI-compatible API, with the official openai client against a real
`webui serve` on the default model (SmolLM2): the tool loop whole and streamed (the SDK's accumulator rebuilds
the calls), forced and named calls that follow the tool's schema, the reasoning of a template that opens a
thought, the thinking switches, and the errors a client sees for bad tools."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.support import agent_models
from tests.support.servers import Server
from tests.support.thinking import assert_markers_stay_out
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE
WEATHER_PARAMETERS = {
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
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather and forecast of a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
QUESTION: Any = [{"role": "user", "content": "What is the weather in Paris today?"}]
# ChatML that opens a thought after the assistant's header while thinking is on: SmolLM2 reasons inside it,
# and the thinking budget makes the engine close it so that the model answers.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% endif %}"
)
THINKING = {"instruction_template_str": THINKING_TEMPLATE, "thinking_budget": 24}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("api-tools-openai"), default_model_path).running() as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


def function_calls(message: Any) -> list[ChatCompletionMessageFunctionToolCall]:
    """The message's function calls (the SDK types them as function or custom calls)."""
    calls = message.tool_calls or []
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls)
    return list(calls)


def follows_schema(arguments: str, schema: dict[str, Any]) -> bool:
    return bool(jsonschema_rs.validator_for(schema).is_valid(json.loads(arguments)))


def tool_result(call: Any, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call.id, "content": content}


# -- the tool loop -------------------------------------------------------------------------------------------


def test_the_tool_loop_calls_then_answers_from_the_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=M, messages=QUESTION, tools=[WEATHER], tool_choice="required", seed=1, max_tokens=96
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None  # only calls
    calls = function_calls(choice.message)
    assert calls and all(call.type == "function" for call in calls)
    call = calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert follows_schema(call.function.arguments, WEATHER_PARAMETERS)
    assert first.usage is not None and first.usage.completion_tokens > 0

    # The assistant message goes back as the SDK gives it, with the tool's answer to each call.
    history = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        *[tool_result(c, "Sunny, 22 degrees Celsius.") for c in calls],
    ]
    for tool_choice in ("auto", "none"):
        final = client.chat.completions.create(
            model=M, messages=history, tools=[WEATHER], tool_choice=tool_choice, seed=1, max_tokens=48
        )
        answer = final.choices[0]
        assert answer.message.tool_calls is None
        assert (answer.message.content or "").strip()
        assert answer.finish_reason in ("stop", "length")


def test_streamed_calls_are_rebuilt_exactly_by_the_sdks_accumulator(client: openai.OpenAI) -> None:
    arguments = dict(
        model=M, messages=QUESTION, tools=[WEATHER], tool_choice="required", seed=5, max_tokens=96
    )
    whole = client.chat.completions.create(**arguments)
    with client.chat.completions.stream(**arguments) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    expected = [(c.function.name, c.function.arguments) for c in function_calls(whole.choices[0].message)]
    rebuilt = function_calls(streamed.choices[0].message)
    assert [(c.function.name, c.function.arguments) for c in rebuilt] == expected  # the same greedy reply
    assert streamed.choices[0].finish_reason == "tool_calls"

    # On the wire: each call's id, type and name once, then its arguments in pieces.
    state = ChatCompletionStreamState(input_tools=[WEATHER])
    seen: dict[int, int] = {}
    for chunk in client.chat.completions.create(**arguments, stream=True):
        state.handle_chunk(chunk)
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or []:
                seen[piece.index] = seen.get(piece.index, 0) + 1
                first = seen[piece.index] == 1
                assert (piece.id is not None) == first and (piece.type is not None) == first
                assert (piece.function is not None and piece.function.name is not None) == first
    final = function_calls(state.get_final_completion().choices[0].message)
    assert [(c.function.name, c.function.arguments) for c in final] == expected
    assert len({c.id for c in final}) == len(final)


def test_a_required_call_follows_the_tools_schema_whatever_the_seed(client: openai.OpenAI) -> None:
    for seed in range(20):
        answer = client.chat.completions.create(
            model=M,
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            seed=seed,
            temperature=1.0,
            max_tokens=128,
        )
        calls = function_calls(answer.choices[0].message)
        assert len(calls) == 1, (seed, answer.choices[0])
        assert calls[0].function.name == "get_weather"
        assert follows_schema(calls[0].function.arguments, WEATHER_PARAMETERS), (seed, calls[0])


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=M,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        seed=2,
        max_tokens=96,
    )
    calls = function_calls(answer.choices[0].message)
    assert [call.function.name for call in calls] == ["get_time"]
    assert follows_schema(calls[0].function.arguments, TIME["function"]["parameters"])


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=M, messages=QUESTION, tools=[WEATHER], tool_choice="none", seed=1, max_tokens=24
    )
    assert answer.choices[0].message.tool_calls is None
    assert (answer.choices[0].message.content or "").strip()


def test_bad_tools_are_a_400_that_says_why(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "no function name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "custom"}}, "tool_choice must be"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
            "JSON schema",
        ),
        ({"chat_template_kwargs": {"messages": []}}, "cannot set messages"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort 'extreme' is not one of"),
    ]
    for extra, reason in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=M, messages=QUESTION, max_tokens=4, extra_body=extra)
        assert refused.value.status_code == 400
        assert reason in refused.value.message, (extra, refused.value.message)


# -- thinking ------------------------------------------------------------------------------------------------


def test_reasoning_comes_apart_from_the_answer(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=M, messages=QUESTION, seed=3, max_tokens=80, extra_body=THINKING
    )
    message = answer.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"].strip() and extra["reasoning"] == extra["reasoning_content"]
    assert (message.content or "").strip()
    assert_markers_stay_out(extra["reasoning_content"], message.content or "")
    # The reasoning's tokens are completion tokens too.
    assert answer.usage is not None
    assert answer.usage.completion_tokens >= THINKING["thinking_budget"]  # type: ignore[operator]

    # Streamed: the reasoning deltas first, under both names, then the answer's.
    kinds = []
    for chunk in client.chat.completions.create(
        model=M, messages=QUESTION, seed=3, max_tokens=80, extra_body=THINKING, stream=True
    ):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        delta_extra = delta.model_extra or {}
        if "reasoning_content" in delta_extra:
            assert delta_extra["reasoning"] == delta_extra["reasoning_content"] and not delta.content
            kinds.append("reasoning")
        elif delta.content:
            kinds.append("content")
    assert kinds and kinds[0] == "reasoning" and "content" in kinds
    assert kinds == sorted(kinds, key=["reasoning", "content"].index)  # no reasoning after the answer began


@pytest.mark.parametrize(
    "switch",
    [
        {"reasoning_effort": "none"},
        {"reasoning": {"effort": "none"}},
        {"chat_template_kwargs": {"enable_thinking": False}},
    ],
)
def test_thinking_turned_off_leaves_no_reasoning(client: openai.OpenAI, switch: dict[str, Any]) -> None:
    answer = client.chat.completions.create(
        model=M, messages=QUESTION, seed=3, max_tokens=24, extra_body={**THINKING, **switch}
    )
    message = answer.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    assert "reasoning" not in (message.model_extra or {})
    assert (message.content or "").strip()


def test_chat_template_kwargs_and_past_reasoning_reach_the_template(client: openai.OpenAI) -> None:
    """A template that refuses to render without a variable (raise_exception), and one that shows what it got."""
    needs_flag = "{% if not custom_flag %}{{ raise_exception('custom_flag is missing') }}{% endif %}" + (
        THINKING_TEMPLATE
    )
    with pytest.raises(openai.BadRequestError, match="custom_flag is missing"):
        client.chat.completions.create(
            model=M, messages=QUESTION, max_tokens=4, extra_body={"instruction_template_str": needs_flag}
        )
    answer = client.chat.completions.create(
        model=M,
        messages=QUESTION,
        max_tokens=4,
        extra_body={"instruction_template_str": needs_flag, "chat_template_kwargs": {"custom_flag": True}},
    )
    assert answer.choices[0].message.content is not None

    # Within a tool loop the assistant's reasoning goes back to the template (as reasoning_content).
    shows_reasoning = (
        "{% for m in messages %}{% if m.reasoning_content %}"
        "{{ raise_exception('saw reasoning: ' ~ m.reasoning_content ~ ' / call: ' ~ m.tool_calls[0].function.name) }}"
        "{% endif %}{% endfor %}"
    )
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I need the weather tool.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]
    with pytest.raises(
        openai.BadRequestError, match=re.escape("saw reasoning: I need the weather tool. / call: get_weather")
    ):
        client.chat.completions.create(
            model=M, messages=history, max_tokens=4, extra_body={"instruction_template_str": shows_reasoning}
        )


# -- a thinking, tool-calling model (the tiny agent model, Qwen3's template) -------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, agent_gguf_path: Path) -> Iterator[openai.OpenAI]:
    root = tmp_path_factory.mktemp("api-tools-openai-agent")
    server = Server(root, agent_gguf_path, extra_args=["--model", agent_gguf_path.name])
    with server.running():
        yield openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


def agent_model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_a_thinking_models_reasoning_is_reasoning_content(agent: openai.OpenAI) -> None:
    question, reasoning, answer = agent_models.QUESTIONS[0]
    asked: Any = [{"role": "user", "content": question}]
    reply = agent.chat.completions.create(model=agent_model(agent), messages=asked, temperature=0)
    message = reply.choices[0].message
    assert message.content == answer
    assert (message.model_extra or {})["reasoning_content"] == reasoning
    assert (message.model_extra or {})["reasoning"] == reasoning

    with agent.chat.completions.stream(model=agent_model(agent), messages=asked, temperature=0) as stream:
        events = list(stream)
    streamed = "".join(e.delta for e in events if e.type == "content.delta")
    assert streamed == answer
    reasoned = "".join(
        (e.chunk.choices[0].delta.model_extra or {}).get("reasoning_content", "")
        for e in events
        if e.type == "chunk" and e.chunk.choices
    )
    assert reasoned == reasoning

    off = agent.chat.completions.create(
        model=agent_model(agent), messages=asked, temperature=0, reasoning_effort="none"
    )
    assert off.choices[0].message.content == answer
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})


def test_a_tool_calling_model_runs_the_loop_on_its_own(agent: openai.OpenAI) -> None:
    """tool_choice auto: the model decides to call, then answers from the result."""
    city = "Paris"
    asked: Any = [{"role": "user", "content": agent_models.weather_question(city)}]
    tools: Any = [agent_models.WEATHER_TOOL]
    with agent.chat.completions.stream(
        model=agent_model(agent), messages=asked, tools=tools, temperature=0
    ) as stream:
        for _ in stream:
            pass
        first = stream.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = function_calls(choice.message)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": city})
    ]
    assert (choice.message.model_extra or {}).get("reasoning_content") == agent_models.weather_call_reasoning(
        city
    )

    history = [
        *asked,
        choice.message.model_dump(exclude_none=True),  # with its reasoning: it goes back within the loop
        {"role": "tool", "tool_call_id": calls[0].id, "content": agent_models.weather_result(city)},
    ]
    final = agent.chat.completions.create(
        model=agent_model(agent), messages=history, tools=tools, temperature=0
    )
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "stop" and message.tool_calls is None
    assert message.content == agent_models.weather_answer(city)
    assert (message.model_extra or {}).get("reasoning_content") == agent_models.weather_answer_reasoning(city)
