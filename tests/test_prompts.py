"""Prompt building for instruct, chat and chat-instruct modes, continue / impersonate, and truncation."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from webui.core.prompts import (
    DEFAULT_CHAT_INSTRUCT_COMMAND,
    MIN_KEPT_SHARE,
    BuiltPrompt,
    ChatMessage,
    PromptError,
    PromptRequest,
    PromptTooLongError,
    build_prompt,
)
from webui.core.templates.store import InstructionTemplate, TemplateStore

BUNDLED = Path(__file__).resolve().parent.parent / "instruction-templates"
HISTORY = [
    ChatMessage("user", "Hello!"),
    ChatMessage("assistant", "Hi there!"),
    ChatMessage("user", "What is 2+2?"),
]


def words(text: str) -> int:
    """A simple stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def build(request: PromptRequest, budget: int = 100_000, counter: Callable[[str], int] = words) -> str:
    return build_prompt(request, count_tokens=counter, max_prompt_tokens=budget).text


@pytest.fixture(scope="module")
def store() -> TemplateStore:
    return TemplateStore(BUNDLED, BUNDLED / "no-user-folder")


@pytest.fixture(scope="module")
def chatml(store: TemplateStore) -> InstructionTemplate:
    return store.get("ChatML")


@pytest.fixture(scope="module")
def alpaca(store: TemplateStore) -> InstructionTemplate:
    return store.get("Alpaca")


# -- instruct ------------------------------------------------------------------------------------------------


def test_instruct_with_system_message(chatml: InstructionTemplate) -> None:
    built = build_prompt(
        PromptRequest(HISTORY, mode="instruct", template=chatml, system_message="Be brief."),
        count_tokens=words,
        max_prompt_tokens=1000,
    )
    assert built.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi there!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert built.stop_strings == ()
    assert built.dropped_messages == 0
    assert built.prompt_tokens == words(built.text)


