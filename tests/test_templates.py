"""Instruction templates: bundled formats (golden prompts), the sandbox, the store, and model detection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import webui.core.templates.store as templates_module
from webui.core.paths import InvalidNameError
from webui.core.templates.store import (
    FALLBACK_TEMPLATE,
    METADATA_CUSTOM_NAME,
    InstructionTemplate,
    TemplateError,
    TemplateNotFoundError,
    TemplateOutputTooLargeError,
    TemplateStore,
    detect_template,
    template_from_metadata,
    template_name_from_file_name,
)

BUNDLED = Path(__file__).resolve().parent.parent / "instruction-templates"

SYS = "You are a helpful assistant."
U1 = "Hello!"
A1 = "Hi there! How can I help?"
U2 = "What is 2+2?"
CONVERSATION = [
    {"role": "system", "content": SYS},
    {"role": "user", "content": U1},
    {"role": "assistant", "content": A1},
    {"role": "user", "content": U2},
]
# Distinct stand-ins for the model's special tokens, so the tests see where each template puts them.
BOS, EOS = "<BOS>", "<EOS>"

ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
VICUNA_PREAMBLE = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Written from each format's published prompt layout: (with system message, without system message).
GOLDEN: dict[str, tuple[str, str]] = {
    "ChatML": (
        f"<|im_start|>system\n{SYS}<|im_end|>\n"
        f"<|im_start|>user\n{U1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{U2}<|im_end|>\n"
        "<|im_start|>assistant\n",
        f"<|im_start|>user\n{U1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{U2}<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    "Llama-2-chat": (
        f"<BOS>[INST] <<SYS>>\n{SYS}\n<</SYS>>\n\n{U1} [/INST] {A1} <EOS><BOS>[INST] {U2} [/INST]",
        f"<BOS>[INST] {U1} [/INST] {A1} <EOS><BOS>[INST] {U2} [/INST]",
    ),
    "Llama-3": (
        "<BOS>"
        f"<|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<BOS>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "Llama-4": (
        "<BOS>"
        f"<|header_start|>system<|header_end|>\n\n{SYS}<|eot|>"
        f"<|header_start|>user<|header_end|>\n\n{U1}<|eot|>"
        f"<|header_start|>assistant<|header_end|>\n\n{A1}<|eot|>"
        f"<|header_start|>user<|header_end|>\n\n{U2}<|eot|>"
        "<|header_start|>assistant<|header_end|>\n\n",
        "<BOS>"
        f"<|header_start|>user<|header_end|>\n\n{U1}<|eot|>"
        f"<|header_start|>assistant<|header_end|>\n\n{A1}<|eot|>"
        f"<|header_start|>user<|header_end|>\n\n{U2}<|eot|>"
        "<|header_start|>assistant<|header_end|>\n\n",
    ),
    "Mistral": (
        f"<BOS>[INST] {SYS}\n\n{U1} [/INST] {A1}<EOS>[INST] {U2} [/INST]",
        f"<BOS>[INST] {U1} [/INST] {A1}<EOS>[INST] {U2} [/INST]",
    ),
    "Gemma": (
        "<BOS>"
        f"<start_of_turn>user\n{SYS}\n\n{U1}<end_of_turn>\n"
        f"<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{U2}<end_of_turn>\n"
        "<start_of_turn>model\n",
        "<BOS>"
        f"<start_of_turn>user\n{U1}<end_of_turn>\n"
        f"<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{U2}<end_of_turn>\n"
        "<start_of_turn>model\n",
    ),
    "Phi-3": (
        f"<|system|>\n{SYS}<|end|>\n"
        f"<|user|>\n{U1}<|end|>\n"
        f"<|assistant|>\n{A1}<|end|>\n"
        f"<|user|>\n{U2}<|end|>\n"
        "<|assistant|>\n",
        f"<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>\n<|user|>\n{U2}<|end|>\n<|assistant|>\n",
    ),
    "Alpaca": (
        f"{SYS}\n\n"
        f"### Instruction:\n{U1}\n\n"
        f"### Response:\n{A1}\n\n"
        f"### Instruction:\n{U2}\n\n"
        "### Response:\n",
        f"{ALPACA_PREAMBLE}\n\n"
        f"### Instruction:\n{U1}\n\n"
        f"### Response:\n{A1}\n\n"
        f"### Instruction:\n{U2}\n\n"
        "### Response:\n",
    ),
    "Vicuna-v1.1": (
        f"{SYS} USER: {U1} ASSISTANT: {A1}<EOS>USER: {U2} ASSISTANT:",
        f"{VICUNA_PREAMBLE} USER: {U1} ASSISTANT: {A1}<EOS>USER: {U2} ASSISTANT:",
    ),
    "Zephyr": (
        f"<|system|>\n{SYS}<EOS>\n<|user|>\n{U1}<EOS>\n<|assistant|>\n{A1}<EOS>\n<|user|>\n{U2}<EOS>\n<|assistant|>\n",
        f"<|user|>\n{U1}<EOS>\n<|assistant|>\n{A1}<EOS>\n<|user|>\n{U2}<EOS>\n<|assistant|>\n",
    ),
    "Command-R": (
        "<BOS>"
        f"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{SYS}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{A1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U2}<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        "<BOS>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{A1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U2}<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    ),
    "DeepSeek": (
        f"<BOS>{SYS}<｜User｜>{U1}<｜Assistant｜>{A1}<EOS><｜User｜>{U2}<｜Assistant｜>",
        f"<BOS><｜User｜>{U1}<｜Assistant｜>{A1}<EOS><｜User｜>{U2}<｜Assistant｜>",
    ),
    "Granite": (
        f"<|start_of_role|>system<|end_of_role|>{SYS}<|end_of_text|>\n"
        f"<|start_of_role|>user<|end_of_role|>{U1}<|end_of_text|>\n"
        f"<|start_of_role|>assistant<|end_of_role|>{A1}<|end_of_text|>\n"
        f"<|start_of_role|>user<|end_of_role|>{U2}<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>",
        f"<|start_of_role|>user<|end_of_role|>{U1}<|end_of_text|>\n"
        f"<|start_of_role|>assistant<|end_of_role|>{A1}<|end_of_text|>\n"
        f"<|start_of_role|>user<|end_of_role|>{U2}<|end_of_text|>\n"
        "<|start_of_role|>assistant<|end_of_role|>",
    ),
}

SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    return TemplateStore(BUNDLED, tmp_path / "user-templates")


# -- bundled templates -------------------------------------------------------------------------------------


def test_every_bundled_template_has_a_golden_prompt(store: TemplateStore) -> None:
    names = store.names()
    assert len(names) >= 12
    assert names == sorted(set(names), key=str.casefold)
    assert set(names) == set(GOLDEN)
    assert all(store.get(name).origin == "bundled" for name in names)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bundled_template_golden_with_system_message(store: TemplateStore, name: str) -> None:
    rendered = store.get(name).render(CONVERSATION, add_generation_prompt=True, bos_token=BOS, eos_token=EOS)
    assert rendered == GOLDEN[name][0]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bundled_template_golden_without_system_message(store: TemplateStore, name: str) -> None:
    rendered = store.get(name).render(
        CONVERSATION[1:], add_generation_prompt=True, bos_token=BOS, eos_token=EOS
    )
    assert rendered == GOLDEN[name][1]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bundled_template_continue_last_leaves_the_reply_open(store: TemplateStore, name: str) -> None:
    from webui.core.prompts import ChatMessage, PromptRequest, build_prompt

    template = store.get(name)
    history = [ChatMessage("user", U1), ChatMessage("assistant", "The answer is")]
    built = build_prompt(
        PromptRequest(
            history, mode="instruct", template=template, continue_last=True, bos_token=BOS, eos_token=EOS
        ),
        count_tokens=len,
        max_prompt_tokens=10_000,
    )
    closed = template.render(
        [{"role": "user", "content": U1}, {"role": "assistant", "content": "The answer is"}],
        add_generation_prompt=False,
        bos_token=BOS,
        eos_token=EOS,
    )
    assert built.text.endswith("The answer is")
    assert closed.startswith(built.text)  # same text up to the reply, and nothing closes it
    assert len(closed) > len(built.text)


def test_eos_defaults_to_the_format_token_when_the_model_gives_none(store: TemplateStore) -> None:
    rendered = store.get("Mistral").render(CONVERSATION[1:])
    assert rendered == f"[INST] {U1} [/INST] {A1}</s>[INST] {U2} [/INST]"


def test_chatml_without_generation_prompt(store: TemplateStore) -> None:
    rendered = store.get("ChatML").render(CONVERSATION[:2], add_generation_prompt=False)
    assert rendered == f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{U1}<|im_end|>\n"


# -- the sandbox ---------------------------------------------------------------------------------------------


def render_source(source: str, **extra: Any) -> str:
    return InstructionTemplate("probe", source).render([{"role": "user", "content": "hi"}], **extra)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
        "{{ joiner.__init__.__globals__['os'].system('touch {marker}') }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{{ (messages|first).update(role='x') }}{{ messages.append(1) }}",
    ],
)
def test_sandbox_blocks_escapes_and_nothing_executes(tmp_path: Path, source: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(TemplateError) as caught:
        render_source(source.replace("{marker}", str(marker)))
    assert '"probe"' in str(caught.value)
    assert not marker.exists()


def test_raise_exception_becomes_template_error_with_the_message() -> None:
    with pytest.raises(TemplateError, match="Conversation roles must alternate"):
        render_source("{{ raise_exception('Conversation roles must alternate user/assistant') }}")


def test_hf_globals_and_filters() -> None:
    out = render_source(
        "{{ strftime_now('%Y') }}|{{ {'k': 'é<>'}|tojson }}|{{ [1, 2]|tojson(indent=1) }}|"
        "{{ bos_token }}{{ eos_token }}|{{ tools is defined }}|{{ add_generation_prompt }}|{{ extra_var }}|"
        "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}x{% endfor %}"
        "{% generation %}gen{% endgeneration %}",
        bos_token="<s>",
        eos_token="</s>",
        extra_var="passed through",
    )
    year = time.strftime("%Y")
    # ``tools`` is undefined without tools: templates test ``tools is defined`` before iterating it.
    assert out == f'{year}|{{"k": "é<>"}}|[\n 1,\n 2\n]|<s></s>|False|True|passed through|gen'


def test_tools_are_passed_to_the_template() -> None:
    source = "{% for tool in tools %}{{ tool.name }};{% endfor %}"
    assert render_source(source, tools=[{"name": "search"}, {"name": "calc"}]) == "search;calc;"


def test_syntax_error_names_the_template_and_line() -> None:
    with pytest.raises(TemplateError, match=r'Template "broken" has a syntax error on line 2'):
        InstructionTemplate("broken", "ok\n{% if %}")


def test_render_errors_name_the_template() -> None:
    with pytest.raises(TemplateError, match=r'Template "probe" failed to render: .*division by zero'):
        render_source("{{ 1 / 0 }}")
    with pytest.raises(TemplateError, match="'nothing' is undefined"):
        render_source("{{ nothing.at_all }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 100000000 }}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
        "{{ 2 ** 100000000 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '{:>999999999}'.format('a') }}",
        "{{ 'a'.center(999999999) }}",
        "{{ 'a'|center(999999999) }}",
        "{{ 'a'|indent(99999999, true) }}",
        "{{ 'abc'|replace('', 'x' * 1000000)|replace('', 'x' * 1000000) }}",
        "{{ 'abc'.replace('', 'x' * 1000000).replace('', 'x' * 1000000) }}",
        "{% set l = ['x' * 1000000] * 1000 %}{{ l|join }}",
        "{% set l = ['x' * 1000000] * 1000 %}{{ ''.join(l) }}",
        "{% set l = ['x' * 1000000] * 1000 %}{{ l }}",
        "{% set l = ['x' * 1000000] * 1000 %}{{ l|tojson }}",
        "{% set l = ['x' * 1000000] * 1000 %}{{ l|string }}",
        "{{ [1, 2, 3]|batch(999999999, 'x')|list }}",
        "{% set x %}{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}{% endset %}{{ x|length }}",
        "{% macro m() %}{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    ],
)
def test_memory_amplification_is_stopped(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateOutputTooLargeError, match='Template "probe" was stopped'):
        render_source(source)
    assert time.monotonic() - started < 3


def test_long_loops_hit_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates_module, "MAX_RENDER_SECONDS", 0.3)
    started = time.monotonic()
    with pytest.raises(TemplateError, match="time limit"):
        render_source("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert time.monotonic() - started < 2


def test_recursion_is_stopped() -> None:
    with pytest.raises(TemplateError, match="too deeply"):
        render_source("{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}")


def test_output_just_under_the_cap_is_fine() -> None:
    out = render_source("{% for i in range(1000) %}{{ 'z' * 1000 }}{% endfor %}")
    assert len(out) == 1_000_000


# -- the store -----------------------------------------------------------------------------------------------


def test_save_get_delete_user_template(store: TemplateStore) -> None:
    source = "{% for m in messages %}[{{ m.role }}]  {{ m.content }}\t\n{% endfor %}ünï <|tag|>: end  "
    store.save("My template", source)
    saved = store.user_dir / "My template.yaml"
    assert saved.is_file()
    assert yaml.safe_load(saved.read_text(encoding="utf-8")) == {"instruction_template": source}
    assert "My template" in store.names()
    template = store.get("My template")
    assert (template.name, template.source, template.origin) == ("My template", source, "user")
    assert template.render([{"role": "user", "content": "x"}]) == "[user]  x\t\nünï <|tag|>: end  "
    store.delete("My template")
    assert not saved.exists()
    assert "My template" not in store.names()
    with pytest.raises(TemplateNotFoundError):
        store.get("My template")


def test_saved_yaml_is_readable_block_text(store: TemplateStore) -> None:
    store.save("Readable", "{{ bos_token }}\n{%- for m in messages %}{{ m.content }}{% endfor %}")
    assert (
        (store.user_dir / "Readable.yaml")
        .read_text(encoding="utf-8")
        .startswith("instruction_template: |-\n")
    )


def test_user_template_overrides_bundled_one_and_delete_restores_it(store: TemplateStore) -> None:
    store.save("ChatML", "custom {{ messages|length }}")
    assert store.names().count("ChatML") == 1
    assert store.get("ChatML").origin == "user"
    assert store.get("ChatML").render(CONVERSATION) == "custom 4"
    store.delete("ChatML")
    assert store.get("ChatML").origin == "bundled"
    assert store.get("ChatML").render(CONVERSATION, bos_token=BOS, eos_token=EOS) == GOLDEN["ChatML"][0]


def test_deleting_a_bundled_template_is_refused(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match="bundled"):
        store.delete("Alpaca")
    assert (BUNDLED / "Alpaca.yaml").is_file()
    with pytest.raises(TemplateNotFoundError):
        store.delete("No such template")


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", ".hidden", "", " padded "])
def test_invalid_names_are_rejected(store: TemplateStore, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidNameError):
        store.save(name, "fine")
    with pytest.raises((InvalidNameError, TemplateNotFoundError)):
        store.delete(name)
    assert not (tmp_path / "x.yaml").exists()
    assert not store.user_dir.exists() or list(store.user_dir.iterdir()) == []


def test_unparsable_template_is_not_saved(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match=r'Template "Broken" has a syntax error'):
        store.save("Broken", "{% for m in messages %}no end")
    assert not (store.user_dir / "Broken.yaml").exists()
    assert "Broken" not in store.names()


def test_jinja_files_and_broken_files(store: TemplateStore) -> None:
    store.user_dir.mkdir(parents=True)
    (store.user_dir / "Plain.jinja").write_text("plain {{ messages|length }}", encoding="utf-8")
    (store.user_dir / "NoKey.yaml").write_text("something_else: 1\n", encoding="utf-8")
    (store.user_dir / "notes.txt").write_text("not a template", encoding="utf-8")
    assert store.get("Plain").render(CONVERSATION) == "plain 4"
    assert {"Plain", "NoKey"} <= set(store.names()) and "notes" not in store.names()
    with pytest.raises(TemplateError, match="instruction_template"):
        store.get("NoKey")


def test_edits_on_disk_are_seen(store: TemplateStore) -> None:
    store.save("Live", "one")
    assert store.get("Live").render([]) == "one"
    store.save("Live", "two, longer")
    assert store.get("Live").render([]) == "two, longer"


def test_unknown_template_error_is_a_clear_key_error(store: TemplateStore) -> None:
    with pytest.raises(KeyError) as caught:
        store.get("Nope")
    assert isinstance(caught.value, TemplateNotFoundError)
    assert str(caught.value).startswith(
        'No instruction template named "Nope". Known templates: Alpaca, ChatML'
    )


# -- detection -----------------------------------------------------------------------------------------------


def test_smollm2_metadata_template_is_recognised_as_chatml(store: TemplateStore) -> None:
    detection = detect_template(
        store, model_name="SmolLM2-135M-Instruct.Q4_1.gguf", metadata_template=SMOLLM2_CHAT_TEMPLATE
    )
    assert detection.template.name == "ChatML"
    assert detection.template.origin == "model metadata"
    assert detection.reason == "model metadata"
    assert detection.message() == (
        'It seems to be an instruction-following model with template "ChatML". '
        "In the Chat tab, instruct or chat-instruct modes should be used."
    )
    # The metadata template and the bundled one agree whenever a system message is present.
    smol = InstructionTemplate("smol", SMOLLM2_CHAT_TEMPLATE)
    assert smol.render(CONVERSATION) == detection.template.render(CONVERSATION)


def test_unknown_metadata_template_is_kept_as_custom(store: TemplateStore) -> None:
    source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<assistant>"
    detection = detect_template(store, model_name="mystery-7b-instruct.gguf", metadata_template=source)
    assert detection.reason == "model metadata"
    assert detection.template.name == METADATA_CUSTOM_NAME
    assert detection.template.source == source
    assert detection.template.render(CONVERSATION[1:2]) == "<user>Hello!</user><assistant>"
    assert f'template "{METADATA_CUSTOM_NAME}"' in detection.message()


def test_broken_metadata_template_falls_through_to_the_file_name(store: TemplateStore) -> None:
    detection = detect_template(
        store, model_name="Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", metadata_template="{% if %}"
    )
    assert (detection.template.name, detection.reason) == ("Llama-3", "file name")
    assert detection.message().startswith("The chat template in the model's metadata could not be used")
    assert 'template "Llama-3"' in detection.message()
    failing = detect_template(
        store, model_name="model.gguf", metadata_template="{{ raise_exception('needs tools') }}"
    )
    assert failing.reason == "fallback" and "needs tools" in failing.message()


def test_explicit_choice_wins(store: TemplateStore) -> None:
    detection = detect_template(
        store,
        model_name="codellama-13b-instruct.Q5_K_M.gguf",
        explicit="Vicuna-v1.1",
        metadata_template=SMOLLM2_CHAT_TEMPLATE,
    )
    assert (detection.template.name, detection.reason) == ("Vicuna-v1.1", "user choice")
    assert detection.message() == 'Using the instruction template "Vicuna-v1.1" that you chose.'
    with pytest.raises(TemplateNotFoundError):
        detect_template(store, model_name="x.gguf", explicit="Not a template")


def test_file_name_rule_without_metadata(store: TemplateStore) -> None:
    detection = detect_template(store, model_name="codellama-13b-instruct.Q5_K_M.gguf")
    assert (detection.template.name, detection.reason) == ("Llama-2-chat", "file name")
    assert detection.template.origin == "bundled"


@pytest.mark.parametrize(
    "model_name",
    ["gemma3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-base.Q4_K_M.gguf", "x.gguf"],
)
def test_base_models_fall_back_to_alpaca(store: TemplateStore, model_name: str) -> None:
    detection = detect_template(store, model_name=model_name, metadata_template="")
    assert (detection.template.name, detection.reason) == (FALLBACK_TEMPLATE, "fallback")
    message = detection.message()
    assert '"Alpaca" is used as a fallback' in message
    assert "metadata" in message and "file name" in message and "base model" in message


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("codellama-13b-instruct.Q5_K_M.gguf", "Llama-2-chat"),
        ("llama-2-7b-chat.Q4_0.gguf", "Llama-2-chat"),
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", "Llama-3"),
        ("Llama-3.2-1B-Instruct-Q8_0.gguf", "Llama-3"),
        ("models/llama3.1_8b_instruct", "Llama-3"),
        ("Llama-4-Scout-17B-16E-Instruct-Q4_K_M.gguf", "Llama-4"),
        ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "Mistral"),
        ("Mixtral-8x7B-Instruct-v0.1.Q3_K_M.gguf", "Mistral"),
        ("gemma-2-2b-it-Q4_K_M.gguf", "Gemma"),
        ("gemma-3-270m-it-qat-Q4_0.gguf", "Gemma"),
        ("Phi-3-mini-4k-instruct-q4.gguf", "Phi-3"),
        ("Phi-3.5-mini-instruct-Q4_K_M.gguf", "Phi-3"),
        ("vicuna-13b-v1.5.Q4_K_M.gguf", "Vicuna-v1.1"),
        ("zephyr-7b-beta.Q5_K_M.gguf", "Zephyr"),
        ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "Zephyr"),
        ("c4ai-command-r-v01-Q4_K_M.gguf", "Command-R"),
        ("DeepSeek-V2.5-Q4_K_M.gguf", "DeepSeek"),
        ("DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf", "DeepSeek"),
        ("granite-3.1-2b-instruct-Q4_K_M.gguf", "Granite"),
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "ChatML"),
        ("Qwen3-0.6B-Q8_0.gguf", "ChatML"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "ChatML"),
        ("Hermes-3-Llama-3.1-8B.Q4_K_M.gguf", "ChatML"),
        ("dolphin-2.6-mistral-7b.Q4_K_M.gguf", "ChatML"),
        ("alpaca-7b-native.gguf", "Alpaca"),
        # base models: no instruct marker, or an explicit base marker
        ("gemma3-270m-q4_k_m.gguf", None),
        ("gemma-3-1b-pt.Q4_K_M.gguf", None),
        ("Meta-Llama-3-8B.Q4_K_M.gguf", None),
        ("Mistral-7B-v0.1.Q4_K_M.gguf", None),
        ("Qwen2.5-0.5B.Q4_K_M.gguf", None),
        ("Qwen3-0.6B-Base.Q4_K_M.gguf", None),
        ("granite-3.1-2b-base.gguf", None),
    ],
)
def test_file_name_rules(model_name: str, expected: str | None) -> None:
    assert template_name_from_file_name(model_name) == expected


def test_file_name_rules_only_name_bundled_templates(store: TemplateStore) -> None:
    rule_targets = {name for _, name in templates_module._NAME_RULES}
    assert rule_targets <= set(store.names())


def test_metadata_matching_a_bundled_template_borrows_its_name_and_keeps_its_text(
    store: TemplateStore,
) -> None:
    # A byte-different but equivalent Llama 3 template (as GGUF files carry it) is recognised by name; its own
    # text stays, since what the probe does not show (tools, thinking switches) may differ.
    meta = (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    )
    found = template_from_metadata(meta, store)
    assert (found.name, found.origin) == ("Llama-3", "model metadata")
    assert found.source == store.get("Llama-3").source
    # One that also handles tools keeps its own text under that name: the probe cannot show what it adds.
    with_tools = meta.replace("{% set loop_messages", "{% if tools %}TOOLS{% endif %}{% set loop_messages")
    found = template_from_metadata(with_tools, store)
    assert (found.name, found.source) == ("Llama-3", with_tools)


def test_metadata_template_that_refuses_a_system_role_is_still_recognised(store: TemplateStore) -> None:
    # Gemma 2 style: raises on a system message, otherwise the plain Gemma turn format.
    meta = (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    )
    detection = detect_template(store, model_name="gemma-2-2b-it.gguf", metadata_template=meta)
    assert (detection.template.name, detection.reason) == ("Gemma", "model metadata")
