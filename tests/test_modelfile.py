"""Ollama Modelfiles: import into a personality whose prompt matches what Ollama would render, export back."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui.config import PROJECT_ROOT
from webui.core.characters.go_template import convert_go_template
from webui.core.characters.modelfile import Modelfile, format_modelfile, parse_modelfile
from webui.core.characters.store import CharacterError, CharacterStore
from webui.core.params import GenerationParams
from webui.core.templates.store import InstructionTemplate, TemplateStore

DATA = Path(__file__).parent / "data" / "characters"
MARIO = DATA / "Mario.Modelfile"
MARIO_SYSTEM = "You are Mario from Super Mario Bros.\nAnswer as Mario, the assistant, only."
CHATML_GO = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
LLAMA3_GO = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}"""


@pytest.fixture
def templates(tmp_path: Path) -> TemplateStore:
    return TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "instruction-templates")


@pytest.fixture
def store(tmp_path: Path, templates: TemplateStore) -> CharacterStore:
    return CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters", templates)


def write(tmp_path: Path, text: str, name: str = "Test.Modelfile") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_modelfile_imports_into_a_personality_with_mapped_settings(store: CharacterStore) -> None:
    result = store.import_with_notes(MARIO)
    mario = result.character
    assert mario.name == "Mario"  # from the file name
    assert mario.model == "llama3.2:1b"
    assert mario.context == MARIO_SYSTEM
    assert mario.parameters == {
        "temperature": 0.8,
        "top_k": 30,
        "top_p": 0.9,
        "repetition_penalty": 1.15,
        "seed": 42,
        "stop": ["<|im_start|>", "<|im_end|>"],
    }
    params = GenerationParams().overlay(mario.params_overlay())
    assert (params.temperature, params.top_k, params.repetition_penalty, params.stop) == (
        0.8, 30, 1.15, ["<|im_start|>", "<|im_end|>"],
    )  # fmt: skip
    assert mario.loader_settings == {"n_ctx": 4096}
    assert [(m.role, m.content) for m in mario.example_messages] == [
        ("user", "Is Toad a good friend?"),
        ("assistant", 'Mamma mia, of course! Toad is always there with a "Wahoo!" when I need him.'),
        ("user", "Who is your brother?"),
        ("assistant", "Luigi, the best plumber in the Mushroom Kingdom after me!"),
    ]
    assert mario.modelfile.template == CHATML_GO
    assert mario.modelfile.license == ["Example license text.\nUse it kindly."]
    assert mario.instruction_template == "Mario (Modelfile)"
    assert any('instruction template "Mario (Modelfile)"' in note for note in result.notes)


