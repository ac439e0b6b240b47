"""The loaded models' lives: the fit check and the memory estimate before a load, template detection after it
(per model), resuming after an idle unload, unloading, and the status line the page shows.

The Engine owns the models, runs the loads and keeps them within the memory budget; this decides whether and
what to load, what each load holds of the budget, and remembers which instruction template each model got.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webui.core.engine import Engine, EngineError, LoadedState
from webui.core.hardware.estimates import AUTO_PARALLEL, MachineSource, MemoryEstimate, gb
from webui.core.hardware.fit import AUTOMATIC, check_before_load, has_slots, kv_cache_layout, refusal_message
from webui.core.model_lane import slots_of
from webui.core.models.discovery import ModelEntry, ModelFileError, discover_models, infer_loader
from webui.core.templates.store import (
    InstructionTemplate,
    TemplateDetection,
    TemplateError,
    TemplateStore,
    detect_template,
)

__all__ = ["LoadReport", "ModelManager"]


@dataclass(frozen=True)
class _Detected:
    """What a load of one model found: its instruction template and its separate tool-use template."""

    detection: TemplateDetection
    tool_template: InstructionTemplate | None = field(default=None)


@dataclass(frozen=True)
class LoadReport:
    state: LoadedState
    detection: TemplateDetection

    @property
    def message(self) -> str:
        return (
            f"Loaded {self.state.entry.name} with {self.state.loader} in {self.state.load_seconds:.1f} s. "
            f"{self.detection.message()}"
        )


class ModelManager:
    """Loads, checks and unloads models on the engine, and keeps the detected template (one per Service)."""

    def __init__(
        self,
        engine: Engine,
        templates: TemplateStore,
        machine: MachineSource,
        memory_budget: int | None = None,
    ) -> None:
        self.engine = engine
        self.templates = templates
        self._machine = machine  # measured once, used by the fit checks
        self._budget = memory_budget  # --model-memory-budget; None: what the machine can hold
        self._measured: int | None = None  # that, measured while nothing was loaded
        self._detected: dict[str, _Detected] = {}  # per model name, kept through an idle unload
        self._lock = threading.Lock()
        self._resume_lock = threading.Lock()  # one reload after an idle unload, however many ask at once

    @property
    def machine(self) -> MachineSource:
        return self._machine

    @machine.setter
    def machine(self, machine: MachineSource) -> None:
        self._machine = machine
        self._measured = None  # measured again on the next load

    def memory_budget(self) -> int:
        """Bytes the loaded models may hold together: --model-memory-budget, else what the fit check says this
        machine can hold (available RAM + free VRAM), measured while no model is loaded: a loaded model's
        memory-mapped weights still count as available, so a measure beside it would count them twice."""
        if self._budget is not None:
            return self._budget
        loaded = self.engine.loaded()
        if self._measured is None or not loaded:
            facts = self._machine.facts(measure_speed=False)
            held = sum(state.memory_bytes for state in loaded)  # 0, unless the machine was swapped meanwhile
            self._measured = facts.available_ram_bytes + facts.free_vram_bytes + held
        return self._measured

    def models(self) -> list[ModelEntry]:
        """The models folder's models, plus the loaded models loaded by path from elsewhere (also while the
        idle watcher has one unloaded: the next request naming it loads it again)."""
        entries = discover_models(self.engine.models_dir, self.engine.registry)
        elsewhere = [state.entry for state in self.engine.loaded()]
        elsewhere += [record.entry for record in self.engine.idle_unloads() if record.entry is not None]
        for entry in elsewhere:
            if all(known.name != entry.name for known in entries):
                entries.append(entry)
        return entries

    def load(
        self,
        name: str,
        loader: str | None = None,
        settings: Mapping[str, Any] | None = None,
        template: str | None = None,
        insist: bool = False,
        *,
        page: bool = True,
    ) -> LoadReport:
        """Load ``name`` beside the models loaded already when the memory budget holds them all (else the
        least recently used go first); on failure EngineError and the models loaded before stay loaded.

        A model estimated not to fit in RAM (+VRAM) even alone is refused unless ``insist``. ``page``: it
        becomes the page's model (an API request's load does not take the page's model away).
        """
        resolved = self.with_slots(name, loader, settings)
        memory, gpu = self._estimate(name, loader, resolved, refuse=not insist)
        if not insist and self._budget is not None and memory > self._budget:
            raise EngineError(
                f"{name} needs about {gb(memory)}, more than the memory budget for loaded models "
                f"({gb(self._budget)}, --model-memory-budget). Load it anyway with --force / 'Load anyway'."
            )
        self.engine.memory_budget = self.memory_budget()  # measured now when it is the machine's
        # The loader gets the slots that were estimated; the state keeps "automatic", so a reload asks again.
        chosen = (
            {"parallel": resolved["parallel"]} if resolved is not settings and resolved is not None else None
        )
        state = self.engine.load(
            name, loader, settings, memory_bytes=memory, gpu_bytes=gpu, page=page, load_with=chosen
        )
        detection = self._detect(state, template)
        tool_template = None if template else _tool_template(state)
        with self._lock:
            self._detected[state.entry.name] = _Detected(detection, tool_template)
        return LoadReport(state, detection)

    def check_fit(self, name: str, loader: str | None, settings: Mapping[str, Any] | None) -> None:
        """EngineError with the estimate and suggestions when the model would not fit."""
        self._estimate(name, loader, self.with_slots(name, loader, settings), refuse=True)

    def with_slots(
        self, name: str, loader: str | None, settings: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        """``settings`` with an automatic ``parallel`` made a number: AUTO_PARALLEL slots when their caches fit
        this machine (the fit check) and, beside the models loaded already, the memory budget; else 1. The
        loader gets the number, so what is loaded is what was estimated. Other settings come back as they are."""
        if kv_cache_layout(settings).parallel != AUTOMATIC or not self.engine.uses_files(name, loader):
            return settings
        entry = self.engine.resolve(name)
        try:
            loader_name = loader or infer_loader(entry, self.engine.registry)
        except ModelFileError:
            return settings  # the load itself reports unreadable files
        if not has_slots(loader_name, self.engine.registry):
            return settings
        slots = {**(settings or {}), "parallel": AUTO_PARALLEL}
        advice = check_before_load(entry, loader_name, slots, self._machine, self.engine.registry)
        if advice is None:
            return settings
        held = sum(state.memory_bytes for state in self.engine.loaded() if state.entry.name != entry.name)
        fits = advice.verdict == "fits" and advice.memory.total_bytes + held <= self.memory_budget()
        return {**(settings or {}), "parallel": AUTO_PARALLEL if fits else 1}

    def _estimate(
        self, name: str, loader: str | None, settings: Mapping[str, Any] | None, *, refuse: bool
    ) -> tuple[int, int]:
        """(bytes, of them on a GPU) the load will hold by the fit estimate ((0, 0) when it cannot be judged);
        with ``refuse`` EngineError when it would not fit even alone."""
        if not self.engine.uses_files(name, loader):
            return 0, 0  # a server's model uses the server's memory, not this machine's
        entry = self.engine.resolve(name)
        try:
            loader_name = loader or infer_loader(entry, self.engine.registry)
        except ModelFileError:
            return 0, 0  # the load itself reports unreadable files
        advice = check_before_load(entry, loader_name, settings, self._machine, self.engine.registry)
        if advice is None:
            return 0, 0
        if refuse and advice.verdict == "does not fit" and not self._fits_once_others_go(advice.memory):
            raise EngineError(refusal_message(advice))
        return advice.memory.total_bytes, advice.memory.gpu_bytes

    def _fits_once_others_go(self, memory: MemoryEstimate) -> bool:
        """Whether the memory the loaded models hold (their estimates) would make room for this one."""
        held = sum(state.memory_bytes for state in self.engine.loaded())
        if not held:
            return False
        facts = self._machine.facts(measure_speed=False)
        return memory.total_bytes <= facts.available_ram_bytes + facts.free_vram_bytes + held

    def _detect(self, state: LoadedState, explicit: str | None) -> TemplateDetection:
        try:
            return detect_template(
                self.templates,
                model_name=state.entry.name,
                explicit=explicit,
                metadata_template=state.model.facts.chat_template,
            )
        except TemplateError as exc:
            raise EngineError(str(exc)) from exc

    def resume_idle(self, name: str | None = None) -> LoadReport | None:
        """Load the model the idle watcher unloaded again, with the loader and settings it had: ``name``, or
        without one the model this thread targets (else the page's); None when there is nothing to resume."""
        with self._resume_lock:
            target = name or self.engine.target_name()
            unloaded = self.engine.idle_unloaded(target) if target is not None else None
            if unloaded is None:
                return None
            page = self.engine.status().idle_unload == unloaded  # the page's own model comes back to it
            # The fit check already passed for these settings; the user chose them.
            return self.load(
                unloaded.model, unloaded.loader or None, unloaded.settings, insist=True, page=page
            )

    def unload(self, name: str | None = None) -> None:
        """Unload ``name`` (default: the page's model)."""
        target = name or self.engine.status().model
        self.engine.unload(name)
        with self._lock:
            self._detected.pop(target or "", None)

    def _current(self) -> _Detected | None:
        """What the load of the model this thread targets (else the page's) found."""
        name = self.engine.target_name()
        with self._lock:
            return self._detected.get(name) if name is not None else None

    @property
    def detection(self) -> TemplateDetection | None:
        """The template detected for the targeted (else the page's) model; None when it is not loaded (also
        after the idle watcher unloaded it)."""
        found = self._current()
        return found.detection if found is not None and self.engine.state is not None else None

    def detection_of(self, name: str) -> TemplateDetection | None:
        """The template detected for the loaded model ``name``."""
        with self._lock:
            found = self._detected.get(name)
        return found.detection if found is not None and self.engine.state_of(name) is not None else None

    def tool_template(self) -> InstructionTemplate | None:
        """The targeted model's own template for requests with tools, when it carries one apart (None
        otherwise, and when the user chose a template)."""
        found = self._current()
        return found.tool_template if found is not None else None

    def detected_template(self) -> InstructionTemplate | None:
        """The targeted model's template of its last load, kept through an idle unload (the prompt builder's
        default)."""
        found = self._current()
        return found.detection.template if found is not None else None

    def status_line(self) -> str:
        """One line for the page: what is loaded, the template found, and the last reply's speed."""
        state = self.engine.state
        if state is None:
            return "No model loaded."
        parts = [f"Loaded: {state.entry.name} ({state.loader})."]
        slots = slots_of(state)
        if slots > 1:
            parts.append(f"{slots} slots: up to {slots} replies generate together.")
        others = [other.entry.name for other in self.engine.loaded() if other.entry != state.entry]
        if others:
            parts.append(f"Also loaded: {', '.join(others)}.")
        detection = self.detection
        if detection is not None:
            parts.append(detection.message())
        stats = self.engine.stats_of(state.entry.name)  # this model's last reply, not another model's
        if stats is not None and stats.new_tokens:
            parts.append(
                f"Last reply: {stats.new_tokens} tokens, {stats.tokens_per_second:.1f} tokens/s, "
                f"first token after {stats.time_to_first_token_s:.2f} s "
                f"({stats.prompt_tokens} prompt tokens, {stats.reused_prompt_tokens} reused)."
            )
            if stats.drafted_tokens:
                parts.append(
                    f"Drafting: {stats.accepted_tokens} of {stats.drafted_tokens} drafted tokens kept "
                    f"({stats.acceptance_rate:.0%}), {stats.tokens_per_decode:.2f} tokens per decoding step."
                )
        return " ".join(parts)


def _tool_template(state: LoadedState) -> InstructionTemplate | None:
    """The loaded model's tool-use template, parsed; None when it has none or it does not parse."""
    source = state.model.facts.tool_chat_template
    if not source:
        return None
    try:
        return InstructionTemplate("tool_use (model metadata)", source, "model metadata")
    except TemplateError:
        return None  # the default template still serves; tools then go through it
