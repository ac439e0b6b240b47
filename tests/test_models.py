from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from webui.core.models.discovery import (
    ModelFileError,
    ModelNotFoundError,
    discover_models,
    find_model,
    gguf_metadata,
    infer_loader,
    model_metadata,
)
from webui.core.models.gguf_header import GGUFHeaderError, read_gguf_header


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, metadata: dict[str, object]) -> Path:
    """A minimal GGUF v3 file with the given string/int metadata and no tensors."""
    body = b""
    for key, value in metadata.items():
        body += _string(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + _string(value)
        else:
            assert isinstance(value, int)
            body += struct.pack("<I", 4) + struct.pack("<I", value)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata)) + body)
    return path


def test_discovery_lists_files_split_parts_once_and_folders(tmp_path: Path) -> None:
    write_gguf(tmp_path / "single.Q4_K_M.gguf", {})
    for part in (1, 2, 3):
        write_gguf(tmp_path / f"big-{part:05d}-of-00003.gguf", {})
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"\0" * 10)
    repo = tmp_path / "org-repo"
    repo.mkdir()
    write_gguf(repo / "inner.gguf", {})
    (tmp_path / "notes.txt").write_text("not a model")
    entries = {e.name: e for e in discover_models(tmp_path)}
    assert set(entries) == {
        "single.Q4_K_M.gguf",
        "big-00001-of-00003.gguf",
        "tiny-llama",
        "org-repo/inner.gguf",
    }
    assert entries["big-00001-of-00003.gguf"].parts == 3
    assert entries["tiny-llama"].kind == "folder"


def test_loader_is_inferred_from_the_files(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf", {})
    for name, quant in (("plain", None), ("gptq-model", "gptq"), ("awq-model", "awq")):
        folder = tmp_path / name
        folder.mkdir()
        config: dict[str, object] = {"architectures": ["X"]}
        if quant:
            config["quantization_config"] = {"quant_method": quant}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes(b"")
    loaders = {e.name: infer_loader(e) for e in discover_models(tmp_path)}
    assert loaders == {
        "m.gguf": "llama.cpp",
        "plain": "transformers",
        "gptq-model": "gptq",
        "awq-model": "awq",
    }


def test_find_model_explains_what_exists(tmp_path: Path) -> None:
    write_gguf(tmp_path / "here.gguf", {})
    assert find_model(tmp_path, "here.gguf").path == tmp_path / "here.gguf"
    with pytest.raises(ModelNotFoundError, match=r"'gone\.gguf' not found\. Available models: here\.gguf"):
        find_model(tmp_path, "gone.gguf")


def test_gguf_metadata_reads_template_and_context(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        {"general.architecture": "llama", "llama.context_length": 4096, "tokenizer.chat_template": "{{ x }}"},
    )
    meta = gguf_metadata(path)
    assert (meta.architecture, meta.context_length, meta.chat_template) == ("llama", 4096, "{{ x }}")


def test_real_default_model_metadata(default_model_path: Path) -> None:
    meta = gguf_metadata(default_model_path)
    assert meta.architecture == "llama"
    assert meta.context_length == 8192
    assert meta.chat_template is not None and "<|im_start|>" in meta.chat_template


def test_gemma_base_model_has_no_template(gemma_model_path: Path) -> None:
    meta = gguf_metadata(gemma_model_path)
    assert meta.architecture == "gemma3"
    assert meta.chat_template is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "too small"),
        (b"NOPE" + b"\0" * 40, "not a GGUF file"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 5) + _string("general.name"), "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40), "not plausible"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "metadata entries"),
        (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
    ],
)
def test_broken_gguf_files_give_clear_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFHeaderError, match=reason):
        read_gguf_header(path)
    with pytest.raises(ModelFileError):
        gguf_metadata(path)


def test_folder_chat_template_is_found_in_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["A"], "max_position_embeddings": 2048})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    entry = find_model(tmp_path.parent, str(tmp_path))
    meta = model_metadata(entry)
    assert (meta.chat_template, meta.context_length, meta.architecture) == ("{{ messages }}", 2048, "A")
    (tmp_path / "chat_template.jinja").write_text("jinja wins")
    assert model_metadata(entry).chat_template == "jinja wins"
