"""Real chat templates of the model families (tests/data/templates/, copied from llama.cpp's models/templates;
sources in the README there) through Palabre's template reading and prompt building.

For each family: the tool-call format, the thinking format and the thinking controls read from the template's
text; then a fixed tool-call history (system, user, assistant with reasoning and a call whose arguments are a
JSON text as OpenAI's API carries them, the tool's result, the answer, a new user message) rendered by
``build_prompt`` exactly as recorded in tests/data/golden/tool_renders.json (record again with
``PALABRE_GOLDEN_RECORD=1`` after a deliberate change), plus invariants that catch real bugs whatever the golden
says: the call's arguments appear once and as an object (not a JSON string inside a string), reasoning from
before the last user message is never sent again, the tool's result is there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_models import WEATHER_TOOL, AgentModels, write_template_gguf
from tests.support.config import make_config
from webui.core.abilities import abilities_of
from webui.core.params import GenerationParams
from webui.core.prompt_builder import thinking_variables
from webui.core.prompts import ChatMessage, PromptRequest, ToolCall, build_prompt
from webui.core.reasoning import detect_reasoning_format, thinking_controls
from webui.core.templates.store import InstructionTemplate, TemplateError
from webui.core.tools import detect_tool_format

TEMPLATES = Path(__file__).parent / "data" / "templates"
GOLDEN = Path(__file__).parent / "data" / "golden" / "tool_renders.json"
RECORD = os.environ.get("PALABRE_GOLDEN_RECORD") == "1"

QUESTION = "What is the weather in Paris?"
CALL_REASONING = "The user asks about Paris, so I call get_weather."
ANSWER_REASONING = "The tool reports fine weather."
ANSWER = "Paris is warm and bright today."
FOLLOW_UP = "And in Tokyo?"
RESULT = '{"temperature": 22, "condition": "sunny"}'
OPENAI_ID = "call_Wq81fZ0aTyPl"
MISTRAL_ID = "Wq81fZ0aT"  # what Mistral's templates demand: 9 letters or digits


def fixed_date(fmt: str) -> str:
    """``strftime_now`` for the renders: gpt-oss, Llama 3.2 and Mistral Small print today's date."""
    return datetime(2025, 3, 14).strftime(fmt)


@dataclass(frozen=True)
class Family:
    file: str  # tests/data/templates/<file>.jinja
    tools: str  # detect_tool_format
    reasoning: str  # detect_reasoning_format(...).name
    switch: str | None = None
    effort: str | None = None
    budget: str | None = None
    # How the earlier call shows in the render (each family's own syntax, arguments as an object); None: this
    # template has no place for an assistant's tool_calls, so the call is missing from the history.
    call: str | None = None
    keeps_loop_reasoning: bool = False  # shows the call's reasoning within the current tool loop
    mistral_ids: bool = False  # raises unless call ids are 9 alphanumerics

    @property
    def source(self) -> str:
        return (TEMPLATES / f"{self.file}.jinja").read_text(encoding="utf-8")

    @property
    def call_id(self) -> str:
        return MISTRAL_ID if self.mistral_ids else OPENAI_ID


