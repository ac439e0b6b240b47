"""A stand-in Hub serving catalog entries' repositories with small real GGUF files, and GGUF writers for tests
of capability detection (metadata-only files: enough for the header reader, not for a loader)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.fake_hub import FakeHub

QWEN_REPO = "Qwen/Qwen3-0.6B-GGUF"
QWEN_FILE = "Qwen3-0.6B-Q8_0.gguf"
GEMMA_REPO = "ggml-org/gemma-3-4b-it-GGUF"
GEMMA_FILE = "gemma-3-4b-it-Q4_K_M.gguf"
GEMMA_PROJECTOR = "mmproj-model-f16.gguf"
VISION_REPO = "palabre-test/tiny-vision-transformers"
# Gemma 3's template, shortened: no tools, no thinking.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def write_header_gguf(
    target: Path, template: str | None = None, tool_template: str | None = None, arch: str = "llama"
) -> Path:
    """A GGUF with metadata only (architecture, name, chat templates): what the header reader sees."""
    from gguf import GGUFWriter

    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(target, arch)
    writer.add_name(target.stem)
    writer.add_context_length(4096)
    if template is not None:
        writer.add_chat_template(template)
    if tool_template is not None:
        writer.add_string("tokenizer.chat_template.tool_use", tool_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def write_projector(target: Path, *, vision: bool = True, audio: bool = False) -> Path:
    """An mmproj GGUF header as llama.cpp's converter writes one (a ``clip`` architecture)."""
    from gguf import GGUFWriter

    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(target, "clip")
    writer.add_bool("clip.has_vision_encoder", vision)
    writer.add_bool("clip.has_audio_encoder", audio)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def catalog_hub(agent_gguf: Path, scratch: Path) -> FakeHub:
    """The stand-in Hub with two catalog entries' repositories: Qwen3 0.6B (the tiny agent model: Qwen3's
    template, thinks, calls tools, loads with llama.cpp) and Gemma 3 4B (a header with Gemma's template and a
    vision projector beside it), plus a Transformers repository with a vision tower (not in the catalog)."""
    hub = FakeHub()
    hub.add_repo(QWEN_REPO, {"README.md": b"# Qwen3-0.6B-GGUF\n", QWEN_FILE: agent_gguf.read_bytes()})
    gemma = write_header_gguf(scratch / GEMMA_FILE, GEMMA_TEMPLATE, arch="gemma3")
    projector = write_projector(scratch / GEMMA_PROJECTOR)
    hub.add_repo(
        GEMMA_REPO,
        {
            "README.md": b"# gemma-3-4b-it-GGUF\n",
            GEMMA_FILE: gemma.read_bytes(),
            GEMMA_PROJECTOR: projector.read_bytes(),
        },
    )
    hub.add_repo(
        VISION_REPO,
        {
            "config.json": json.dumps(
                {"architectures": ["Gemma3ForConditionalGeneration"], "vision_config": {"hidden_size": 8}}
            ).encode(),
            "tokenizer_config.json": json.dumps({"chat_template": GEMMA_TEMPLATE}).encode(),
            "model.safetensors": bytes(2000),
        },
    )
    return hub
