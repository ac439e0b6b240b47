"""The will-it-fit check run before a load, and the model report behind `webui models inspect`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from webui.core.hardware.estimates import (
    KV_TYPE_BYTES,
    FitAdvice,
    KvCache,
    MachineSource,
    advice_dict,
    automatic_parallel,
    estimate_speed,
    fit_advice,
)
from webui.core.hardware.machine import MachineFacts
from webui.core.loader import LoaderError
from webui.core.models.discovery import ModelEntry, ModelFileError, infer_loader
from webui.core.models.facts import ArchFacts, entry_facts, format_count, gguf_facts, name_disagreements
from webui.core.models.names import decode_model_name
from webui.core.registry import LoaderRegistry


def _setting(settings: Mapping[str, Any] | None, key: str) -> int | None:
    """An integer loader setting (the CLI passes strings); None when absent or not a number."""
    value = (settings or {}).get(key)
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def load_settings_layout(settings: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """(n_ctx, n_gpu_layers) the load will use, from the settings that name them; without n_gpu_layers a
    loader may use every GPU (-1, also the llama.cpp loader's default)."""
    ngl = _setting(settings, "n_gpu_layers")
    return _setting(settings, "n_ctx"), -1 if ngl is None else ngl


# The parallel setting that leaves the number of slots to the machine's memory (the llama.cpp loader's default).
AUTOMATIC = 0


def kv_cache_layout(settings: Mapping[str, Any] | None) -> KvCache:
    """The KV cache the load will allocate, from the llama.cpp settings that shape it (cache_type_k,
    cache_type_v, parallel); f16 with one slot for anything else. ``parallel`` is AUTOMATIC (0) when the
    settings leave it to the machine (see ``automatic_slots``)."""
    values = settings or {}

    def cache_type(key: str) -> str:
        value = str(values.get(key) or "f16").strip().lower()
        return value if value in KV_TYPE_BYTES else "f16"

    return KvCache(
        cache_type("cache_type_k"),
        cache_type("cache_type_v"),
        max(AUTOMATIC, _setting(values, "parallel") or 0),
    )


def automatic_slots(
    facts: ArchFacts, settings: Mapping[str, Any] | None, machine: MachineFacts, draft: ArchFacts | None
) -> int:
    """The slots a load with an automatic ``parallel`` gets (the fit check and the llama.cpp loader both ask)."""
    n_ctx, ngl = load_settings_layout(settings)
    kv_cache = kv_cache_layout(settings)
    return automatic_parallel(facts, machine, n_ctx=n_ctx, n_gpu_layers=ngl, kv_cache=kv_cache, draft=draft)


# The draft_model value that drafts from n-grams (no second model), as the llama.cpp loader reads it.
PROMPT_LOOKUP = "prompt-lookup"


def draft_model_location(model: Path, setting: str) -> Path | None:
    """Where the ``draft_model`` setting points for ``model``: a path, or a file beside the model (it may not
    exist); None for no draft model or prompt lookup."""
    name = setting.strip()
    if name in ("", PROMPT_LOOKUP):
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else model.parent / path


def draft_model_facts(entry: ModelEntry, settings: Mapping[str, Any] | None) -> ArchFacts | None:
    """The draft model a load names, as the llama.cpp loader finds it; None for none, prompt lookup, or a file
    that cannot be read (the load says why)."""
    path = draft_model_location(entry.path, str((settings or {}).get("draft_model") or ""))
    if path is None or entry.kind != "gguf":
        return None
    try:
        return gguf_facts(path) if path.is_file() else None
    except (ModelFileError, OSError, ValueError):
        return None


def _runs_here(loader: str, registry: LoaderRegistry | None) -> bool:
    """Whether ``loader`` loads the model's files into this machine's memory (not a server's model)."""
    try:
        return (registry or LoaderRegistry.from_entry_points()).get(loader).capabilities.needs_files
    except LoaderError:
        return False  # an unknown loader: the load itself says so


def has_slots(loader: str, registry: LoaderRegistry | None) -> bool:
    """Whether ``loader`` has a ``parallel`` setting (slots, each with its own cache; the llama.cpp loader)."""
    try:
        settings_model = (registry or LoaderRegistry.from_entry_points()).get(loader).settings_model
    except LoaderError:
        return False
    return "parallel" in getattr(settings_model, "model_fields", {})


def check_before_load(
    entry: ModelEntry,
    loader: str,
    settings: Mapping[str, Any] | None,
    machine: MachineSource,
    registry: LoaderRegistry | None = None,
) -> FitAdvice | None:
    """The fit advice for this load, or None when it cannot be judged (remote models, unknown formats).

    ``registry`` holds ``loader`` (default: the installed loaders).
    """
    if entry.kind not in ("gguf", "folder") or not _runs_here(loader, registry):
        return None
    try:
        facts = entry_facts(entry)
    except (ModelFileError, OSError):
        return None  # the loader reports unreadable files with its own, better message
    if not facts.weight_bytes:
        return None
    n_ctx, ngl = load_settings_layout(settings)
    machine_facts = machine.facts(measure_speed=False)
    draft = draft_model_facts(entry, settings)
    kv_cache = kv_cache_layout(settings)
    if kv_cache.parallel == AUTOMATIC:
        slots = automatic_slots(facts, settings, machine_facts, draft) if has_slots(loader, registry) else 1
        kv_cache = replace(kv_cache, parallel=slots)
    return fit_advice(
        facts, machine_facts, name=entry.name, n_ctx=n_ctx, n_gpu_layers=ngl, kv_cache=kv_cache, draft=draft
    )


def refusal_message(advice: FitAdvice) -> str:
    return (
        f"{advice.message} Not loading it: it would likely swap or be killed. "
        "Load anyway with --force / 'Load anyway'."
    )


def model_report(
    entry: ModelEntry,
    machine: MachineSource,
    *,
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
) -> dict[str, Any]:
    """Everything `webui models inspect` prints except the template: names, shape, estimates, machine."""
    facts = entry_facts(entry)
    name = decode_model_name(entry.path.name)
    loader = infer_loader(entry)
    machine_facts = machine.facts()
    ngl = n_gpu_layers if n_gpu_layers is not None else (-1 if machine_facts.gpus else 0)
    advice = fit_advice(facts, machine_facts, name=entry.name, n_ctx=n_ctx, n_gpu_layers=ngl)
    speed = estimate_speed(facts, machine_facts, n_ctx=n_ctx, n_gpu_layers=ngl)
    shape = asdict(facts)
    shape.pop("notes")
    shape["kv_cache_bytes_per_token"] = facts.kv_bytes_per_token
    return {
        "name": entry.name,
        "path": str(entry.path),
        "format": facts.format,
        "file_name": asdict(name),
        "architecture": facts.architecture,
        "parameters": format_count(facts.parameter_count) if facts.parameter_count else name.parameters,
        "quantization": facts.quantization or name.quantization,
        "context_length": facts.context_length,
        "loader": loader,
        "facts": shape,
        "name_disagreements": name_disagreements(name, facts),
        "notes": list(facts.notes),
        **advice_dict(advice, speed),
        "machine": machine_facts.to_dict(),
    }


def fit_line(
    entry: ModelEntry,
    loader: str | None,
    settings: Mapping[str, Any] | None,
    machine: MachineSource,
    registry: LoaderRegistry | None = None,
) -> str:
    """One markdown line for the page: the verdict and the numbers, or '' when there is nothing to say."""
    try:
        loader_name = loader or infer_loader(entry, registry)
    except ModelFileError:
        return ""
    advice = check_before_load(entry, loader_name, settings, machine, registry)
    if advice is None:
        return ""
    icon = {"fits": "✅", "tight": "⚠️", "does not fit": "⛔"}[advice.verdict]
    return f"{icon} {advice.message}"