HERMES_CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
FAMILIES: tuple[Family, ...] = (
    Family("qwen3", "hermes", "think", switch="enable_thinking", call=HERMES_CALL, keeps_loop_reasoning=True),
    Family(
        "qwen3-coder",
        "qwen3_coder",
        "none",
        call="<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>",
    ),
    Family("hermes-2-pro", "hermes", "none", call=HERMES_CALL),
    Family("llama-3.1", "llama3", "none", call='{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    Family("llama-3.2", "llama3", "none", call='{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    Family(
        "mistral-nemo",
        "mistral",
        "none",
        call=f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {{"city": "Paris"}}, "id": "{MISTRAL_ID}"}}]',
        mistral_ids=True,
    ),
    Family(
        "mistral-small-3.2",
        "mistral",
        "none",
        call=f'[TOOL_CALLS]get_weather[CALL_ID]{MISTRAL_ID}[ARGS]{{"city": "Paris"}}',
        mistral_ids=True,
    ),
    Family("devstral-small", "mistral", "none", call='[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    Family(
        "ministral-3-reasoning", "mistral", "mistral", call='[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    ),
    Family(
        "deepseek-r1-distill",
        "deepseek",
        "think",
        switch="enable_thinking",
        call='get_weather\n```json\n{"city": "Paris"}\n```',
    ),
    Family(
        "deepseek-v3.1",
        "deepseek",
        "think",
        switch="enable_thinking",
        call='get_weather<｜tool▁sep｜>{"city": "Paris"}',
    ),
    Family(
        "gpt-oss",
        "gpt_oss",
        "harmony",
        effort="reasoning_effort",
        call='to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
        keeps_loop_reasoning=True,
    ),
    Family("granite-3.3", "granite", "granite-3.3", switch="thinking"),
    Family("granite-4.0", "hermes", "none", call=HERMES_CALL),
    Family(
        "command-r7b",
        "command_r",
        "command",
        switch="enable_thinking",
        call='"tool_name": "get_weather", "parameters": {"city": "Paris"}',
        keeps_loop_reasoning=True,
    ),
    Family(
        "glm-4.5",
        "glm",
        "think",
        switch="enable_thinking",
        call="<tool_call>get_weather<arg_key>city</arg_key>\n<arg_value>Paris</arg_value></tool_call>",
        keeps_loop_reasoning=True,
    ),
    Family(
        "glm-4.6",
        "glm",
        "think",
        switch="enable_thinking",
        call="<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
        keeps_loop_reasoning=True,
    ),
    Family(
        "kimi-k2", "kimi", "none", call='functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}'
    ),
    Family("kimi-k2-thinking", "kimi", "think"),
    Family("lfm2", "lfm2", "none"),
    Family(
        "lfm2-llama-cpp",
        "lfm2",
        "none",
        call=f'<|tool_call_start|>[{{"name": "get_weather", "arguments": {{"city": "Paris"}}, "id": "{OPENAI_ID}"}}]',
    ),
    Family(
        "phi-4-mini",
        "phi4_mini",
        "none",
        call='<|tool_call|>{"name": "get_weather", "arguments": {"city": "Paris"}}<|/tool_call|>',
    ),
    Family(
        "gemma-4",
        "gemma4",
        "gemma4",
        switch="enable_thinking",
        call='<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>',
        keeps_loop_reasoning=True,
    ),
    Family("gemma-2", "generic", "none"),
    Family(
        "seed-oss",
        "seed_oss",
        "seed",
        budget="thinking_budget",
        call="<function=get_weather>\n<parameter=city>Paris</parameter>\n</function>",
        keeps_loop_reasoning=True,
    ),
    Family("smollm3", "generic", "think", switch="enable_thinking"),  # llama.cpp's copy has no tools at all
)
BY_FILE = {family.file: family for family in FAMILIES}

# Templates Palabre's sandbox (like Hugging Face's, the same ImmutableSandboxedEnvironment) cannot render.
CANNOT_RENDER = {
    # llama.cpp's fix for its own engine keeps call ids in a list it appends to: the immutable sandbox refuses
    # list.append (HF's apply_chat_template refuses it the same way).
    "kimi-k2-thinking": "unsafe operation: access to attribute 'append'",
    # Gemma 2 knows only user and model turns and says so with raise_exception.
    "gemma-2": "System role not supported",
}
RENDERED = tuple(f for f in FAMILIES if f.file not in CANNOT_RENDER)


def history(family: Family, *, in_loop: bool, call_id: str | None = None) -> list[ChatMessage]:
    """The fixed conversation: ``in_loop`` stops at the tool's result (the model answers next); otherwise the
    answer and a new user message follow."""
    ident = call_id or family.call_id
    messages = [
        ChatMessage("system", "You are a weather assistant."),
        ChatMessage("user", QUESTION),
        ChatMessage(
            "assistant",
            "",
            reasoning=CALL_REASONING,
            tool_calls=(ToolCall(ident, "get_weather", json.dumps({"city": "Paris"})),),
        ),
        ChatMessage("tool", RESULT, tool_call_id=ident, name="get_weather"),
    ]
    if not in_loop:
        messages += [
            ChatMessage("assistant", ANSWER, reasoning=ANSWER_REASONING),
            ChatMessage("user", FOLLOW_UP),
        ]
    return messages


def render(
    source: str,
    messages: list[ChatMessage],
    variables: dict[str, Any] | None = None,
    *,
    tools: bool = True,
) -> str:
    """``build_prompt`` in instruct mode with the thinking variables Palabre passes by default."""
    kwargs: dict[str, Any] = {**thinking_variables(GenerationParams()), "strftime_now": fixed_date}
    kwargs.update(variables or {})
    request = PromptRequest(
        messages=messages,
        mode="instruct",
        template=InstructionTemplate("x", source),
        tools=(WEATHER_TOOL,) if tools else (),
        template_kwargs=kwargs,
    )
    return build_prompt(request, count_tokens=len, max_prompt_tokens=10**9).text


