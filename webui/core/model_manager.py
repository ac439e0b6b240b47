"""The one loaded model's life: the fit check before a load, template detection after it, resuming after an
idle unload, unloading, and the status line the page shows.

The Engine owns the model and runs the loads; this decides whether and what to load and remembers which
instruction template the model got.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webui.core.engine import Engine, EngineError, LoadedState
from webui.core.hardware.estimates import MachineSource
from webui.core.hardware.fit import check_before_load, refusal_message
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

    def __init__(self, engine: Engine, templates: TemplateStore, machine: MachineSource) -> None:
        self.engine = engine
        self.templates = templates
        self.machine = machine  # measured once, used by the fit checks
        self._detection: TemplateDetection | None = None
        self._tool_template: InstructionTemplate | None = None
        self._lock = threading.Lock()
        self._resume_lock = threading.Lock()  # one reload after an idle unload, however many ask at once

    def models(self) -> list[ModelEntry]:
        """The models folder's models, plus the loaded model when it was loaded by path from elsewhere
        (also while the idle watcher has it unloaded: the next message loads it again)."""
        entries = discover_models(self.engine.models_dir, self.engine.registry)
        state = self.engine.state
        unloaded = self.engine.status().idle_unload
        elsewhere = state.entry if state is not None else unloaded.entry if unloaded is not None else None
        if elsewhere is not None and all(entry.name != elsewhere.name for entry in entries):
            entries.append(elsewhere)
        return entries

    def load(
        self,
        name: str,
        loader: str | None = None,
        settings: Mapping[str, Any] | None = None,
        template: str | None = None,
        insist: bool = False,
    ) -> LoadReport:
        """Load ``name``; on failure EngineError and the previous model (if any) stays loaded.

        A model estimated not to fit in RAM (+VRAM) is refused unless ``insist``.
        """
        if not insist:
            self.check_fit(name, loader, settings)
        state = self.engine.load(name, loader, settings)
        detection = self._detect(state, template)
        tool_template = None if template else _tool_template(state)
        with self._lock:
            self._detection = detection
            self._tool_template = tool_template
        return LoadReport(state, detection)

    def check_fit(self, name: str, loader: str | None, settings: Mapping[str, Any] | None) -> None:
        """EngineError with the estimate and suggestions when the model would not fit."""
        if not self.engine.uses_files(name, loader):
            return  # a server's model uses the server's memory, not this machine's
        entry = self.engine.resolve(name)
        try:
            loader_name = loader or infer_loader(entry, self.engine.registry)
        except ModelFileError:
            return  # the load itself reports unreadable files
        advice = check_before_load(entry, loader_name, settings, self.machine, self.engine.registry)
        if advice is not None and advice.verdict == "does not fit":
            raise EngineError(refusal_message(advice))

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
        """Load the model the idle watcher unloaded again, with the loader and settings it had, when nothing
        else is loaded (and, given ``name``, when it is that model); None when there is nothing to resume."""
        with self._resume_lock:
            status = self.engine.status()
            unloaded = status.idle_unload
            if status.model is not None or unloaded is None or name not in (None, unloaded.model):
                return None
            # The fit check already passed for these settings; the user chose them.
            return self.load(unloaded.model, unloaded.loader or None, unloaded.settings, insist=True)

    def unload(self) -> None:
        self.engine.unload()
        with self._lock:
            self._detection = None

    @property
    def detection(self) -> TemplateDetection | None:
        """The template detected for the loaded model (None once it is unloaded, also by the idle watcher)."""
        return self._detection if self.engine.state is not None else None

    def tool_template(self) -> InstructionTemplate | None:
        """The model's own template for requests with tools, when it carries one apart (None otherwise, and
        when the user chose a template)."""
        return self._tool_template

    def detected_template(self) -> InstructionTemplate | None:
        """The template of the last load, kept through an idle unload (the prompt builder's default)."""
        detection = self._detection
        return detection.template if detection is not None else None

    def status_line(self) -> str:
        """One line for the page: what is loaded, the template found, and the last reply's speed."""
        state = self.engine.state
        if state is None:
            return "No model loaded."
        parts = [f"Loaded: {state.entry.name} ({state.loader})."]
        if self._detection is not None:
            parts.append(self._detection.message())
        stats = self.engine.last_stats
        if stats is not None and stats.new_tokens:
            parts.append(
                f"Last reply: {stats.new_tokens} tokens, {stats.tokens_per_second:.1f} tokens/s, "
                f"first token after {stats.time_to_first_token_s:.2f} s "
                f"({stats.prompt_tokens} prompt tokens, {stats.reused_prompt_tokens} reused)."
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
