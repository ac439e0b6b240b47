"""Model discovery in user_data/models, metadata without loading weights, and loader inference."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from webui.core.gguf_header import GGUFHeaderError, SkippedArray, read_gguf_header
from webui.core.safe_load import load_json

_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
# Pickle weights (.bin/.pt/.pth/.ckpt) are listed too; the loaders refuse them unless allowed.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class ModelNotFoundError(LookupError):
    """No model of that name in the models folder."""


class ModelFileError(ValueError):
    """A model file or folder that cannot be read; the message is meant for the user."""


@dataclass(frozen=True)
class ModelEntry:
    """One model the user can pick: a GGUF file (first part of a split one) or a model folder."""

    name: str
    path: Path
    kind: str  # "gguf" | "folder" | "remote" (a server's model: path is only its name)
    size_bytes: int
    parts: int = 1


@dataclass(frozen=True)
class ModelMetadata:
    """What the files say about a model, read without loading it."""

    architecture: str | None
    display_name: str | None
    context_length: int | None
    chat_template: str | None
    quant_method: str | None = None
    size_label: str | None = None


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _split_parts(path: Path) -> list[Path]:
    match = _SPLIT_GGUF.match(path.name)
    if not match:
        return [path]
    total = int(match["total"])
    return [path.with_name(f"{match['stem']}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]


def _is_model_folder(folder: Path) -> bool:
    if not (folder / "config.json").is_file():
        return False
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir())


def discover_models(models_dir: Path) -> list[ModelEntry]:
    """Every model in ``models_dir``: GGUF files (split files shown once, by part 1) and model folders."""
    if not models_dir.is_dir():
        return []
    entries: list[ModelEntry] = []
    for path in sorted(models_dir.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() == ".gguf":
            match = _SPLIT_GGUF.match(path.name)
            if match and int(match["part"]) != 1:
                continue
            parts = _split_parts(path)
            size = sum(p.stat().st_size for p in parts if p.exists())
            entries.append(ModelEntry(path.name, path, "gguf", size, len(parts)))
        elif path.is_dir():
            if _is_model_folder(path):
                entries.append(ModelEntry(path.name, path, "folder", _folder_size(path)))
            else:
                # A folder holding GGUF files, as the Hub's repositories are laid out when downloaded.
                for gguf in sorted(path.glob("*.gguf")):
                    match = _SPLIT_GGUF.match(gguf.name)
                    if match and int(match["part"]) != 1:
                        continue
                    parts = _split_parts(gguf)
                    size = sum(p.stat().st_size for p in parts if p.exists())
                    entries.append(ModelEntry(f"{path.name}/{gguf.name}", gguf, "gguf", size, len(parts)))
    return entries


def find_model(models_dir: Path, name: str) -> ModelEntry:
    """The model called ``name`` (or an existing path to a model file/folder); ModelNotFoundError if none."""
    for entry in discover_models(models_dir):
        if name in (entry.name, entry.path.name):
            return entry
    try:  # a path given on the command line (a name from an API request never gets here: see the API)
        candidate = Path(name).expanduser()
        if candidate.is_file() and candidate.suffix.lower() == ".gguf":
            return ModelEntry(candidate.name, candidate.resolve(), "gguf", candidate.stat().st_size)
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return ModelEntry(candidate.name, candidate.resolve(), "folder", _folder_size(candidate))
    except (OSError, ValueError, RuntimeError):
        pass  # a name too long for a path, with a NUL byte, an unknown ~user: not a model either
    known = [e.name for e in discover_models(models_dir)]
    listing = ", ".join(known) if known else f"none (put models in {models_dir})"
    raise ModelNotFoundError(f"Model {name!r} not found. Available models: {listing}.")


def infer_loader(entry: ModelEntry) -> str:
    """The loader the files call for: GGUF -> llama.cpp; a quantization_config -> gptq/awq; else transformers."""
    if entry.kind == "gguf":
        return "llama.cpp"
    if entry.kind == "remote":  # a model on an OpenAI-compatible server (listed while it is loaded)
        return "remote"
    quant = _read_config(entry.path).get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method in ("gptq", "awq"):
        return str(method)
    return "transformers"


def _read_config(folder: Path) -> dict[str, object]:
    try:
        data = load_json((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder.name}/config.json cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def gguf_metadata(path: Path) -> ModelMetadata:
    """Metadata from a GGUF header; ModelFileError with a readable reason if the file is not a usable GGUF."""
    try:
        header = read_gguf_header(path)
    except GGUFHeaderError as exc:
        raise ModelFileError(str(exc)) from exc
    architecture = _text(header.get("general.architecture"))
    context = _int(header.get(f"{architecture}.context_length")) if architecture else None
    template = header.get("tokenizer.chat_template")
    return ModelMetadata(
        architecture=architecture,
        display_name=_text(header.get("general.name")),
        context_length=context,
        chat_template=None if isinstance(template, SkippedArray) else _text(template),
        size_label=_text(header.get("general.size_label")),
    )


def folder_metadata(folder: Path) -> ModelMetadata:
    """Metadata from a Transformers folder: config.json plus the chat template in its usual places."""
    config = _read_config(folder)
    architectures = config.get("architectures")
    quant = config.get("quantization_config")
    return ModelMetadata(
        architecture=str(architectures[0]) if isinstance(architectures, list) and architectures else None,
        display_name=folder.name,
        context_length=_int(config.get("max_position_embeddings")),
        chat_template=_folder_chat_template(folder),
        quant_method=_text(quant.get("quant_method")) if isinstance(quant, dict) else None,
    )


def _folder_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        candidate = folder / name
        if not candidate.is_file():
            continue
        try:
            data = load_json(candidate.read_text(encoding="utf-8"))
        except ValueError:
            continue
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, str) and template:
            return template
        if isinstance(template, list):  # named templates: prefer "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            chosen = named.get("default") or next(iter(named.values()), None)
            if isinstance(chosen, str):
                return chosen
    return None


def model_metadata(entry: ModelEntry) -> ModelMetadata:
    """Metadata for any model entry."""
    return gguf_metadata(entry.path) if entry.kind == "gguf" else folder_metadata(entry.path)