def renders(family: Family) -> dict[str, str]:
    return {
        "after_answer": render(family.source, history(family, in_loop=False)),
        "in_loop": render(family.source, history(family, in_loop=True)),
    }


def by_name(families: tuple[Family, ...]) -> list[Any]:
    return [pytest.param(f, id=f.file) for f in families]


# -- the files ------------------------------------------------------------------------------------------------


def test_every_template_file_is_listed_with_its_source() -> None:
    files = sorted(p.stem for p in TEMPLATES.glob("*.jinja"))
    assert files == sorted(BY_FILE)
    readme = (TEMPLATES / "README.md").read_text()
    for name in files:
        assert f"`{name}.jinja`" in readme, f"{name}.jinja has no source line in the README"


# -- what the template's text says ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", by_name(FAMILIES))
def test_the_tool_call_family_is_read_from_the_template(family: Family) -> None:
    assert detect_tool_format(family.source) == family.tools


@pytest.mark.parametrize("family", by_name(FAMILIES))
def test_the_thinking_format_is_read_from_the_template(family: Family) -> None:
    assert detect_reasoning_format(family.source).name == family.reasoning


@pytest.mark.parametrize("family", by_name(FAMILIES))
def test_the_thinking_controls_are_read_from_the_template(family: Family) -> None:
    controls = thinking_controls(family.source)
    assert (controls.switch, controls.effort, controls.budget) == (
        family.switch,
        family.effort,
        family.budget,
    )
    if family.effort:
        assert controls.levels == ("low", "medium", "high")


SWITCHED = tuple(f for f in RENDERED if f.switch or f.effort or f.budget)


@pytest.mark.parametrize("family", by_name(SWITCHED))
def test_each_control_found_changes_the_render(family: Family) -> None:
    """A control the page would show must matter: given alone (no other thinking variable), its two settings
    render differently."""
    messages = [ChatMessage("user", QUESTION)]

    def alone(variables: dict[str, Any]) -> str:
        request = PromptRequest(
            messages=messages,
            template=InstructionTemplate("x", family.source),
            template_kwargs={"strftime_now": fixed_date, **variables},
        )
        return build_prompt(request, count_tokens=len, max_prompt_tokens=10**9).text

    if family.switch:
        assert alone({family.switch: True}) != alone({family.switch: False})
    if family.effort:
        low, high = alone({family.effort: "low"}), alone({family.effort: "high"})
        assert "Reasoning: low" in low and "Reasoning: high" in high
    if family.budget:
        assert alone({family.budget: 0}) != alone({family.budget: -1})


