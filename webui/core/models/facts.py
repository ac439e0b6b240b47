"""The shape of a model read from its files (GGUF header and tensor list, or config.json and safetensors headers).

These are the numbers the memory and speed estimates need: layers, heads, head sizes, vocabulary, parameters,
and how many bytes of weights one generated token reads.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from webui.core.models.discovery import ModelEntry, ModelFileError, _split_parts, read_model_config
from webui.core.models.gguf_header import GGUFHeaderError, SkippedArray, TensorInfo, read_gguf_tensors
from webui.core.models.names import FILE_TYPES, GGML_TYPES, DecodedName, decode_model_name, parse_size_label
from webui.core.safe_load import load_json

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
_TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
MAX_SAFETENSORS_HEADER = 100 * 2**20


@dataclass(frozen=True)
class ArchFacts:
    """A model's shape and size; None where the files do not say."""

    format: str  # gguf | transformers | gptq | awq
    architecture: str | None
    n_layers: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    key_length: int | None
    value_length: int | None
    context_length: int | None
    n_vocab: int | None
    quantization: str | None  # GGUF file type name, or "gptq 4-bit", or the torch dtype
    size_label: str | None
    parameter_count: int | None
    weight_bytes: int  # bytes of weights on disk (all split parts / all weight files)
    bytes_per_token: (
        int  # weight bytes one generated token reads (token embedding: one row; MoE: used experts)
    )
    weights_per_token: int  # weights one generated token multiplies by
    expert_count: int | None = None
    expert_used_count: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of f16 KV cache per context token: layers x kv heads x (key + value length) x 2 bytes."""
        if not (self.n_layers and self.n_head_kv and self.key_length and self.value_length):
            return 0
        return self.n_layers * self.n_head_kv * (self.key_length + self.value_length) * 2


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)  # per-layer arrays (e.g. head_count_kv): the largest bounds the cache
    return None


def _tensor_bytes(tensor: TensorInfo) -> int:
    count = math.prod(tensor.shape)
    _name, block, size = GGML_TYPES.get(tensor.ggml_type, ("?", 1, 2))
    return count // block * size


def gguf_facts(path: Path) -> ArchFacts:
    """Facts from a GGUF file's header and tensor list (every split part); ModelFileError if unreadable."""
    parts = [p for p in _split_parts(path) if p.exists()] or [path]
    tensors: list[TensorInfo] = []
    try:
        header, first = read_gguf_tensors(parts[0])
        tensors.extend(first)
        for part in parts[1:]:
            tensors.extend(read_gguf_tensors(part)[1])
    except GGUFHeaderError as exc:
        raise ModelFileError(str(exc)) from exc
    arch = header.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def key(name: str) -> int | None:
        return _int(header.get(f"{arch}.{name}")) if arch else None

    n_embd, n_head = key("embedding_length"), key("attention.head_count")
    head_dim = n_embd // n_head if n_embd and n_head else None
    tokens = header.get("tokenizer.ggml.tokens")
    n_vocab = key("vocab_size") or (
        tokens.length
        if isinstance(tokens, SkippedArray)
        else len(tokens)
        if isinstance(tokens, list)
        else None
    )
    expert_count, expert_used = key("expert_count"), key("expert_used_count")
    names = {t.name for t in tensors}
    tied = "output.weight" not in names  # no separate output matrix: the token embedding is read in full
    params = bytes_per_token = weights_per_token = 0
    for tensor in tensors:
        count, size = math.prod(tensor.shape), _tensor_bytes(tensor)
        params += count
        share = 1.0
        if tensor.name.startswith("token_embd.") and not tied:
            share = 1.0 / max(tensor.shape[-1] if tensor.shape else 1, 1)  # one row per token
        elif "_exps" in tensor.name and expert_count and expert_used:
            share = expert_used / expert_count
        bytes_per_token += int(size * share)
        weights_per_token += int(count * share)
    file_type = header.get("general.file_type")
    size_label = header.get("general.size_label")
    return ArchFacts(
        format="gguf",
        architecture=arch,
        n_layers=key("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=key("attention.head_count_kv") or n_head,
        key_length=key("attention.key_length") or head_dim,
        value_length=key("attention.value_length") or head_dim,
        context_length=key("context_length"),
        n_vocab=n_vocab,
        quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        size_label=size_label if isinstance(size_label, str) else None,
        parameter_count=params or None,
        weight_bytes=sum(p.stat().st_size for p in parts),
        bytes_per_token=bytes_per_token,
        weights_per_token=weights_per_token,
        expert_count=expert_count,
        expert_used_count=expert_used,
    )


def _safetensors_params(path: Path) -> int:
    """Parameter count from a .safetensors header (8-byte length + JSON), without reading the tensors."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            return 0
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_SAFETENSORS_HEADER:
            return 0
        try:
            header = load_json(handle.read(length))
        except ValueError:
            return 0
    total = 0
    for name, info in header.items() if isinstance(header, dict) else ():
        shape = info.get("shape") if isinstance(info, dict) else None
        # A shape from a stranger's file: only lists of non-negative integers count (no "x", 1e400, [[1]]).
        if (
            name != "__metadata__"
            and isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            total += math.prod(shape)
    return total


def folder_facts(folder: Path) -> ArchFacts:
    """Facts from a Transformers folder's config.json and weight files; ModelFileError if unreadable."""
    config = read_model_config(folder)
    text = config.get("text_config")
    if isinstance(text, dict):  # multimodal configs keep the language model's shape here
        config = {**config, **text}
    quant = config.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    bits = quant.get("bits") if isinstance(quant, dict) else None
    dtype = config.get("torch_dtype") or config.get("dtype")
    dtype = dtype if isinstance(dtype, str) else None
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    weight_bytes = sum(p.stat().st_size for p in weights)
    stored = sum(_safetensors_params(p) for p in weights if p.suffix == ".safetensors")
    n_embd, n_head = _int(config.get("hidden_size")), _int(config.get("num_attention_heads"))
    head_dim = _int(config.get("head_dim")) or (n_embd // n_head if n_embd and n_head else None)
    n_layers = _int(config.get("num_hidden_layers"))
    n_vocab = _int(config.get("vocab_size"))
    notes = []
    quantization: str | None
    if method in ("gptq", "awq") and isinstance(bits, int):
        quantization = f"{method} {bits}-bit"
        # Packed int32 tensors hide the real count: derive it from the bytes at ``bits`` per weight.
        params = int(weight_bytes * 8 / bits) if weight_bytes else None
        notes.append("parameter count derived from the weight size at the quantized bit width")
    else:
        quantization = dtype
        per = _TORCH_DTYPE_BYTES.get(dtype or "", 2)
        params = stored or (weight_bytes // per if weight_bytes else None)
    fmt = method if method in ("gptq", "awq") else "transformers"
    # Untied embeddings: the input table is read one row per token; tied ones are the output head, read in full.
    tied = config.get("tie_word_embeddings", True) is not False
    embed_weights = n_vocab * n_embd if n_vocab and n_embd and params and not tied else 0
    embed_bytes = int(weight_bytes * embed_weights / params) if params else 0
    return ArchFacts(
        format=fmt,
        architecture=_first(config.get("architectures")),
        n_layers=n_layers,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_int(config.get("num_key_value_heads")) or n_head,
        key_length=head_dim,
        value_length=head_dim,
        context_length=_int(config.get("max_position_embeddings")),
        n_vocab=n_vocab,
        quantization=quantization,
        size_label=None,
        parameter_count=params,
        weight_bytes=weight_bytes,
        bytes_per_token=max(weight_bytes - embed_bytes, 0),
        weights_per_token=max((params or 0) - embed_weights, 0),
        notes=tuple(notes),
    )


def _first(value: object) -> str | None:
    return str(value[0]) if isinstance(value, list) and value else None


def entry_facts(entry: ModelEntry) -> ArchFacts:
    """Facts for a discovered model; ModelFileError if its files cannot be read."""
    if entry.kind == "gguf":
        return gguf_facts(entry.path)
    if entry.kind == "folder":
        return folder_facts(entry.path)
    raise ModelFileError(f"{entry.name}: cannot read the size of a {entry.kind} model.")


def name_disagreements(name: DecodedName, facts: ArchFacts) -> list[str]:
    """Where the file name says something the header contradicts, one sentence each."""
    notes = []
    if name.quantization and facts.quantization and facts.format == "gguf":
        named = name.quantization.replace("_XL", "_M")
        if named != facts.quantization and not facts.quantization.startswith(named):
            notes.append(
                f"The name says {name.quantization} but the header's file type is {facts.quantization}."
            )
    claimed = name.parameter_count
    if claimed and facts.parameter_count:
        ratio = facts.parameter_count / claimed
        if not 0.7 <= ratio <= 1.4:
            notes.append(
                f"The name says {name.parameters} parameters but the tensors hold "
                f"{format_count(facts.parameter_count)}."
            )
    label = parse_size_label(facts.size_label) if facts.size_label else None
    if claimed and label and abs(label - claimed) / claimed > 0.3:
        notes.append(f"The name says {name.parameters} but the header's size label is {facts.size_label}.")
    return notes


def format_count(count: float) -> str:
    """1.345e8 -> '134.5M'."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(int(count))


def decode_entry_name(entry: ModelEntry) -> DecodedName:
    """The decoded file name (for folders, the folder name)."""
    return decode_model_name(entry.path.name)