def test_instruct_without_system_message_and_with_one_in_the_history(chatml: InstructionTemplate) -> None:
    assert build(PromptRequest(HISTORY[:1], template=chatml)) == (
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    with_own = [ChatMessage("system", "From the history."), *HISTORY[:1]]
    assert build(PromptRequest(with_own, template=chatml, system_message="From settings.")) == (
        "<|im_start|>system\nFrom settings.\n\nFrom the history.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )


def test_instruct_continue_last(chatml: InstructionTemplate, alpaca: InstructionTemplate) -> None:
    history = [*HISTORY[:2], ChatMessage("user", "Count to three."), ChatMessage("assistant", "One, two,")]
    assert build(PromptRequest(history, template=chatml, continue_last=True)) == (
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi there!<|im_end|>\n"
        "<|im_start|>user\nCount to three.<|im_end|>\n"
        "<|im_start|>assistant\nOne, two,"
    )
    assert build(PromptRequest(history[2:], template=alpaca, continue_last=True)) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nCount to three.\n\n### Response:\nOne, two,"
    )


def test_instruct_continue_last_when_the_template_hides_replies() -> None:
    # A template that never shows assistant messages still gets a usable, open reply.
    users_only = InstructionTemplate(
        "users only",
        "{% for m in messages if m.role == 'user' %}Q: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}A:{% endif %}",
    )
    history = [ChatMessage("user", "Say hi"), ChatMessage("assistant", " Hi")]
    assert build(PromptRequest(history, template=users_only, continue_last=True)) == "Q: Say hi\nA: Hi"


def test_instruct_impersonate_opens_a_user_turn(
    chatml: InstructionTemplate, alpaca: InstructionTemplate
) -> None:
    history = HISTORY[:2]
    built = build_prompt(
        PromptRequest(history, template=chatml, impersonate=True), count_tokens=words, max_prompt_tokens=1000
    )
    assert built.text == (
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\n"
    )
    assert build(PromptRequest(history, template=alpaca, impersonate=True)).endswith(
        "### Instruction:\nHello!\n\n### Response:\nHi there!\n\n### Instruction:\n"
    )


def test_instruct_passes_bos_and_eos(store: TemplateStore) -> None:
    request = PromptRequest(HISTORY, template=store.get("Mistral"), bos_token="<s>", eos_token="</s>")
    assert build(request) == "<s>[INST] Hello! [/INST] Hi there!</s>[INST] What is 2+2? [/INST]"


# -- chat ----------------------------------------------------------------------------------------------------


def chat_request(**changes: object) -> PromptRequest:
    fields: dict[str, object] = {
        "messages": HISTORY,
        "mode": "chat",
        "character_name": "Ada",
        "user_name": "Bob",
        "context": "{{char}} is a patient tutor. {{User}} is learning maths; <BOT> helps <USER>.\n",
    }
    fields.update(changes)
    return PromptRequest(**fields)  # type: ignore[arg-type]


CHAT_HEAD = "Ada is a patient tutor. Bob is learning maths; Ada helps Bob.\n\n"


def test_chat_mode() -> None:
    built = build_prompt(chat_request(), count_tokens=words, max_prompt_tokens=1000)
    assert built.text == CHAT_HEAD + "Bob: Hello!\nAda: Hi there!\nBob: What is 2+2?\nAda:"
    assert built.stop_strings == ("\nBob:",)


def test_chat_mode_without_context_and_with_defaults() -> None:
    request = PromptRequest(HISTORY[:1], mode="chat")
    built = build_prompt(request, count_tokens=words, max_prompt_tokens=1000)
    assert built.text == "You: Hello!\nAssistant:"
    assert built.stop_strings == ("\nYou:",)


def test_chat_mode_puts_a_leading_system_message_with_the_context() -> None:
    history = [ChatMessage("system", "Answer in French."), *HISTORY[:1]]
    assert build(chat_request(messages=history)) == (
        "Ada is a patient tutor. Bob is learning maths; Ada helps Bob.\n\nAnswer in French.\n\nBob: Hello!\nAda:"
    )


def test_chat_mode_continue_and_impersonate() -> None:
    partial = [*HISTORY, ChatMessage("assistant", "It is")]
    built = build_prompt(
        chat_request(messages=partial, continue_last=True), count_tokens=words, max_prompt_tokens=99
    )
    assert built.text == CHAT_HEAD + "Bob: Hello!\nAda: Hi there!\nBob: What is 2+2?\nAda: It is"
    assert built.stop_strings == ("\nBob:",)

    built = build_prompt(
        chat_request(messages=HISTORY[:2], impersonate=True), count_tokens=words, max_prompt_tokens=99
    )
    assert built.text == CHAT_HEAD + "Bob: Hello!\nAda: Hi there!\nBob:"
    assert built.stop_strings == ("\nBob:", "\nAda:")


def test_chat_mode_greeting_comes_before_the_first_user_message() -> None:
    history = [ChatMessage("assistant", "Welcome!"), *HISTORY[:1]]
    assert build(chat_request(messages=history, context="")) == "Ada: Welcome!\nBob: Hello!\nAda:"


# -- chat-instruct -------------------------------------------------------------------------------------------


def test_chat_instruct_mode(chatml: InstructionTemplate) -> None:
    built = build_prompt(
        chat_request(mode="chat-instruct", template=chatml), count_tokens=words, max_prompt_tokens=1000
    )
    assert built.text == (
        "<|im_start|>user\n"
        'Continue the chat dialogue below. Write a single reply for the character "Ada".\n\n'
        "Ada is a patient tutor. Bob is learning maths; Ada helps Bob.\n\n"
        "Bob: Hello!\nAda: Hi there!\nBob: What is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\nAda:"
    )
    assert built.stop_strings == ("\nBob:",)


def test_chat_instruct_with_system_message_continue_and_impersonate(chatml: InstructionTemplate) -> None:
    partial = [*HISTORY, ChatMessage("assistant", "It is")]
    request = chat_request(
        mode="chat-instruct", template=chatml, messages=partial, continue_last=True, system_message="Be kind."
    )
    assert build(request) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n"
        'Continue the chat dialogue below. Write a single reply for the character "Ada".\n\n'
        "Ada is a patient tutor. Bob is learning maths; Ada helps Bob.\n\n"
        "Bob: Hello!\nAda: Hi there!\nBob: What is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\nAda: It is"
    )
    request = chat_request(mode="chat-instruct", template=chatml, messages=HISTORY[:2], impersonate=True)
    built = build_prompt(request, count_tokens=words, max_prompt_tokens=1000)
    assert built.text == (
        "<|im_start|>user\n"
        'Continue the chat dialogue below. Write a single reply for the character "Bob".\n\n'
        "Ada is a patient tutor. Bob is learning maths; Ada helps Bob.\n\n"
        "Bob: Hello!\nAda: Hi there!<|im_end|>\n"
        "<|im_start|>assistant\nBob:"
    )
    assert built.stop_strings == ("\nBob:", "\nAda:")