# -- the tool-call history rendered ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    if RECORD:
        recorded = {family.file: renders(family) for family in RENDERED}
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(recorded, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_the_golden_file_covers_every_renderable_template(golden: dict[str, dict[str, str]]) -> None:
    assert sorted(golden) == sorted(f.file for f in RENDERED), "record the golden renders again"


@pytest.mark.parametrize("family", by_name(RENDERED))
def test_the_history_renders_as_recorded(family: Family, golden: dict[str, dict[str, str]]) -> None:
    now = renders(family)
    for case, text in now.items():
        recorded = golden[family.file][case]
        if text != recorded:
            at = next(
                (i for i, (a, b) in enumerate(zip(text, recorded, strict=False)) if a != b), len(recorded)
            )
            pytest.fail(
                f"{family.file} {case} changed at {at}:\n  recorded {recorded[max(0, at - 80) : at + 120]!r}\n"
                f"  now      {text[max(0, at - 80) : at + 120]!r}"
            )


@pytest.mark.parametrize("family", by_name(tuple(f for f in RENDERED if f.call)))
@pytest.mark.parametrize("case", ["after_answer", "in_loop"])
def test_the_call_shows_once_with_its_arguments_as_an_object(family: Family, case: str) -> None:
    text = renders(family)[case]
    assert family.call is not None
    assert text.count(family.call) == 1, f"{family.call!r} should appear once in:\n{text}"
    # Not double-encoded: the arguments text given to the template as a string and printed with tojson.
    assert '\\"city\\"' not in text and '"{\\"city' not in text


@pytest.mark.parametrize("family", by_name(tuple(f for f in RENDERED if not f.call)))
def test_a_template_without_tool_calls_still_shows_the_call(family: Family) -> None:
    text = renders(family)["in_loop"]
    after_question = text.split(QUESTION, 1)[1]
    assert "get_weather" in after_question and "Paris" in after_question


@pytest.mark.parametrize("family", by_name(RENDERED))
def test_earlier_reasoning_is_never_sent_again(family: Family) -> None:
    text = renders(family)["after_answer"]
    assert CALL_REASONING not in text
    assert ANSWER_REASONING not in text
    assert ANSWER in text
    assert FOLLOW_UP in text


@pytest.mark.parametrize("family", by_name(RENDERED))
def test_within_the_tool_loop_the_calls_reasoning_goes_back_where_the_template_shows_it(
    family: Family,
) -> None:
    text = renders(family)["in_loop"]
    assert (CALL_REASONING in text) == family.keeps_loop_reasoning


@pytest.mark.parametrize("family", by_name(RENDERED))
@pytest.mark.parametrize("case", ["after_answer", "in_loop"])
def test_the_tool_result_is_shown(family: Family, case: str) -> None:
    text = renders(family)[case]
    assert "sunny" in text and "22" in text
    assert "temperature" in text.split(QUESTION, 1)[1]


MISTRAL_VALIDATING = tuple(f for f in RENDERED if f.mistral_ids)


@pytest.mark.parametrize("family", by_name(MISTRAL_VALIDATING))
def test_mistral_templates_take_nine_character_ids(family: Family) -> None:
    text = renders(family)["in_loop"]
    assert MISTRAL_ID in text


@pytest.mark.parametrize("family", by_name(MISTRAL_VALIDATING))
def test_mistral_templates_take_openai_style_ids(family: Family) -> None:
    text = render(family.source, history(family, in_loop=True, call_id=OPENAI_ID))
    assert OPENAI_ID not in text  # remapped to 9 alphanumerics, the same for the call and its result


@pytest.mark.parametrize("name", sorted(CANNOT_RENDER))
def test_templates_the_sandbox_cannot_render_fail_cleanly(name: str) -> None:
    family = BY_FILE[name]
    with pytest.raises(TemplateError, match=CANNOT_RENDER[name]):
        render(family.source, history(family, in_loop=True))


# -- through the real loader ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("family", by_name(FAMILIES))
def test_a_gguf_carrying_the_template_gets_its_abilities(
    family: Family, tmp_path: Path, agent_models: AgentModels
) -> None:
    """The agent model's weights with this family's template in the metadata, loaded by llama.cpp through the
    Service: the template in use is the model's own and the abilities are the family's."""
    from webui.app import build_service

    gguf = write_template_gguf(tmp_path / f"agent-{family.file}.gguf", family.source, agent_models)
    service = build_service(make_config(tmp_path / "user_data", gguf))
    try:
        service.load_model(gguf.name, loader="llama.cpp", settings={"n_ctx": 512})
        detection = service.detection
        assert detection is not None
        assert detection.reason == "model metadata", detection.message()
        if detection.template.source != family.source:
            # A bundled look-alike stands in only for a template that does no more than it (Gemma 2's).
            same = abilities_of(detection.template.source) == abilities_of(family.source)
            assert same, f"{family.file} became {detection.template.name}"
        abilities = service.abilities()
        assert (abilities.tool_format, abilities.reasoning.name) == (family.tools, family.reasoning)
    finally:
        service.close()


def test_a_models_tool_use_template_serves_the_requests_with_tools(
    tmp_path: Path, agent_models: AgentModels
) -> None:
    """Hermes and Command R GGUFs keep a second template, tokenizer.chat_template.tool_use, for requests with
    tools: such a request renders through it, a plain one through the default template."""
    from webui.app import build_service
    from webui.core.service import ChatSettings, ToolRequest

    plain = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" + (
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    gguf = write_template_gguf(
        tmp_path / "hermes.gguf", plain, agent_models, tool_template=BY_FILE["hermes-2-pro"].source
    )
    service = build_service(make_config(tmp_path / "user_data", gguf))
    try:
        service.load_model(gguf.name, loader="llama.cpp", settings={"n_ctx": 1024})
        history = [ChatMessage("user", QUESTION)]
        tools = ToolRequest.build([WEATHER_TOOL], "auto")
        with_tools, _ = service.prompts.chat(history, ChatSettings(), GenerationParams(), tools=tools)
        without, _ = service.prompts.chat(history, ChatSettings(), GenerationParams())
        assert "<tools>" in with_tools.text and '"get_weather"' in with_tools.text
        assert "<tools>" not in without.text and "get_weather" not in without.text
    finally:
        service.close()