def test_the_converted_template_renders_what_ollama_would(
    store: CharacterStore, templates: TemplateStore
) -> None:
    mario = store.import_file(MARIO)
    template = templates.get(mario.instruction_template or "")
    assert template.origin == "user"
    # Ollama: the SYSTEM, then the MESSAGEs, then the conversation; the legacy template runs once per
    # user/assistant pair and the last one stops at {{ .Response }}.
    messages = [
        {"role": "system", "content": mario.context_for()},
        *({"role": m.role, "content": m.content} for m in mario.example_messages_for()),
        {"role": "user", "content": "Hi Mario"},
    ]
    expected = (
        "<|im_start|>system\nYou are Mario from Super Mario Bros.\nAnswer as Mario, the assistant, only.<|im_end|>\n"
        "<|im_start|>user\nIs Toad a good friend?<|im_end|>\n"
        '<|im_start|>assistant\nMamma mia, of course! Toad is always there with a "Wahoo!" when I need him.'
        "<|im_end|>\n"
        "<|im_start|>user\nWho is your brother?<|im_end|>\n"
        "<|im_start|>assistant\nLuigi, the best plumber in the Mushroom Kingdom after me!<|im_end|>\n"
        "<|im_start|>user\nHi Mario<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render(messages, add_generation_prompt=True) == expected
    # Just the system message and one user message:
    assert template.render(messages[:1] + messages[-1:], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Mario from Super Mario Bros.\nAnswer as Mario, the assistant, only.<|im_end|>\n"
        "<|im_start|>user\nHi Mario<|im_end|>\n<|im_start|>assistant\n"
    )
    # Without a generation prompt the last turn is written whole (how Palabre's continue/impersonate cut it).
    assert template.render(messages[:2], add_generation_prompt=False).endswith(
        "<|im_start|>user\nIs Toad a good friend?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    )


def test_export_gives_back_an_equivalent_modelfile(store: CharacterStore, tmp_path: Path) -> None:
    store.import_file(MARIO)
    out = store.export("Mario", "modelfile", tmp_path / "Modelfile")
    original, exported = parse_modelfile(MARIO.read_text("utf-8")), parse_modelfile(out.read_text("utf-8"))
    assert exported.model == original.model == "llama3.2:1b"
    assert sorted((n, v) for n, v, _ in exported.parameters) == sorted(
        (n, v) for n, v, _ in original.parameters
    )
    assert exported.system == original.system == MARIO_SYSTEM
    assert exported.template == original.template == CHATML_GO
    assert exported.messages == original.messages
    assert exported.licenses == original.licenses
    # and importing the export again gives the same personality
    again = store.import_file(out, name="Mario again")
    mario = store.load("Mario")
    for key in ("context", "parameters", "model", "loader_settings", "example_messages", "modelfile"):
        assert getattr(again, key) == getattr(mario, key), key


def test_messages_form_template_converts(
    tmp_path: Path, store: CharacterStore, templates: TemplateStore
) -> None:
    go = """{{- if .System }}<|system|>
{{ .System }}</s>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|user|>
{{ .Content }}</s>
{{ else if eq .Role "assistant" }}<|assistant|>
{{ .Content }}</s>
{{ end }}
{{- end }}<|assistant|>
"""
    path = write(tmp_path, f'FROM zephyr\nTEMPLATE """{go}"""\nSYSTEM Be brief.\n', "zephyr.modelfile")
    character = store.import_file(path)
    assert character.name == "zephyr" and character.context == "Be brief."
    template = templates.get("zephyr (Modelfile)")
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},  # Ollama merges consecutive messages of one role
        {"role": "assistant", "content": "Three"},
        {"role": "user", "content": "Four"},
    ]
    expected = (
        "<|system|>\nBe brief.</s>\n"
        "<|user|>\nOne\n\nTwo</s>\n"
        "<|assistant|>\nThree</s>\n"
        "<|user|>\nFour</s>\n"
        "<|assistant|>\n"
    )
    assert template.render(conversation, add_generation_prompt=True) == expected
    assert template.render(conversation, add_generation_prompt=False) == expected.removesuffix(
        "<|assistant|>\n"
    )


def test_unconvertible_template_is_kept_and_reported(store: CharacterStore, tmp_path: Path) -> None:
    path = write(tmp_path, f'FROM llama3.1\nTEMPLATE """{LLAMA3_GO}"""\n', "llama.Modelfile")
    result = store.import_with_notes(path)
    assert result.character.instruction_template is None  # the model's own template is used
    assert result.character.modelfile.template == LLAMA3_GO
    assert any("could not be converted" in note and "Go text is kept" in note for note in result.notes)
    exported = parse_modelfile(store.export("llama", "modelfile", tmp_path / "out").read_text("utf-8"))
    assert exported.template == LLAMA3_GO


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PARAMETER temperature hot", r"line 3 \(PARAMETER temperature hot\): 'hot' is not a number"),
        ("PARAMETER temperature 9", r"line 3 .*temperature: Input should be less than or equal to 5"),
        ("PARAMETER top_k 2.5", r"line 3 .*'2.5' is not a whole number"),
        ("PARAMETER num_ctx lots", r"line 3 .*num_ctx.*not a whole number"),
        ("PARAMETER use_mmap maybe", r"line 3 .*not true or false"),
        ("PARAMETER flux_capacitor 88", r"line 3 .*unknown parameter 'flux_capacitor'"),
        ("PARAMETER temperature", r"line 3: expected 'PARAMETER <name> <value>'"),
        ("MESSAGE robot beep", r"line 3: MESSAGE role must be one of system, user or assistant"),
        ("TEMPERATURE 0.5", r"line 3: unknown instruction 'TEMPERATURE'"),
        ('SYSTEM """never closed', r"line 3: the quoted SYSTEM value never closes"),
    ],
)
def test_bad_lines_give_an_error_naming_the_line(
    store: CharacterStore, tmp_path: Path, line: str, message: str
) -> None:
    path = write(tmp_path, f"FROM base\n# a comment\n{line}\nSYSTEM ok\n")
    with pytest.raises(CharacterError, match=message):
        store.import_file(path)
    assert not store.user_dir.exists() or not list(store.user_dir.iterdir())


