"""Model tab: pick a model and a loader, edit that loader's settings (generated from its schema), load."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import BaseModel

from webui.core.hardware.estimates import gb
from webui.core.hardware.fit import fit_line
from webui.core.loader import LoaderError
from webui.core.models.capabilities import entry_capabilities
from webui.core.models.discovery import ModelFileError, infer_loader
from webui.core.service import EngineError, Service
from webui.core.settings import SessionSettings, SettingsFile
from webui.ui.catalog_panel import BADGES, CatalogPanel
from webui.ui.convert import loader_settings_from_values, setting_kind
from webui.ui.embedding_panel import EmbeddingPanel
from webui.ui.live_status import page_status

_PER_ROW = 4
# The widgets a loader setting is drawn as (a union, not Component: the events such as .input are theirs).
SettingWidget = gr.Checkbox | gr.Number | gr.Dropdown | gr.Textbox


@dataclass
class LoaderPanel:
    """One loader's settings widgets (shown only while that loader is selected)."""

    loader: str
    settings_model: type[BaseModel] | None
    names: list[str]
    widgets: list[SettingWidget]
    group: Any = None


def _elem_id(loader: str, name: str) -> str:
    return "setting-" + "".join(c if c.isalnum() or c == "_" else "-" for c in f"{loader}-{name}")


def setting_widget(loader: str, name: str, model: type[BaseModel]) -> SettingWidget:
    """A widget for one loader setting: numbers, checkboxes, text, or a dropdown for fixed choices."""
    info = model.model_fields[name]
    kind, _optional, choices = setting_kind(info)
    default = info.get_default(call_default_factory=True)
    common: dict[str, Any] = {
        "label": name,
        "info": info.description or None,
        "elem_id": _elem_id(loader, name),
    }
    if kind == "bool":
        return gr.Checkbox(value=bool(default), **common)
    if kind in ("int", "float"):
        return gr.Number(value=default, precision=0 if kind == "int" else None, **common)
    if kind == "choice":
        return gr.Dropdown(choices=list(choices), value=default, **common)
    return gr.Textbox(value="" if default is None else str(default), **common)