def test_chat_instruct_custom_command_fills_each_field_once(chatml: InstructionTemplate) -> None:
    history = [ChatMessage("user", "Say <|character|> and <|prompt|> literally")]
    request = chat_request(
        mode="chat-instruct",
        template=chatml,
        messages=history,
        context="",
        chat_instruct_command="As <|character|>, reply to:\n<|prompt|>\n(<|character|>)",
    )
    assert build(request) == (
        "<|im_start|>user\nAs Ada, reply to:\nBob: Say <|character|> and <|prompt|> literally\n(Ada)<|im_end|>\n"
        "<|im_start|>assistant\nAda:"
    )
    assert "<|character|>" in DEFAULT_CHAT_INSTRUCT_COMMAND and "<|prompt|>" in DEFAULT_CHAT_INSTRUCT_COMMAND


# -- truncation ----------------------------------------------------------------------------------------------


def long_history(turns: int) -> list[ChatMessage]:
    history: list[ChatMessage] = []
    for index in range(turns):
        history.append(ChatMessage("user", f"question {index} " + "word " * (index % 5)))
        history.append(ChatMessage("assistant", f"answer {index} " + "word " * (index % 3)))
    history.append(ChatMessage("user", "final question"))
    return history


def test_truncation_drops_oldest_turns_and_keeps_the_system_message(chatml: InstructionTemplate) -> None:
    history = long_history(10)
    request = PromptRequest(history, template=chatml, system_message="KEEP-ME system")
    full = build_prompt(request, count_tokens=words, max_prompt_tokens=10_000)
    assert full.dropped_messages == 0
    built = build_prompt(request, count_tokens=words, max_prompt_tokens=full.prompt_tokens - 1)
    # Whole user + assistant pairs go, the oldest first, a block at a time (see the block tests below).
    assert built.dropped_messages >= 2 and built.dropped_messages % 2 == 0
    kept_from = built.dropped_messages // 2
    assert built.prompt_tokens <= full.prompt_tokens - 1
    assert built.text.startswith(
        f"<|im_start|>system\nKEEP-ME system<|im_end|>\n<|im_start|>user\nquestion {kept_from} "
    )
    assert "question 0" not in built.text and "answer 0" not in built.text
    assert built.text.endswith("<|im_start|>user\nfinal question<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("mode", ["instruct", "chat", "chat-instruct"])
def test_truncation_keeps_as_much_history_as_fits(chatml: InstructionTemplate, mode: str) -> None:
    history = long_history(12)
    base = chat_request(mode=mode, template=chatml, messages=history, system_message="sys words here")
    # The reference answer, by brute force: render with 0, 1, 2, ... whole turns dropped.
    candidates = [
        build_prompt(
            chat_request(
                mode=mode, template=chatml, messages=history[2 * drop :], system_message="sys words here"
            ),
            count_tokens=words,
            max_prompt_tokens=10**9,
        )
        for drop in range(13)
    ]
    for budget in range(1, candidates[0].prompt_tokens + 2):
        minimum = next((drop for drop, c in enumerate(candidates) if c.prompt_tokens <= budget), None)
        if minimum is None:
            with pytest.raises(PromptTooLongError):
                build_prompt(base, count_tokens=words, max_prompt_tokens=budget)
            continue
        built = build_prompt(base, count_tokens=words, max_prompt_tokens=budget)
        dropped_turns = built.dropped_messages // 2
        assert built.text == candidates[dropped_turns].text, budget
        # At least the minimum goes; more only to reach a block boundary, never below half the budget.
        assert dropped_turns >= minimum
        assert dropped_turns == minimum or built.prompt_tokens >= budget * MIN_KEPT_SHARE, budget
        assert built.prompt_tokens == words(built.text) <= budget
        assert "Ada is a patient tutor" in built.text or mode == "instruct"
        assert "sys words here" in built.text or mode == "chat"
        assert "final question" in built.text


def test_truncation_renders_only_a_logarithmic_number_of_times(chatml: InstructionTemplate) -> None:
    history = long_history(2000)
    calls: list[int] = []

    def counting(text: str) -> int:
        calls.append(1)
        return words(text)

    built = build_prompt(
        PromptRequest(history, template=chatml), count_tokens=counting, max_prompt_tokens=200
    )
    assert built.prompt_tokens <= 200
    assert built.dropped_messages > 3900
    assert len(calls) <= 15  # 2 probes + about log2(2000) steps, not 2000 renders


def four_chars_a_token(text: str) -> int:
    """A stand-in tokenizer with English-like density (about four characters per token)."""
    return (len(text) + 3) // 4


def growing_chat(turns: int, budget: int, mode: str, chatml: InstructionTemplate) -> list[BuiltPrompt]:
    """The prompts of a conversation that gains one question and answer per turn, at a fixed budget."""
    history: list[ChatMessage] = []
    built = []
    for index in range(turns):
        history.append(ChatMessage("user", f"question {index} about the weather in town {index}"))
        request = chat_request(mode=mode, template=chatml, messages=list(history), system_message="sys")
        built.append(build_prompt(request, count_tokens=four_chars_a_token, max_prompt_tokens=budget))
        history.append(ChatMessage("assistant", f"answer {index}: it is sunny and warm today, {index}"))
    return built


@pytest.mark.parametrize("mode", ["instruct", "chat"])
def test_truncation_drops_blocks_so_the_kept_prefix_stays_stable(
    chatml: InstructionTemplate, mode: str
) -> None:
    budget = 1000
    prompts = growing_chat(150, budget, mode, chatml)
    truncated = [p for p in prompts if p.dropped_messages]
    assert len(truncated) > 60  # the conversation outgrew the budget long ago
    # One turn at a time would change the dropped count on every truncated turn; blocks change it rarely.
    changes = sum(1 for a, b in itertools.pairwise(truncated) if a.dropped_messages != b.dropped_messages)
    assert changes <= len(truncated) // 5
    # While the dropped count holds, each prompt starts with the whole previous prompt, which is what lets the
    # loader reuse the evaluated prefix.
    for before, after in itertools.pairwise(prompts):
        if before.dropped_messages == after.dropped_messages:
            assert after.text.startswith(before.text)
    for prompt in prompts:
        assert prompt.prompt_tokens <= budget


def test_a_block_drop_frees_about_a_quarter_of_the_budget(chatml: InstructionTemplate) -> None:
    budget = 1000
    prompts = growing_chat(150, budget, "instruct", chatml)
    truncated = [p for p in prompts if p.dropped_messages]
    # Right after a block is dropped there is room for several more turns before the next drop.
    used = [p.prompt_tokens / budget for p in truncated]
    assert min(used) >= MIN_KEPT_SHARE
    assert min(used) <= 0.85


def test_prompt_too_long_when_even_the_last_message_does_not_fit(chatml: InstructionTemplate) -> None:
    history = [*HISTORY[:2], ChatMessage("user", "word " * 50)]
    with pytest.raises(PromptTooLongError, match=r"take \d+ tokens, but only 20 tokens are available"):
        build_prompt(PromptRequest(history, template=chatml), count_tokens=words, max_prompt_tokens=20)
    with pytest.raises(PromptTooLongError):
        build_prompt(chat_request(context="context " * 100), count_tokens=words, max_prompt_tokens=50)


def test_a_history_larger_than_any_template_output_is_truncated(chatml: InstructionTemplate) -> None:
    # 12 turns of 1 MB each exceed the template output cap; truncation must still find what fits.
    big = "x" * 1_000_000
    history: list[ChatMessage] = []
    for _ in range(12):
        history += [ChatMessage("user", big), ChatMessage("assistant", big)]
    history.append(ChatMessage("user", "last"))
    built = build_prompt(
        PromptRequest(history, template=chatml), count_tokens=len, max_prompt_tokens=3_000_000
    )
    assert built.dropped_messages == 22  # one full turn (2 MB) plus the last message fit
    assert built.text.endswith("<|im_start|>user\nlast<|im_end|>\n<|im_start|>assistant\n")


# -- invalid requests ----------------------------------------------------------------------------------------


def test_invalid_requests(chatml: InstructionTemplate) -> None:
    with pytest.raises(PromptError, match="needs an instruction template"):
        build(PromptRequest(HISTORY, mode="instruct"))
    with pytest.raises(PromptError, match="needs an instruction template"):
        build(PromptRequest(HISTORY, mode="chat-instruct"))
    with pytest.raises(PromptError, match="no reply to continue"):
        build(PromptRequest(HISTORY, template=chatml, continue_last=True))
    with pytest.raises(PromptError, match="cannot be combined"):
        build(PromptRequest(HISTORY[:2], template=chatml, continue_last=True, impersonate=True))
    with pytest.raises(PromptError, match="Unknown chat mode"):
        build(PromptRequest(HISTORY, mode="story", template=chatml))  # type: ignore[arg-type]