def test_a_modelfile_needs_a_from_line(store: CharacterStore, tmp_path: Path) -> None:
    with pytest.raises(CharacterError, match="no FROM line"):
        store.import_file(write(tmp_path, "SYSTEM hello\n"))


def test_unused_parameters_and_adapters_are_kept_and_reported(store: CharacterStore, tmp_path: Path) -> None:
    text = "FROM base\nADAPTER ./lora.gguf\nPARAMETER tfs_z 0.95\nPARAMETER num_predict -1\nPARAMETER num_predict 64\n"
    result = store.import_with_notes(write(tmp_path, text, "extras.Modelfile"))
    assert result.character.modelfile.parameters == [("tfs_z", "0.95"), ("num_predict", "-1")]
    assert result.character.parameters == {"max_new_tokens": 64}
    assert result.character.modelfile.adapter == ["./lora.gguf"]
    notes = " ".join(result.notes)
    assert "tfs_z is not used" in notes and "num_predict -1" in notes and "ADAPTER" in notes
    exported = parse_modelfile(store.export("extras", "modelfile", tmp_path / "o").read_text("utf-8"))
    assert exported.adapters == ["./lora.gguf"]
    assert sorted((n, v) for n, v, _ in exported.parameters) == [
        ("num_predict", "-1"), ("num_predict", "64"), ("tfs_z", "0.95"),
    ]  # fmt: skip


def test_exporting_a_native_personality(store: CharacterStore, tmp_path: Path) -> None:
    text = store.export("Captain Barnacle", "modelfile", tmp_path / "cap").read_text("utf-8")
    assert text.startswith('# Modelfile exported by Palabre from the personality "Captain Barnacle".\n')
    assert "# Greeting (Ollama has no greeting):\n# *The Captain squints" in text
    parsed = parse_modelfile(text)
    assert parsed.model == "llama3.2"  # placeholder, with a comment saying so
    assert "names no model" in text
    assert parsed.system is not None and parsed.system.startswith("Captain Barnacle is a cheerful")
    assert "{{" not in parsed.system and "Matey" in parsed.system  # placeholders filled
    assert sorted((n, v) for n, v, _ in parsed.parameters) == [
        ("repeat_penalty", "1.1"),
        ("temperature", "0.9"),
    ]
    assert parsed.messages[0] == ("user", "What is a computer virus?")  # from the card-style example dialogue
    assert parsed.messages[1][0] == "assistant" and parsed.messages[1][1].startswith(
        "Arr, picture a stowaway rat, Matey!"
    )
    assert parsed.template is None


def test_settings_without_an_ollama_parameter_become_comments(store: CharacterStore, tmp_path: Path) -> None:
    from webui.core.characters.store import Character

    store.save(Character(name="Dry", context="x", parameters={"dry_multiplier": 0.8, "min_p": 0.1}))
    text = store.export("Dry", "modelfile", tmp_path / "d").read_text("utf-8")
    assert "# Palabre sampler setting with no Ollama PARAMETER: dry_multiplier = 0.8" in text
    assert [(n, v) for n, v, _ in parse_modelfile(text).parameters] == [("min_p", "0.1")]


# --- the parser and writer on their own


