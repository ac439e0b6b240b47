"""What a model can do, read from its files without loading it: thinking and tools from its chat template,
vision from a projector beside a GGUF or a vision_config in a Transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.agent_models import qwen3_template
from tests.support.catalog_hub import GEMMA_TEMPLATE, write_header_gguf, write_projector
from webui.core.models.capabilities import entry_capabilities, folder_capabilities, gguf_capabilities
from webui.core.models.discovery import discover_models

HERMES_TOOL_TEMPLATE = (
    "{% for tool in tools %}<tools>{{ tool | tojson }}</tools>{% endfor %}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
)


def test_a_qwen3_gguf_thinks_and_calls_tools(tmp_path: Path) -> None:
    caps = gguf_capabilities(write_header_gguf(tmp_path / "qwen.gguf", qwen3_template()))
    assert (caps.thinking, caps.tools, caps.vision) == (True, True, False)
    assert caps.summary == "thinking,tools"


def test_a_plain_template_does_neither(tmp_path: Path) -> None:
    caps = gguf_capabilities(write_header_gguf(tmp_path / "gemma.gguf", GEMMA_TEMPLATE))
    assert caps.labels == () and caps.template_found and caps.summary == "-"


def test_no_template_means_unknown_not_none(tmp_path: Path) -> None:
    caps = gguf_capabilities(write_header_gguf(tmp_path / "base.gguf"))
    assert not caps.template_found and caps.summary == "?"


def test_a_separate_tool_use_template_gives_tools(tmp_path: Path) -> None:
    path = write_header_gguf(tmp_path / "hermes.gguf", GEMMA_TEMPLATE, tool_template=HERMES_TOOL_TEMPLATE)
    assert gguf_capabilities(path).tools


def test_a_projector_beside_a_gguf_in_its_folder_gives_vision_and_is_not_a_model(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "ggml-org_gemma-3-4b-it-GGUF"
    write_header_gguf(folder / "gemma-3-4b-it-Q4_K_M.gguf", GEMMA_TEMPLATE)
    write_projector(folder / "mmproj-model-f16.gguf")
    entries = discover_models(tmp_path / "models")
    assert [e.name for e in entries] == ["ggml-org_gemma-3-4b-it-GGUF/gemma-3-4b-it-Q4_K_M.gguf"]
    caps = entry_capabilities(entries[0])
    assert caps.vision and caps.projector == "mmproj-model-f16.gguf" and caps.summary == "vision"


def test_an_audio_only_projector_gives_no_vision(tmp_path: Path) -> None:
    folder = tmp_path / "voxtral"
    model = write_header_gguf(folder / "voxtral-Q4_K_M.gguf", GEMMA_TEMPLATE)
    write_projector(folder / "mmproj-voxtral-f16.gguf", vision=False, audio=True)
    assert not gguf_capabilities(model).vision


def test_a_loose_projector_belongs_only_to_the_model_it_names(tmp_path: Path) -> None:
    gemma = write_header_gguf(tmp_path / "gemma-3-4b-it-Q4_K_M.gguf", GEMMA_TEMPLATE)
    other = write_header_gguf(tmp_path / "Llama-3.2-1B-Instruct-Q4_K_M.gguf", GEMMA_TEMPLATE)
    write_projector(tmp_path / "mmproj-gemma-3-4b-it-f16.gguf")
    assert gguf_capabilities(gemma, own_folder=False).vision
    assert not gguf_capabilities(other, own_folder=False).vision


def test_a_file_named_mmproj_that_is_not_a_projector_gives_no_vision(tmp_path: Path) -> None:
    model = write_header_gguf(tmp_path / "m" / "model-Q4_K_M.gguf", GEMMA_TEMPLATE)
    (tmp_path / "m" / "mmproj-model-f16.gguf").write_bytes(b"not a gguf at all, just a name" * 4)
    assert not gguf_capabilities(model).vision


def _folder(path: Path, config: dict[str, object], tokenizer_config: dict[str, object]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    return path


def test_a_transformers_folder_with_vision_config_sees(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path / "gemma-3-4b-it",
        {"architectures": ["Gemma3ForConditionalGeneration"], "vision_config": {"hidden_size": 1152}},
        {"chat_template": GEMMA_TEMPLATE},
    )
    caps = folder_capabilities(folder)
    assert caps.vision and not caps.thinking and not caps.tools


def test_a_transformers_folder_reads_chat_template_jinja_and_named_tool_use(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path / "qwen",
        {"architectures": ["Qwen3ForCausalLM"]},
        {"chat_template": [{"name": "default", "template": GEMMA_TEMPLATE}]},
    )
    assert folder_capabilities(folder).labels == ()
    (folder / "chat_template.jinja").write_text(qwen3_template())
    assert folder_capabilities(folder).labels == ("thinking", "tools")
    (folder / "chat_template.jinja").unlink()
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": [
                    {"name": "default", "template": GEMMA_TEMPLATE},
                    {"name": "tool_use", "template": HERMES_TOOL_TEMPLATE},
                ]
            }
        )
    )
    assert folder_capabilities(folder).labels == ("tools",)


def test_an_unreadable_gguf_has_no_capabilities_and_raises_nothing(tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 40)
    [entry] = discover_models(tmp_path)
    assert entry_capabilities(entry).summary == "?"
