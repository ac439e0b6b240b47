"""Model discovery in user_data/models, metadata without loading weights, and loader inference.

Which loader opens a model is the loaders' own answer (``Loader.claims``), asked through the registry: GGUF
files and Transformers folders are found here, and any other file is listed when an installed loader claims it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from webui.core.models.gguf_header import GGUFHeaderError, SkippedArray, read_gguf_header
from webui.core.registry import LoaderRegistry
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
    # "gguf" | "folder" | "remote" (a server's model: path is only its name) | "file" (another format,
    # listed because an installed loader claims it)
    kind: str
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


def _gguf_entry(path: Path, name: str) -> ModelEntry | None:
    """The entry of a GGUF file (None for parts 2, 3, ... of a split one: part 1 stands for them)."""
    match = _SPLIT_GGUF.match(path.name)
    if match and int(match["part"]) != 1:
        return None
    if "mmproj" in path.name.lower():
        return None  # a vision projector (mmproj-….gguf) belongs to the model beside it; it is not one itself
    parts = _split_parts(path)
    size = sum(p.stat().st_size for p in parts if p.exists())
    return ModelEntry(name, path, "gguf", size, len(parts))


class _Claims:
    """Asks the registry whether some loader claims a file of another format (built on the first such file)."""

    def __init__(self, registry: LoaderRegistry | None) -> None:
        self._registry = registry

    def entry(self, path: Path, name: str, *, any_case: bool = True) -> ModelEntry | None:
        """The entry of the file at ``path``: a GGUF file, or another format a loader claims (else None)."""
        if path.name.startswith("."):
            return None
        suffix = path.suffix.lower() if any_case else path.suffix
        if suffix == ".gguf":
            return _gguf_entry(path, name)
        if self._registry is None:
            self._registry = LoaderRegistry.from_entry_points()
        entry = ModelEntry(name, path, "file", path.stat().st_size)
        try:
            return entry if self._registry.claimant(entry) is not None else None
        except ModelFileError:
            return None  # not listed, as a file no loader knows


def discover_models(models_dir: Path, registry: LoaderRegistry | None = None) -> list[ModelEntry]:
    """Every model in ``models_dir``: GGUF files (split files shown once, by part 1), model folders, and files
    of other formats that a loader of ``registry`` (default: the installed ones) claims."""
    if not models_dir.is_dir():
        return []
    claims = _Claims(registry)
    found: list[ModelEntry | None] = []
    for path in sorted(models_dir.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith("."):
            continue
        if path.is_file():
            found.append(claims.entry(path, path.name))
        elif _is_model_folder(path):
            found.append(ModelEntry(path.name, path, "folder", _folder_size(path)))
        elif path.is_dir():
            # A folder holding model files, as the Hub's repositories are laid out when downloaded.
            inner = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: p.name)
            found.extend(claims.entry(p, f"{path.name}/{p.name}", any_case=False) for p in inner)
    return [entry for entry in found if entry is not None]


def entry_at(path: Path) -> ModelEntry | None:
    """The model at ``path`` (a GGUF file, a model folder or another file), None when nothing is there."""
    if path.is_file():
        kind = "gguf" if path.suffix.lower() == ".gguf" else "file"
        return ModelEntry(path.name, path.resolve(), kind, path.stat().st_size)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelEntry(path.name, path.resolve(), "folder", _folder_size(path))
    return None


def find_model(models_dir: Path, name: str, registry: LoaderRegistry | None = None) -> ModelEntry:
    """The model called ``name`` (or an existing path to a model file/folder); ModelNotFoundError if none."""
    for entry in discover_models(models_dir, registry):
        if name in (entry.name, entry.path.name):
            return entry
    try:  # a path given on the command line (a name from an API request never gets here: see the API)
        found = entry_at(Path(name).expanduser())
        if found is not None and (found.kind != "file" or _claimed(found, registry)):
            return found
    except (OSError, ValueError, RuntimeError, ModelFileError):
        pass  # a name too long for a path, with a NUL byte, an unknown ~user: not a model either
    known = [e.name for e in discover_models(models_dir, registry)]
    listing = ", ".join(known) if known else f"none (put models in {models_dir})"
    raise ModelNotFoundError(f"Model {name!r} not found. Available models: {listing}.")


def _claimed(entry: ModelEntry, registry: LoaderRegistry | None) -> bool:
    return (registry or LoaderRegistry.from_entry_points()).claimant(entry) is not None


def infer_loader(entry: ModelEntry, registry: LoaderRegistry | None = None) -> str:
    """The loader that claims the files most strongly, of ``registry`` (default: the installed loaders).

    ModelFileError when the files cannot be read or no loader opens them.
    """
    name = (registry or LoaderRegistry.from_entry_points()).claimant(entry)
    if name is None:
        raise ModelFileError(f"No installed loader opens {entry.name}.")
    return name


def loader_for_path(path: Path) -> str | None:
    """The installed loader that claims the model at ``path`` (for a "pick the X loader" message), or None."""
    try:
        entry = entry_at(path)
        return LoaderRegistry.from_entry_points().claimant(entry) if entry is not None else None
    except (OSError, ModelFileError):
        return None


def read_model_config(folder: Path) -> dict[str, object]:
    """A model folder's config.json as a dict ({} when absent); ModelFileError when it cannot be read."""
    try:
        data = load_json((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder.name}/config.json cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


def config_quant_method(config: dict[str, object]) -> str | None:
    """The quantization_config's quant_method, lower-cased, or None for an unquantized checkpoint."""
    quant = config.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method).lower() if method else None


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
    config = read_model_config(folder)
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
    """Metadata for any model entry (only its name for formats Palabre cannot read itself)."""
    if entry.kind == "gguf":
        return gguf_metadata(entry.path)
    if entry.kind == "folder":
        return folder_metadata(entry.path)
    return ModelMetadata(architecture=None, display_name=entry.name, context_length=None, chat_template=None)
