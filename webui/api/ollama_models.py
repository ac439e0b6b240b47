"""Models described in Ollama's shapes: the entries of /api/tags and /api/ps, and the body of /api/show."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from webui.api.serving import Serving, sees
from webui.core.abilities import TemplateAbilities, abilities_of
from webui.core.characters.modelfile import PARAM_TO_OLLAMA, Modelfile, format_modelfile, parameter_lines
from webui.core.models.discovery import ModelEntry, ModelFileError, ModelMetadata, model_metadata
from webui.core.models.names import decode_model_name
from webui.core.params import GenerationParams
from webui.core.presets import DEFAULT_PRESET
from webui.core.service import LoadedState


def _mtime(entry: ModelEntry) -> datetime:
    try:
        return datetime.fromtimestamp(entry.path.stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)  # a remote server's model has no file


def _digest(entry: ModelEntry) -> str:
    """Stands in for Ollama's manifest digest: it changes when the file changes (hashing gigabytes per
    listing would be too slow)."""
    mark = f"{entry.path}:{entry.size_bytes}:{_mtime(entry).timestamp()}"
    return hashlib.sha256(mark.encode()).hexdigest()


def _metadata(entry: ModelEntry) -> ModelMetadata | None:
    if entry.kind == "remote":
        return None
    try:
        return model_metadata(entry)
    except (ModelFileError, OSError, ValueError):
        return None  # an unreadable file is still listed; loading it reports the problem


def details(entry: ModelEntry) -> dict[str, Any]:
    meta = _metadata(entry)
    decoded = decode_model_name(entry.path.name)
    family = (meta.architecture if meta else None) or ""
    return {
        "parent_model": "",
        "format": {"gguf": "gguf", "folder": "safetensors"}.get(entry.kind, entry.kind),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": (meta.size_label if meta else None) or decoded.parameters or "",
        "quantization_level": decoded.quantization or (meta.quant_method if meta else None) or "",
    }


def tag(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "model": entry.name,
        "modified_at": _mtime(entry).isoformat(),
        "size": entry.size_bytes,
        "digest": _digest(entry),
        "details": details(entry),
    }


def running_model(state: LoadedState, expires_in: float | None) -> dict[str, Any]:
    """A loaded model as /api/ps lists it: ``size`` is the memory it holds (the fit estimate: weights, KV
    cache and overhead; the file's size when that cannot be judged), ``size_vram`` the part on a GPU;
    ``expires_in`` None: until it is unloaded to make room or by hand."""
    model = tag(state.entry)
    del model["modified_at"]
    # Without an idle limit the model stays until it must make room: as Ollama's keep_alive -1.
    lasts = timedelta(days=365 * 100) if expires_in is None else timedelta(seconds=expires_in)
    model["expires_at"] = (datetime.now(UTC) + lasts).isoformat()
    model["size"] = state.memory_bytes or state.entry.size_bytes
    model["size_vram"] = state.gpu_bytes
    model["context_length"] = state.model.facts.context_length
    return model


def running_models(serving: Serving) -> list[dict[str, Any]]:
    """/api/ps's list: every loaded model, the page's first, each with its own expiry."""
    return [
        running_model(state, serving.idle.expires_in(state.entry.name)) for state in serving.loaded_models()
    ]


def default_parameters() -> list[tuple[str, str, int]]:
    """What requests get when they set no option: the Default preset, as Modelfile PARAMETER lines."""
    defaults = GenerationParams().model_dump()
    sampler = {key: defaults[key] for key in PARAM_TO_OLLAMA if key != "stop" or defaults[key]}
    lines, _ = parameter_lines(sampler, {}, [])
    return lines


def capabilities(abilities: TemplateAbilities | None, *, vision: bool = False) -> list[str]:
    """What Ollama clients check before sending tools, ``think`` or images: "completion" always, "tools"
    when the chat template renders tool definitions, "thinking" when it has a thinking format, "vision" when
    the loaded model sees images (its projector is loaded)."""
    found = ["completion"]
    if abilities is not None and abilities.tools:
        found.append("tools")
    if abilities is not None and abilities.thinks:
        found.append("thinking")
    if vision:
        found.append("vision")
    return found


def show(
    entry: ModelEntry, loaded: LoadedState | None, abilities: TemplateAbilities | None = None
) -> dict[str, Any]:
    """/api/show's body: the model's Modelfile (the Default preset's values), template, details, facts and
    capabilities. ``abilities`` are the loaded model's (its template as detected, or as chosen at load);
    a model that is not loaded is judged by the chat template in its file's metadata."""
    meta = _metadata(entry)
    template = None
    vision = False
    if loaded is not None and loaded.entry == entry:
        template = loaded.model.facts.chat_template
        vision = sees(loaded.model) is True
        if abilities is None and template:  # loaded beside the page's model: judged by its own template
            abilities = abilities_of(template)
    elif meta is not None:
        template = meta.chat_template
        abilities = abilities_of(template) if template else None
    arch = meta.architecture if meta else None
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.name": meta.display_name if meta else None,
    }
    if arch and meta and meta.context_length:
        info[f"{arch}.context_length"] = meta.context_length
    lines = default_parameters()
    modelfile = format_modelfile(
        Modelfile(
            model=str(entry.path),
            parameters=lines,
            comments=[
                f"Modelfile generated by Palabre for {entry.name} (the {DEFAULT_PRESET} preset's values).",
                "The model's chat template is Jinja, shown in `template`; Ollama would need a Go TEMPLATE.",
            ],
        )
    )
    return {
        "modelfile": modelfile,
        "parameters": "\n".join(f"{name} {value}" for name, value, _ in lines),
        "template": template or "",
        "details": details(entry),
        "model_info": info,
        "capabilities": capabilities(abilities, vision=vision),
        "modified_at": _mtime(entry).isoformat(),
    }
