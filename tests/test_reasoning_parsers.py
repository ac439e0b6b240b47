"""The reasoning splitter (webui/core/reasoning): every family's thinking markers, told apart from the answer whole,
split at every character and one character at a time; formats detected from real-shaped template excerpts."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from webui.core.loader import Chunk
from webui.core.reasoning import (
    FORMATS,
    Phase,
    ReasoningFormat,
    ReasoningSplitter,
    Split,
    detect_reasoning_format,
    initial_phase,
    split_reasoning,
    split_stream,
)


@dataclass(frozen=True)
class Case:
    """One model reply as the family emits it, with the prompt tail it followed and the expected parts."""

    id: str
    format: str
    output: str
    reasoning: str
    answer: str
    prompt: str = ""


CASES = [
    Case(
        "qwen3",
        "think",
        "<think>\nThe user asks for 2+2. Adding gives 4.\n</think>\n\nThe answer is **4**.",
        "The user asks for 2+2. Adding gives 4.",
        "The answer is **4**.",
        prompt="<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    ),
    Case(
        "deepseek-r1-prefilled",
        "think",
        "Okay, so the user wants 7*6. 7*6 = 42.\n</think>\n\n7 × 6 = **42**",
        "Okay, so the user wants 7*6. 7*6 = 42.",
        "7 × 6 = **42**",
        prompt="<｜begin▁of▁sentence｜><｜User｜>What is 7*6?<｜Assistant｜><think>\n",
    ),
    Case(
        "qwq-prefilled-repeats-open-tag",
        "think",
        "<think>\nHmm, a greeting.\n</think>\n\nHello!",
        "Hmm, a greeting.",
        "Hello!",
        prompt="<|im_start|>assistant\n<think>\n",
    ),
    Case(
        "qwen3-thinking-off",
        "think",
        "Paris is the capital of France.",
        "",
        "Paris is the capital of France.",
        prompt="<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ),
    Case(
        "smollm3",
        "think",
        "<think>\nThe user wants a synonym for happy: joyful.\n</think>\nJoyful.",
        "The user wants a synonym for happy: joyful.",
        "Joyful.",
        prompt="<|im_start|>assistant\n",
    ),
    Case(
        "phi4-reasoning",
        "think",
        "<think>Let x be the number. 2x + 3 = 11, so x = 4.</think>\n\n**Solution:** x = 4",
        "Let x be the number. 2x + 3 = 11, so x = 4.",
        "**Solution:** x = 4",
        prompt="<|im_start|>assistant<|im_sep|>",
    ),
    Case(
        "no-reasoning-with-angle-brackets",
        "think",
        "Use 2 < 3 and the tag <thin",
        "",
        "Use 2 < 3 and the tag <thin",
    ),
    Case(
        "answer-before-think-tag",
        "think",
        "Sure. <think>is literal here</think> ok",
        "",
        "Sure. <think>is literal here</think> ok",
    ),
    Case(
        "granite-3.3-answer-then-tag",
        "granite-3.3",
        "Plain answer, then <response>x</response>",
        "",
        "Plain answer, then x",
    ),
    Case(
        "unterminated-think",
        "think",
        "<think>\nLet me count: 1, 2, 3\n",
        "Let me count: 1, 2, 3",
        "",
    ),
    Case(
        "unterminated-think-partial-close",
        "think",
        "<think>Counting sheep</thi",
        "Counting sheep</thi",
        "",
    ),
    Case(
        "gpt-oss",
        "harmony",
        "<|channel|>analysis<|message|>User asks the capital of France. It's Paris.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The capital of France is Paris.<|return|>",
        "User asks the capital of France. It's Paris.",
        "The capital of France is Paris.",
        prompt="<|start|>user<|message|>Capital of France?<|end|><|start|>assistant",
    ),
    Case(
        "gpt-oss-two-analysis",
        "harmony",
        "<|channel|>analysis<|message|>First thought.<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Second thought.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Done.",
        "First thought.\n\nSecond thought.",
        "Done.",
    ),
    Case(
        "gpt-oss-tool-call",
        "harmony",
        "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        "Need the weather tool.",
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
    ),
    Case(
        "gpt-oss-missing-end",
        "harmony",
        "<|channel|>analysis<|message|>Quick check.<|start|>assistant<|channel|>final<|message|>All good.<|return|>",
        "Quick check.",
        "All good.",
    ),
    Case(
        "gpt-oss-final-only",
        "harmony",
        "<|channel|>final<|message|>Straight to the answer.<|return|>",
        "",
        "Straight to the answer.",
    ),
    Case(
        "gpt-oss-unterminated",
        "harmony",
        "<|channel|>analysis<|message|>Still thinking about it",
        "Still thinking about it",
        "",
    ),
    Case(
        "magistral",
        "mistral",
        "[THINK]Okay, the user wants a haiku about autumn. 5-7-5.[/THINK]Here is a haiku:\n\nCrisp leaves drift and fall",
        "Okay, the user wants a haiku about autumn. 5-7-5.",
        "Here is a haiku:\n\nCrisp leaves drift and fall",
        prompt="[SYSTEM_PROMPT]First draft your thinking process[/SYSTEM_PROMPT][INST]Haiku?[/INST]",
    ),
    Case(
        "seed-oss",
        "seed",
        "<seed:think>\nGot it, 17*3: 10*3=30, 7*3=21, total 51.\n</seed:think>\n17 × 3 = 51.",
        "Got it, 17*3: 10*3=30, 7*3=21, total 51.",
        "17 × 3 = 51.",
        prompt="<seed:bos>assistant\n",
    ),
    Case(
        "granite-3.2",
        "granite-3.2",
        "Here is my thought process:\nThe user greets me. Here is my plan: be kind.\n\n"
        "Here is my response:\nHello! Here is my help: ask anything.",
        "The user greets me. Here is my plan: be kind.",
        "Hello! Here is my help: ask anything.",
        prompt="<|start_of_role|>assistant<|end_of_role|>",
    ),
    Case(
        "granite-3.2-thinking-off",
        "granite-3.2",
        "Here is a poem about the sea.",
        "",
        "Here is a poem about the sea.",
    ),
    Case(
        "granite-3.3",
        "granite-3.3",
        "<think>The user greets me; reply warmly.</think><response>Hello! How can I help you today?</response>",
        "The user greets me; reply warmly.",
        "Hello! How can I help you today?",
        prompt="<|start_of_role|>assistant<|end_of_role|>",
    ),
    Case(
        "command-r7b",
        "command",
        "<|START_THINKING|>The user wants 2+2, which is 4.<|END_THINKING|><|START_RESPONSE|>2 + 2 = 4.<|END_RESPONSE|>",
        "The user wants 2+2, which is 4.",
        "2 + 2 = 4.",
        prompt="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    ),
    Case(
        "command-a-prefilled",
        "command",
        "A simple sum.<|END_THINKING|><|START_TEXT|>It is 4.<|END_TEXT|>",
        "A simple sum.",
        "It is 4.",
        prompt="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_THINKING|>",
    ),
    Case(
        "command-action",
        "command",
        "<|START_THINKING|>I will look up the weather.<|END_THINKING|>"
        '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}]'
        "<|END_ACTION|>",
        "I will look up the weather.",
        '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}]'
        "<|END_ACTION|>",
    ),
    Case(
        "gemma4",
        "gemma4",
        "<|channel>thought\nThe user says hi; answer briefly.<channel|>Hi! How are you?",
        "The user says hi; answer briefly.",
        "Hi! How are you?",
        prompt="<|turn>model\n",
    ),
    Case(
        "gemma4-empty-thought",
        "gemma4",
        "<|channel>thought\n<channel|>Hi there!",
        "",
        "Hi there!",
    ),
    Case(
        "none",
        "none",
        "Hello <think>not a marker</think> world",
        "",
        "Hello <think>not a marker</think> world",
    ),
]


def _run(case: Case, pieces: list[str]) -> Split:
    """Feed ``pieces`` through a fresh splitter, then flush; join every delta."""
    splitter = ReasoningSplitter(FORMATS[case.format], case.prompt)
    reasoning: list[str] = []
    answer: list[str] = []
    for piece in pieces:
        out = splitter.feed(piece)
        reasoning.append(out.reasoning)
        answer.append(out.answer)
    out = splitter.flush()
    reasoning.append(out.reasoning)
    answer.append(out.answer)
    return Split("".join(reasoning), "".join(answer))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_whole_reply(case: Case) -> None:
    """Fed in one piece, and through the non-streaming helper, the reply splits as the family means it."""
    expected = Split(case.reasoning, case.answer)
    assert _run(case, [case.output]) == expected
    assert split_reasoning(case.output, FORMATS[case.format], case.prompt) == expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_split_at_every_character(case: Case) -> None:
    """Cut in two at every position, the parts come out exactly the same: no marker leaks, nothing is lost."""
    expected = Split(case.reasoning, case.answer)
    for cut in range(len(case.output) + 1):
        assert _run(case, [case.output[:cut], case.output[cut:]]) == expected, cut


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_one_character_at_a_time(case: Case) -> None:
    """Streamed a character at a time (and in three-way cuts), the parts are the same as whole."""
    expected = Split(case.reasoning, case.answer)
    assert _run(case, list(case.output)) == expected
    text = case.output
    step = max(1, len(text) // 25)
    for a in range(0, len(text) + 1, step):
        for b in range(a, len(text) + 1, step):
            assert _run(case, [text[:a], text[a:b], text[b:]]) == expected, (a, b)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_random_chunkings(case: Case) -> None:
    """Many random chunkings (sizes 0 to 12, as a tokenizer's pieces vary) all give the same parts."""
    expected = Split(case.reasoning, case.answer)
    rng = random.Random(case.id)
    for _ in range(50):
        pieces, at = [], 0
        while at < len(case.output):
            size = rng.randint(0, 12)
            pieces.append(case.output[at : at + size])
            at += size
        assert _run(case, pieces) == expected, pieces


def test_nothing_held_beyond_a_possible_marker() -> None:
    """Text is released as soon as it can no longer start a marker; only a possible marker start waits."""
    splitter = ReasoningSplitter(FORMATS["think"], "<|im_start|>assistant\n<think>\n")
    assert splitter.feed("Thinking about <") == Split("Thinking about", "")
    assert splitter.feed("b") == Split(" <b", "")
    assert splitter.feed("</th") == Split("", "")
    assert splitter.feed("ink>\n\nAns") == Split("", "Ans")
    assert splitter.feed("wer") == Split("", "wer")
    assert splitter.flush() == Split("", "")


def test_deltas_fit_the_chunk() -> None:
    """Each step's pair becomes a loader Chunk's reasoning and text deltas."""
    splitter = ReasoningSplitter(FORMATS["think"])
    chunks = [
        Chunk(out.answer, reasoning=out.reasoning) for out in map(splitter.feed, ["<think>a", "</think>b"])
    ]
    assert [(c.reasoning, c.text) for c in chunks] == [("a", ""), ("", "b")]


# Template excerpts as the models ship them (trimmed to the lines that carry the thinking markers).
TEMPLATES = {
    "qwen3": (
        "{%- if message.role == 'assistant' %}\n"
        "    {%- set content = message.content %}\n"
        "    {%- if '</think>' in content %}\n"
        "        {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]"
        ".lstrip('\\n') %}\n"
        "    {%- endif %}\n"
        "{%- endif %}\n"
        "{%- if add_generation_prompt %}\n"
        "    {{- '<|im_start|>assistant\\n' }}\n"
        "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
        "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
        "    {%- endif %}\n"
        "{%- endif %}",
        "think",
    ),
    "deepseek-r1-distill": (
        "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
        "{% set content = message['content'] %}{% if '</think>' in content %}"
        "{% set content = content.split('</think>')[-1] %}{% endif %}"
        "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
        "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}",
        "think",
    ),
    "smollm3": (
        '{%- if "/system_override" in system_message -%}{%- endif -%}\n'
        '{%- set reasoning_mode = "/think" -%}\n'
        '{%- if "/no_think" in system_message -%}{%- set reasoning_mode = "/no_think" -%}{%- endif -%}\n'
        "{%- if add_generation_prompt -%}\n"
        '  {%- if reasoning_mode == "/no_think" -%}\n'
        '    {{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" }}\n'
        "  {%- else -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}\n"
        "{%- endif -%}",
        "think",
    ),
    "phi4-reasoning": (
        "<|im_start|>system<|im_sep|>Your role as an assistant involves thoroughly exploring questions through a "
        "systematic thinking process before providing the final precise and accurate solutions. Please structure "
        "your response into two main sections: Thought and Solution using the specified format: "
        "<think> {Thought section} </think> {Solution section}.<|im_end|>"
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + "
        "'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}",
        "think",
    ),
    "glm-4.5": (
        "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think></think>' -}}{%- endif -%}\n"
        "{{- '<|assistant|>' }}{%- if reasoning_content -%}{{ '\\n<think>' + reasoning_content.strip() + "
        "'</think>' }}{%- else -%}{{ '\\n<think></think>' }}{%- endif -%}",
        "think",
    ),
    "gpt-oss": (
        "{%- if message.thinking and loop.last %}\n"
        '    {{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}\n'
        "{%- endif %}\n"
        '{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" }}\n'
        '{{- "Reasoning: " + reasoning_effort + "\\n\\n" }}\n'
        "{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}",
        "harmony",
    ),
    "magistral": (
        "{%- elif message['role'] == 'assistant' %}\n"
        "    {%- for block in message['content'] %}\n"
        "        {%- if block['type'] == 'thinking' %}\n"
        "            {{- '[THINK]' + block['thinking'] + '[/THINK]' }}\n"
        "        {%- else %}{{- block['text'] }}{%- endif %}\n"
        "    {%- endfor %}\n"
        "    {{- eos_token }}\n"
        "{%- endif %}",
        "mistral",
    ),
    "seed-oss": (
        "{%- if thinking_budget is defined and thinking_budget == 0 %}\n"
        "{{ bos_token + 'assistant\\n<seed:think><seed:cot_budget_reflect>The current thinking budget is 0."
        "</seed:cot_budget_reflect></seed:think>' }}\n"
        "{%- endif %}\n"
        "{%- if message.reasoning_content %}{{ '<seed:think>' + message.reasoning_content.strip() + "
        "'</seed:think>' }}{%- endif %}",
        "seed",
    ),
    "granite-3.2": (
        "{%- if thinking %}\n"
        '    {%- set system_message = "You are a helpful AI assistant.\\nRespond to every user query in a '
        "comprehensive and detailed way. You can write down your thoughts and reasoning process before "
        "responding. In the thought process, engage in a comprehensive cycle of analysis, summarization, "
        "exploration, reassessment, reflection, backtracing, and iteration to develop well-considered thinking "
        "process. In the response section, based on various attempts, explorations, and reflections from the "
        "thoughts section, systematically present the final solution that you deem correct. The response should "
        "summarize the thought process. Write your thoughts after 'Here is my thought process:' and write your "
        "response after 'Here is my response:' for each user query.\" %}\n"
        "{%- endif %}\n"
        "{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}",
        "granite-3.2",
    ),
    "granite-3.3": (
        "{%- if thinking %}\n"
        '    {%- set system_message = system_message + " You are a helpful AI assistant.\\nRespond to every user '
        "query in a comprehensive and detailed way. You can write down your thoughts and reasoning process "
        "before responding. In the thought process, engage in a comprehensive cycle of analysis, summarization, "
        "exploration, reassessment, reflection, backtracing, and iteration to develop well-considered thinking "
        "process. In the response section, based on various attempts, explorations, and reflections from the "
        "thoughts section, systematically present the final solution that you deem correct. The response should "
        "summarize the thought process. Write your thoughts between <think></think> and write your response "
        'between <response></response> for each user query." %}\n'
        "{%- endif %}\n"
        "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}",
        "granite-3.3",
    ),
    "command-r7b": (
        "{%- elif message.role|lower == 'assistant' %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        "{%- if message.tool_calls %}<|START_THINKING|>{{message.tool_plan}}<|END_THINKING|><|START_ACTION|>"
        "[{% for tc in message.tool_calls %}{{tc|tojson}}{% endfor %}]<|END_ACTION|>"
        "{%- else %}<|START_RESPONSE|>{{message.content}}<|END_RESPONSE|>{%- endif %}<|END_OF_TURN_TOKEN|>"
        "{%- endif %}",
        "command",
    ),
    "gemma4": (
        "{%- if enable_thinking is defined and enable_thinking -%}{{- '<|think|>' -}}{%- endif -%}\n"
        "{%- if message['role'] == 'assistant' -%}{{- '<|turn>model\\n' -}}\n"
        "  {%- if not enable_thinking -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}\n"
        "  {{- strip_thinking(message['content']) -}}<turn|>\n"
        "{%- endif -%}",
        "gemma4",
    ),
    "gemma3-none": (
        "{{ bos_token }}{%- for message in loop_messages -%}"
        "{{ '<start_of_turn>' + role + '\\n' + (message['content'] | trim) + '<end_of_turn>\\n' }}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}",
        "none",
    ),
    "llama3-none": (
        "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
        "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "none",
    ),
    "chatml-none": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "none",
    ),
}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_detect_from_template(family: str) -> None:
    """The thinking format comes from the template's own text."""
    template, expected = TEMPLATES[family]
    assert detect_reasoning_format(template).name == expected