def test_parser_follows_ollama_rules() -> None:
    text = (
        "\ufeff# leading comment\r\n"
        "from ./models/x.gguf\r\n"
        'PARAMETER stop "User: "\r\n'
        "  parameter   STOP   ###\r\n"
        'SYSTEM """  spaced\r\n  and "quoted" # not a comment\r\n"""\r\n'
        'template """{{ .Prompt }}"""\r\n'
        'MESSAGE user "two\nlines"\n'
        "REQUIRES 0.6.0\n"
    )
    parsed = parse_modelfile(text)
    assert parsed.model == "./models/x.gguf"
    assert [(n, v) for n, v, _ in parsed.parameters] == [("stop", "User: "), ("stop", "###")]
    assert parsed.system == '  spaced\n  and "quoted" # not a comment\n'
    assert parsed.template == "{{ .Prompt }}"
    assert parsed.messages == [("user", "two\nlines")]
    assert parsed.other == [("requires", "0.6.0")]


def test_writer_quotes_values_so_they_read_back_unchanged() -> None:
    tricky = Modelfile(
        model="my model:latest",
        parameters=[
            ("stop", " leading space", 0),
            ("stop", "\n", 0),
            ("stop", '"quoted"', 0),
            ("stop", "</s>", 0),
        ],
        system=' starts with a space and ends with a quote"',
        template="\n{{ .Prompt }}\n\n",
        messages=[("assistant", '"Hi!" she said'), ("user", "")],
        licenses=["MIT"],
    )
    parsed = parse_modelfile(format_modelfile(tricky))
    assert parsed.model == tricky.model
    assert [(n, v) for n, v, _ in parsed.parameters] == [(n, v) for n, v, _ in tricky.parameters]
    assert (parsed.system, parsed.template, parsed.messages, parsed.licenses) == (
        tricky.system, tricky.template, tricky.messages, tricky.licenses,
    )  # fmt: skip


def test_values_with_three_quotes_cannot_be_written(store: CharacterStore, tmp_path: Path) -> None:
    from webui.core.characters.store import Character

    store.save(Character(name="Q", context='He wrote """ in the middle.'))
    with pytest.raises(CharacterError, match="three double quotes"):
        store.export("Q", "modelfile", tmp_path / "q")


# --- Go template conversion details


def render(go: str, messages: list[dict[str, str]], *, generation: bool = True) -> str:
    conversion = convert_go_template(go)
    assert conversion.jinja is not None, conversion.problem
    return InstructionTemplate("converted", conversion.jinja).render(
        messages, add_generation_prompt=generation
    )


def test_legacy_template_without_response_gets_it_appended() -> None:
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert render("[INST] {{ .Prompt }} [/INST]", messages) == "[INST] Q1 [/INST]A1[INST] Q2 [/INST]"


def test_trim_markers_comments_literals_and_else() -> None:
    go = (
        "{{/* a comment */}}{{- if and .System (not .Prompt) }}ONLY SYSTEM{{ else if .System -}}\n"
        '   S={{ .System }}|{{ "lit{{\\"}}\\n" }}\n'
        "{{- else }}no system{{ end }}\n"
        "  {{- .Prompt -}}  \n  ~{{ .Response }}"
    )
    assert render(go, [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]) == (
        'S=sys|lit{{"}}\nhi~'
    )
    assert render(go, [{"role": "user", "content": "hi"}]) == "no systemhi~"
    assert render(go, [{"role": "system", "content": "sys"}]) == "ONLY SYSTEM~"


def test_text_is_kept_verbatim_even_with_jinja_syntax_in_it() -> None:
    go = "{% raw %} {# é 😀 \\n {{ .Prompt }} {%- endraw %}"
    assert render(go, [{"role": "user", "content": "x"}]) == "{% raw %} {# é 😀 \\n x {%- endraw %}"


@pytest.mark.parametrize(
    ("go", "reason"),
    [
        (LLAMA3_GO, "declares variables"),
        ("{{ json .Tools }}", "json"),
        ("{{ with .System }}{{ . }}{{ end }}", "with"),
        ("{{ if .System }}unclosed", "not closed"),
        ("{{ range .Tools }}{{ .Name }}{{ end }}", "other than .Messages"),
        ("{{ .Prompt | printf }}", "|"),
        ("{{ .Unknown }}", ".Unknown"),
    ],
)
def test_unconvertible_templates_say_why(go: str, reason: str) -> None:
    conversion = convert_go_template(go)
    assert conversion.jinja is None
    assert conversion.problem is not None and reason in conversion.problem
