"""Thinking and tool calling through real parts: the tiny agent model (tests/support/agent_models.py: Qwen3's
real template and markers) loaded by Palabre's own Service, through llama.cpp (GGUF) and Transformers (folder).

Each test sends a conversation with the core APIs the page and the API use (``Service.stream_chat_reply`` with
``ChatSettings``, ``GenerationParams``, ``ToolRequest``) and checks what streams back: reasoning apart from the
answer, no reasoning with thinking off, tool calls as their own parts with ``finish_reason == "tool_calls"``, and
the final answer once the tool's result is in the history. The model was trained to reply exactly so when the
prompt is rendered as Qwen3's template renders it; its build checks that transformers and llama-cpp-python
reproduce every trained case on their own, so a failure here is Palabre's (the prompt it built, the reader, the
grammar, the loader), not the model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import agent_models as agent
from tests.support.agent_models import (
    CITIES,
    QUESTIONS,
    WEATHER_TOOL,
    weather_answer,
    weather_answer_reasoning,
    weather_call_reasoning,
    weather_question,
    weather_result,
)
from tests.support.config import make_config
from webui.core.loader import Chunk
from webui.core.models.gguf_header import read_gguf_header
from webui.core.params import GenerationParams
from webui.core.service import ChatMessage, ChatSettings, ReplyStream, Service, ToolCall, ToolRequest
from webui.core.templates.store import InstructionTemplate

pytestmark = [pytest.mark.slow]

LOADERS = ("llama.cpp", "transformers")


def greedy(**changes: Any) -> GenerationParams:
    return GenerationParams(temperature=0, max_new_tokens=96, **changes)


@dataclass
class Reply:
    """A finished stream, its parts joined as a client would."""

    text: str
    reasoning: str
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish_reason: str | None
    prompt: str
    params: GenerationParams  # what the loader got (with any tool-call grammar)
    chunks: list[Chunk] = field(repr=False)


def collect(stream: ReplyStream) -> Reply:
    chunks = list(stream)
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for part in chunk.tool_calls:
            ids[part.index] = ids.get(part.index, "") + part.id
            names[part.index] = names.get(part.index, "") + part.name
            arguments[part.index] = arguments.get(part.index, "") + part.arguments
    return Reply(
        text="".join(c.text for c in chunks),
        reasoning="".join(c.reasoning for c in chunks),
        calls=[(ids[i], names[i], arguments[i]) for i in sorted(ids)],
        finish_reason=stream.job.finish_reason,
        prompt=stream.prompt.text,
        params=stream.job.params,
        chunks=chunks,
    )


def model_template(service: Service) -> ChatSettings:
    """Settings that use the chat template from the loaded model's own metadata.

    Not ``ChatSettings()`` (the detected template): detection swaps Qwen3's template for the bundled ChatML,
    which renders the no-tools probe identically (see test_detection_keeps_the_models_own_template), and
    ChatML can neither show tools nor mark thinking.
    """
    state = service.loaded
    assert state is not None
    source = state.model.facts.chat_template
    assert source
    return ChatSettings(template=InstructionTemplate("Qwen3 (model metadata)", source, "model metadata"))


def ask(
    service: Service,
    history: list[ChatMessage],
    params: GenerationParams | None = None,
    tools: ToolRequest | None = None,
) -> Reply:
    settings = model_template(service)
    return collect(service.stream_chat_reply(history, settings, params or greedy(), tools=tools))


def weather_tools(choice: str = "auto") -> ToolRequest:
    request = ToolRequest.build([WEATHER_TOOL], choice)
    assert request is not None
    return request


@pytest.fixture(scope="module", params=LOADERS)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, agent_models: agent.AgentModels
) -> Iterator[Service]:
    """A Service with the agent model loaded through one loader (the GGUF for llama.cpp, the folder for
    Transformers); module-scoped, since each test only reads replies."""
    from webui.app import build_service

    loader = request.param
    model = agent_models.gguf if loader == "llama.cpp" else agent_models.hf
    user_data = tmp_path_factory.mktemp(f"agent-{loader.replace('.', '-')}") / "user_data"
    service = build_service(make_config(user_data, model))
    settings = {"n_ctx": 1024} if loader == "llama.cpp" else None
    service.load_model(model.name, loader=loader, settings=settings)
    yield service
    service.close()


# -- the built files ------------------------------------------------------------------------------------------


def test_the_gguf_carries_qwen3s_template_and_marker_tokens(agent_gguf_path: Path) -> None:
    from gguf import GGUFReader, TokenType

    header = read_gguf_header(agent_gguf_path)
    assert header["tokenizer.chat_template"] == agent.qwen3_template()
    assert header["general.architecture"] == "llama"
    reader = GGUFReader(agent_gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    for marker in agent.MARKER_TOKENS:
        assert types[tokens.index(marker)] == TokenType.USER_DEFINED, f"{marker} should be shown as text"
    for special in agent.SPECIAL_TOKENS:
        assert types[tokens.index(special)] == TokenType.CONTROL, special
    assert tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()] == "<|im_end|>"
    assert reader.fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_the_hf_folder_decodes_the_markers_as_text(agent_hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(agent_hf_dir, local_files_only=True)
    for marker in agent.MARKER_TOKENS:
        ids = tokenizer.encode(marker, add_special_tokens=False)
        assert len(ids) == 1, f"{marker} is one token"
        assert tokenizer.decode(ids, skip_special_tokens=True) == marker
    assert (
        tokenizer.decode(tokenizer.encode("<|im_end|>", add_special_tokens=False), skip_special_tokens=True)
        == ""
    )


def test_write_template_gguf_keeps_the_weights_and_swaps_the_template(
    tmp_path: Path, agent_models: agent.AgentModels
) -> None:
    template = (agent.TEMPLATES_DIR / "hermes-2-pro.jinja").read_text()
    target = agent.write_template_gguf(tmp_path / "hermes-agent.gguf", template, agent_models)
    from gguf import GGUFReader

    assert read_gguf_header(target)["tokenizer.chat_template"] == template
    written, original = GGUFReader(target), GGUFReader(agent_models.gguf)
    field = "tokenizer.ggml.tokens"
    assert written.fields[field].contents() == original.fields[field].contents()
    for mine, theirs in zip(written.tensors, original.tensors, strict=True):
        assert mine.name == theirs.name
        assert (mine.data == theirs.data).all(), mine.name


# -- through the Service --------------------------------------------------------------------------------------


def test_the_loader_reads_qwen3s_template_and_its_abilities(service: Service) -> None:
    settings = model_template(service)
    assert isinstance(settings.template, InstructionTemplate)
    assert settings.template.source == agent.qwen3_template()
    abilities = service.abilities(settings)
    assert abilities.reasoning.name == "think"
    assert abilities.tool_format == "hermes"
    assert abilities.tools
    assert abilities.thinking.switch == "enable_thinking"


def test_detection_keeps_the_models_own_template(service: Service) -> None:
    detection = service.detection
    assert detection is not None
    assert detection.reason == "model metadata"
    assert detection.template.source == agent.qwen3_template()
    assert service.abilities().tool_format == "hermes"


@pytest.mark.parametrize("index", range(len(QUESTIONS)))
def test_a_thinking_reply_streams_its_reasoning_apart(service: Service, index: int) -> None:
    question, reasoning, answer = QUESTIONS[index]
    reply = ask(service, [ChatMessage("user", question)])
    assert reply.reasoning.strip() == reasoning
    assert reply.text == answer
    assert reply.finish_reason == "stop"
    assert not reply.calls
    # Reasoning arrives first, in chunks of its own, and no marker leaks into either part.
    first_answer = next(i for i, c in enumerate(reply.chunks) if c.text)
    assert any(c.reasoning for c in reply.chunks[:first_answer])
    assert not any(c.reasoning for c in reply.chunks[first_answer + 1 :])
    for part in (reply.text, reply.reasoning):
        assert "<think>" not in part and "</think>" not in part
    assert reply.prompt.endswith("<|im_start|>assistant\n")


def test_with_thinking_off_the_template_prefills_and_no_reasoning_streams(service: Service) -> None:
    question, _, answer = QUESTIONS[0]
    reply = ask(service, [ChatMessage("user", question)], greedy(enable_thinking=False))
    assert reply.prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert reply.reasoning == ""
    assert reply.text == answer


def test_earlier_reasoning_is_not_sent_again(service: Service) -> None:
    (q1, r1, a1), (q2, r2, a2) = QUESTIONS[1], QUESTIONS[0]
    history = [ChatMessage("user", q1), ChatMessage("assistant", a1, reasoning=r1), ChatMessage("user", q2)]
    reply = ask(service, history)
    assert r1 not in reply.prompt
    assert f"<|im_start|>assistant\n{a1}<|im_end|>" in reply.prompt
    assert (reply.reasoning.strip(), reply.text) == (r2, a2)


@pytest.mark.parametrize("city", CITIES)
def test_offered_a_tool_the_model_calls_it(service: Service, city: str) -> None:
    reply = ask(service, [ChatMessage("user", weather_question(city))], tools=weather_tools())
    assert (
        '"name": "get_weather"' in reply.prompt and "<tools>" in reply.prompt
    )  # the template shows the tool
    assert reply.reasoning.strip() == weather_call_reasoning(city)
    assert reply.text == ""
    assert len(reply.calls) == 1
    call_id, name, arguments = reply.calls[0]
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": city}
    assert call_id  # the parser gives the call an id the next request can answer
    assert reply.finish_reason == "tool_calls"
    assert "<tool_call>" not in reply.text


def test_a_tool_call_with_thinking_off(service: Service) -> None:
    reply = ask(
        service,
        [ChatMessage("user", weather_question("Berlin"))],
        greedy(enable_thinking=False),
        weather_tools(),
    )
    assert reply.reasoning == ""
    assert [(name, json.loads(args)) for _, name, args in reply.calls] == [
        ("get_weather", {"city": "Berlin"})
    ]
    assert reply.finish_reason == "tool_calls"


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_a_forced_call_still_thinks_first(service: Service, choice: str) -> None:
    """``required`` or a named function: a grammar (llama.cpp) applies from the first token, allowing the think
    block; the reply must be the same call."""
    reply = ask(service, [ChatMessage("user", weather_question("Madrid"))], tools=weather_tools(choice))
    state = service.loaded
    assert state is not None
    if "grammar" in state.capabilities.honoured_params:
        assert "get_weather" in reply.params.grammar and not reply.params.grammar_triggers
    assert reply.reasoning.strip() == weather_call_reasoning("Madrid")
    assert [(name, json.loads(args)) for _, name, args in reply.calls] == [
        ("get_weather", {"city": "Madrid"})
    ]
    assert reply.finish_reason == "tool_calls"


def test_tool_choice_none_hides_the_tools_and_parses_no_call(service: Service) -> None:
    reply = ask(service, [ChatMessage("user", weather_question("Paris"))], tools=weather_tools("none"))
    assert "<tools>" not in reply.prompt
    assert not reply.calls
    assert reply.finish_reason != "tool_calls"


@pytest.mark.parametrize("with_reasoning", [False, True], ids=["call-alone", "call-with-reasoning"])
@pytest.mark.parametrize("city", ["Paris", "Tokyo"])
def test_after_the_tool_result_the_model_answers(service: Service, city: str, with_reasoning: bool) -> None:
    call_id = "call_Xy12abC9"
    history = [
        ChatMessage("user", weather_question(city)),
        ChatMessage(
            "assistant",
            "",
            reasoning=weather_call_reasoning(city) if with_reasoning else "",
            tool_calls=(ToolCall(call_id, "get_weather", json.dumps({"city": city})),),
        ),
        ChatMessage("tool", weather_result(city), tool_call_id=call_id, name="get_weather"),
    ]
    reply = ask(service, history, tools=weather_tools())
    # The prompt Palabre built is the one Qwen3's template gives for the same conversation (HF's shape).
    hf_call = agent.tool_call_message(city, weather_call_reasoning(city) if with_reasoning else "", call_id)
    expected = agent.render(
        [
            {"role": "user", "content": weather_question(city)},
            hf_call,
            {"role": "tool", "content": weather_result(city), "tool_call_id": call_id, "name": "get_weather"},
        ],
        add_generation_prompt=True,
        tools=[WEATHER_TOOL],
        enable_thinking=True,
    )
    assert reply.prompt == expected
    assert f'"arguments": {{"city": "{city}"}}' in reply.prompt  # an object, not a JSON string in a string
    assert reply.reasoning.strip() == weather_answer_reasoning(city)
    assert reply.text == weather_answer(city)
    assert city in reply.text
    assert not reply.calls
    assert reply.finish_reason == "stop"


def test_the_whole_loop_feeds_the_models_own_call_back(service: Service) -> None:
    """Call, then send the call exactly as it streamed (its id, its arguments text) with the tool's result."""
    city = "London"
    first = ask(service, [ChatMessage("user", weather_question(city))], tools=weather_tools())
    assert len(first.calls) == 1
    call_id, name, arguments = first.calls[0]
    history = [
        ChatMessage("user", weather_question(city)),
        ChatMessage(
            "assistant",
            first.text,
            reasoning=first.reasoning,
            tool_calls=(ToolCall(call_id, name, arguments),),
        ),
        ChatMessage("tool", weather_result(city), tool_call_id=call_id, name=name),
    ]
    second = ask(service, history, tools=weather_tools())
    assert second.text == weather_answer(city)
    assert second.finish_reason == "stop"


def test_a_thinking_budget_cuts_the_reasoning_short(service: Service) -> None:
    question, reasoning, _ = QUESTIONS[3]
    reply = ask(service, [ChatMessage("user", question)], greedy(thinking_budget=4))
    assert reply.reasoning.strip(), "some reasoning before the budget ran out"
    assert reasoning.startswith(reply.reasoning.strip())
    assert len(reply.reasoning.strip()) < len(reasoning)
    assert "</think>" not in reply.text and "<think>" not in reply.text