def test_detect_from_special_tokens() -> None:
    """A template that hides the markers in variables is still placed by the tokenizer's special tokens."""
    bare = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert detect_reasoning_format(bare).name == "none"
    assert detect_reasoning_format(bare, ("[THINK]", "[/THINK]")).name == "mistral"
    assert detect_reasoning_format(bare, ("<think>", "</think>")).name == "think"


@pytest.mark.parametrize(
    ("format_name", "prompt", "phase"),
    [
        ("think", "<｜User｜>Hi<｜Assistant｜><think>\n", Phase.REASONING),
        ("think", "<|im_start|>assistant\n<think>\n\n</think>\n\n", Phase.ANSWER),
        ("think", "<|im_start|>assistant\n", Phase.AWAIT),
        ("command", "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_THINKING|>", Phase.REASONING),
        ("command", "<|CHATBOT_TOKEN|><|START_THINKING|><|END_THINKING|>", Phase.ANSWER),
        ("seed", "<seed:bos>assistant\n<seed:think>", Phase.REASONING),
        ("gemma4", "<|turn>model\n<|channel>thought\n<channel|>", Phase.ANSWER),
        ("harmony", "<|start|>assistant", Phase.AWAIT),
        ("none", "<think>", Phase.ANSWER),
    ],
)
def test_prefilled_open_tag(format_name: str, prompt: str, phase: Phase) -> None:
    """The rendered prompt's tail says where the reply starts: inside reasoning after a prefilled open tag."""
    assert initial_phase(FORMATS[format_name], prompt) is phase


def test_phase_can_be_given() -> None:
    """A caller that knows better (a thinking budget, a forced-open flag) can set the phase itself."""
    fmt: ReasoningFormat = FORMATS["think"]
    splitter = ReasoningSplitter(fmt, phase=Phase.REASONING)
    assert splitter.feed("pondering</think>done") == Split("pondering", "done")
    assert splitter.reasoning_seen


def test_split_stream() -> None:
    """The generator form yields the non-empty steps; in the answer a "<" waits for the next delta (a lone
    closing tag there is dropped), and is released once it cannot be one."""
    steps = list(split_stream(["<thi", "nk>Hm", "m</th", "ink>Ok <", "thi"], FORMATS["think"]))
    assert steps == [Split("Hm", ""), Split("m", ""), Split("", "Ok "), Split("", "<thi")]
    held = list(split_stream(["<think>a <", "/thin"], FORMATS["think"]))
    assert held == [Split("a", ""), Split(" </thin", "")]