class ModelTab:
    """Draws the Model tab and holds its handlers."""

    def __init__(
        self, service: Service, models_dir: str = "the models folder", settings: SettingsFile | None = None
    ) -> None:
        self.service = service
        self.models_dir = models_dir
        self.settings = settings  # where a successful load is remembered (model, loader, its settings)
        self.panels: list[LoaderPanel] = []

    # -- pure handlers ---------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return [entry.name for entry in self.service.models()]

    def loader_for(self, name: str | None) -> str | None:
        """The loader the model's files call for (None if unknown or unreadable)."""
        for entry in self.service.models():
            if entry.name == name:
                try:
                    return infer_loader(entry, self.service.loaders)
                except ModelFileError:
                    return None
        return None

    def _visibility(self, loader: str | None) -> list[Any]:
        return [gr.update(visible=panel.loader == loader) for panel in self.panels]

    def pick_model(self, name: str | None) -> list[Any]:
        """A model was chosen: select its loader and show that loader's settings."""
        loader = self.loader_for(name)
        if loader is None or loader not in self.service.loaders.names():
            return [gr.skip()] + [gr.skip() for _ in self.panels]
        return [gr.update(value=loader), *self._visibility(loader)]

    def pick_loader(self, loader: str | None) -> list[Any]:
        return self._visibility(loader)

    def refresh_models(self) -> Any:
        names = self.model_names()
        state = self.service.loaded
        current = state.entry.name if state else None
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def status(self) -> str:
        return page_status(self.service)  # also says why nothing is loaded after an idle unload

    def fit_text(self, name: str | None, loader: str | None, *values: Any) -> str:
        """The will-it-fit line for the selected model and settings ('' when it cannot be judged)."""
        entry = next((e for e in self.service.models() if e.name == name), None)
        if entry is None:
            return ""
        try:
            settings = self.service.with_slots(entry.name, loader or None, self.settings_for(loader, values))
        except EngineError:
            settings = None
        return fit_line(entry, loader or None, settings, self.service.machine, self.service.loaders)

    def capabilities_text(self, name: str | None) -> str:
        """What the selected model can do, from its own files (template, projector), before loading it."""
        entry = next((e for e in self.service.models() if e.name == name), None)
        if entry is None or entry.kind not in ("gguf", "folder"):
            return ""
        caps = entry_capabilities(entry)
        if not caps.template_found and not caps.vision:
            return "Can: unknown (no chat template in its files)."
        shown = (
            " · ".join(BADGES[label] for label in caps.labels) or "plain chat (no thinking, tools or vision)"
        )
        projector = f" (projector {caps.projector})" if caps.projector else ""
        return f"Can: {shown}{projector}"

    def initial_fit_text(self, name: str | None, loader: str | None) -> str:
        """The fit line when the page is drawn (the loader's default settings)."""
        entry = next((e for e in self.service.models() if e.name == name), None)
        if entry is None:
            return ""
        try:
            settings = self.service.with_slots(entry.name, loader, None)
        except EngineError:
            settings = None
        return fit_line(entry, loader, settings, self.service.machine, self.service.loaders)

    def load(self, name: str | None, loader: str | None, *values: Any, insist: bool = False) -> Iterator[str]:
        """Load the chosen model with the chosen loader and settings; errors leave the previous model loaded.

        A model estimated not to fit is refused unless ``insist`` ("Load anyway").
        """
        try:
            settings = self.settings_for(loader, values)
        except EngineError as exc:
            yield f"⚠️ {exc}\n\n{self.status()}"
            return
        if loader and not self.service.uses_files(name or "", loader):
            # A server's model is named in the loader settings (empty: the first model it serves).
            name = str((settings or {}).get("model") or "") or "remote"
        if not name:
            yield f"⚠️ Choose a model first (put .gguf files or model folders in {self.models_dir}, then Refresh)."
            return
        yield f"Loading {name} with {loader or 'the inferred loader'}…"
        try:
            report = self.service.load_model(name, loader or None, settings, insist=insist)
        except (EngineError, OSError) as exc:
            gr.Warning(f"Loading {name} failed: {exc}")
            yield f"⚠️ Loading {name} failed: {exc}\n\n{self.status()}"
            return
        yield report.message + self.remember_loaded()

    def remember_loaded(self) -> str:
        """Save the loaded model, its loader and settings to the settings file ('' or a warning to show)."""
        state = self.service.loaded
        if self.settings is None or state is None:
            return ""
        try:
            self.settings.update(
                model=state.entry.name,
                loader=state.loader,
                loader_settings=state.settings.model_dump(mode="json", exclude_unset=True),
            )
        except (OSError, ValueError) as exc:
            return f"\n\n⚠️ The settings could not be saved: {exc}"
        return ""

    def settings_for(self, loader: str | None, values: Sequence[Any]) -> dict[str, Any] | None:
        """The chosen loader's widget values as a settings mapping (``values`` holds every panel's widgets)."""
        offset = 0
        for panel in self.panels:
            count = len(panel.widgets)
            if panel.loader == loader and panel.settings_model is not None:
                return loader_settings_from_values(
                    panel.settings_model, panel.names, values[offset : offset + count]
                )
            offset += count
        if loader and loader not in self.service.loaders.names():
            raise EngineError(f"Unknown loader {loader!r}.")
        return None

    def unload(self, name: str | None = None) -> str:
        """Unload ``name`` (default: the page's model); the other loaded models stay."""
        try:
            self.service.unload_model(name)
        except EngineError as exc:
            return f"⚠️ {exc}"
        return f"{name or 'Model'} unloaded. " + self.status()

    def loaded_lines(self) -> list[tuple[str, str]]:
        """(name, one markdown line) per loaded model, the page's first: loader, memory, what it does."""
        models = sorted(self.service.engine_status().models, key=lambda model: not model.page)
        lines = []
        for model in models:
            memory = gb(model.memory_bytes) if model.memory_bytes else "memory unknown"
            if model.gpu_bytes:
                memory += f", {gb(model.gpu_bytes)} on the GPU"
            page = " · **this page's model**" if model.page else ""
            lines.append(
                (model.name, f"**{model.name}** ({model.loader}) · {memory} · {model.activity}{page}")
            )
        if lines:
            used, budget = sum(model.memory_bytes for model in models), self.service.memory_budget()
            lines.append(("", f"Memory budget: {gb(used)} of {gb(budget)} used by the loaded models."))
        return lines

    def refresh(self, saved: SessionSettings | None = None) -> list[Any]:
        """Page load: the models list, the loaded model and loader with its settings, and the status.

        With no model loaded, the ``saved`` settings' model, loader and loader settings are shown instead.
        """
        state = self.service.loaded
        models = self.refresh_models()
        restore = state is None and saved is not None and saved.model in (models.get("choices") or [])
        if state is not None:
            loader: str | None = state.loader
        elif restore and saved is not None:
            models["value"] = saved.model
            known = saved.loader in self.service.loaders.names()
            loader = saved.loader if known else self.loader_for(saved.model)
        else:
            loader = self.loader_for(models.get("value"))
        values: list[Any] = []
        shown: dict[str, Any] | None = None  # the settings the widgets show, for the will-it-fit line
        for panel in self.panels:
            loaded = state is not None and panel.loader == state.loader
            restored = restore and saved is not None and panel.loader == loader
            for name in panel.names:
                if loaded and state is not None:
                    values.append(getattr(state.settings, name))
                elif restored and saved is not None and name in saved.loader_settings:
                    values.append(saved.loader_settings[name])
                else:
                    values.append(gr.skip())
            if loaded and state is not None:
                shown = state.settings.model_dump()
            elif restored and saved is not None:
                shown = dict(saved.loader_settings)
        name = models.get("value")
        entry = next((e for e in self.service.models() if e.name == name), None)
        fit = (
            fit_line(entry, loader, shown, self.service.machine, self.service.loaders)
            if entry is not None
            else ""
        )
        return [models, gr.update(value=loader), *self._visibility(loader), *values, fit, self.status()]

    # -- layout ----------------------------------------------------------------------------------------

    def _build_panels(self, selected: str | None) -> None:
        registry = self.service.loaders
        for loader in registry.names():
            try:
                model: type[BaseModel] | None = registry.get(loader).settings_model
            except LoaderError as exc:
                model = None
                error = str(exc)
            with gr.Group(visible=loader == selected) as group:
                if model is None:
                    gr.Markdown(f"⚠️ {error}")
                    names: list[str] = []
                    widgets: list[SettingWidget] = []
                else:
                    names, widgets = self._draw_settings(loader, model)
            self.panels.append(LoaderPanel(loader, model, names, widgets, group))

    @staticmethod
    def _draw_settings(loader: str, model: type[BaseModel]) -> tuple[list[str], list[SettingWidget]]:
        """Value settings in rows of four, then the on/off settings in one row."""
        fields = list(model.model_fields)
        switches = [n for n in fields if setting_kind(model.model_fields[n])[0] == "bool"]
        values = [n for n in fields if n not in switches]
        drawn: dict[str, SettingWidget] = {}
        for start in range(0, len(values), _PER_ROW):
            with gr.Row(equal_height=True):
                for name in values[start : start + _PER_ROW]:
                    drawn[name] = setting_widget(loader, name, model)
        with gr.Row():
            for name in switches:
                drawn[name] = setting_widget(loader, name, model)
        return fields, [drawn[name] for name in fields]

    def build(
        self, mirrors: Sequence[gr.components.Component] = (), news: gr.components.Component | None = None
    ) -> Any:
        """Draw the tab; ``mirrors`` (other tabs' status lines) get the status after a load or unload; a change
        of ``news`` (the live status's, when the engine changed) redraws the loaded models.

        Returns the load and unload events so the page can refresh other tabs after them.
        """
        names = self.model_names()
        state = self.service.loaded
        current = state.entry.name if state else (names[0] if names else None)
        selected = state.loader if state else self.loader_for(current)
        with gr.Row():
            self.model = gr.Dropdown(
                choices=names,
                value=current,
                label="Model",
                info=f"GGUF files and model folders in {self.models_dir}.",
                elem_id="model-dropdown",
                scale=4,
                allow_custom_value=False,
            )
            refresh = gr.Button("Refresh", size="sm", elem_id="model-refresh", scale=1)
        self.loader = gr.Dropdown(
            choices=self.service.loaders.names(),
            value=selected,
            label="Loader",
            info="Chosen from the model's files; change it to load with another backend.",
            elem_id="loader-dropdown",
        )
        self.capabilities_md = gr.Markdown(self.capabilities_text(current), elem_id="model-capabilities")
        self.fit_md = gr.Markdown(self.initial_fit_text(current, selected), elem_id="model-fit")
        self._build_panels(selected)
        with gr.Row():
            load = gr.Button("Load", variant="primary", elem_id="model-load")
            unload = gr.Button("Unload", elem_id="model-unload")
            self.force = gr.Checkbox(
                value=False,
                label="Load anyway",
                info="Load even if the model is estimated not to fit in memory.",
                elem_id="model-force",
            )
        self.status_md = gr.Markdown(self.status(), elem_id="model-status")
        self._build_loaded_list(mirrors, news)
        EmbeddingPanel(self.service).build()
        if Path(self.models_dir).is_absolute():  # a real folder to download into (not the placeholder)
            catalog_event = CatalogPanel(Path(self.models_dir), self.service.machine).build()
            catalog_event.then(self.refresh_models, outputs=[self.model], show_progress="hidden")

        groups = [panel.group for panel in self.panels]
        self.setting_widgets = [w for panel in self.panels for w in panel.widgets]
        self.model.input(
            self.pick_model, inputs=[self.model], outputs=[self.loader, *groups], show_progress="hidden"
        )
        self.loader.input(self.pick_loader, inputs=[self.loader], outputs=groups, show_progress="hidden")
        refresh.click(self.refresh_models, outputs=[self.model], show_progress="hidden")

        def with_mirrors(message: str) -> Any:
            return (message, *(self.status() for _ in mirrors)) if mirrors else message

        def load_model(name: str | None, loader: str | None, force: bool, *values: Any) -> Iterator[Any]:
            for message in self.load(name, loader, *values, insist=bool(force)):
                yield with_mirrors(message)

        fit_inputs = [self.model, self.loader, *self.setting_widgets]
        fit_triggers = [self.model.change, self.loader.change]
        for panel in self.panels:
            fit_triggers += [
                w.input
                for n, w in zip(panel.names, panel.widgets, strict=True)
                if n in ("n_ctx", "n_gpu_layers", "cache_type_k", "cache_type_v", "parallel")
            ]
        gr.on(fit_triggers, self.fit_text, inputs=fit_inputs, outputs=[self.fit_md], show_progress="hidden")
        self.model.change(
            self.capabilities_text,
            inputs=[self.model],
            outputs=[self.capabilities_md],
            show_progress="hidden",
        )

        def unload_model() -> Any:
            return with_mirrors(self.unload())

        status_outputs = [self.status_md, *mirrors]
        unload_event = unload.click(unload_model, outputs=status_outputs)
        load_event = load.click(
            load_model,
            inputs=[self.model, self.loader, self.force, *self.setting_widgets],
            outputs=status_outputs,
        )
        return load_event, unload_event

    def _build_loaded_list(
        self, mirrors: Sequence[gr.components.Component], news: gr.components.Component | None
    ) -> None:
        """Every loaded model with its memory, what it does and its own Unload button, redrawn whenever the
        status changes (a load or unload here) or the live status has news (a load, an unload, a reply starting
        or ending elsewhere: the status line's text alone stays the same when an API client's reply ends)."""
        gr.Markdown("#### Loaded models", elem_id="loaded-models-title")
        news = news if news is not None else gr.Textbox(visible="hidden", container=False)

        @gr.render(inputs=[self.status_md, news])
        def draw(_status: str, _news: str) -> None:
            lines = self.loaded_lines()
            if not lines:
                gr.Markdown("None.", elem_id="loaded-models-none")
                return
            for name, line in lines:
                if not name:
                    gr.Markdown(line, elem_id="loaded-models-budget")
                    continue
                slug = "".join(c if c.isalnum() else "-" for c in name)
                with gr.Row(equal_height=True, elem_classes=["loaded-model"]):
                    gr.Markdown(line, elem_id=f"loaded-{slug}")
                    button = gr.Button("Unload", size="sm", scale=0, elem_id=f"unload-{slug}")

                def unload_one(model: str = name) -> Any:
                    message = self.unload(model)
                    return (message, *(self.status() for _ in mirrors)) if mirrors else message

                button.click(unload_one, outputs=[self.status_md, *mirrors])

    @property
    def refresh_outputs(self) -> list[gr.components.Component]:
        return [
            self.model,
            self.loader,
            *(p.group for p in self.panels),
            *self.setting_widgets,
            self.fit_md,  # drawn for the loader's defaults: it follows the settings shown (e.g. n_ctx)
            self.status_md,
        ]
