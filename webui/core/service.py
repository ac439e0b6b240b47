"""The core facade the front ends call: load models, detect templates, build prompts, stream replies.

The page, the API and the CLI all go through one Service, so none of them computes a prompt, a sampler value
or a file path itself. The work is done by one object per job: the ModelManager (webui.core.model_manager:
load, fit check, idle resume, template detection, status), the PromptBuilder (webui.core.prompt_builder: chat
and completion prompts with the extension pipeline) and the reply streams (webui.core.reply_streams).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from webui.core.abilities import TemplateAbilities
from webui.core.characters.store import CharacterStore
from webui.core.chats.store import ChatStore
from webui.core.embeddings import (
    EmbeddingInput,
    EmbeddingModels,
    EmbeddingResult,
    is_embedding_entry,
    match_entry,
)
from webui.core.engine import (
    Engine,
    EngineError,
    EngineStatus,
    GenerationJob,
    IdleUnload,
    JobSource,
    LoadedModelStatus,
    LoadedState,
    QueuedJob,
    QueueFull,
    QueueSnapshot,
)
from webui.core.extensions.manager import ExtensionManager
from webui.core.hardware.estimates import MachineSource
from webui.core.hardware.machine import MachineProbe
from webui.core.knowledge import KnowledgeBase, KnowledgeStore, ModelEmbedder
from webui.core.model_manager import LoadReport, ModelManager
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.prompt_builder import (
    ChatPrompt,
    ChatSettings,
    PromptBudget,
    PromptBuilder,
    thinking_variables,
)
from webui.core.prompts import ChatMessage, ToolCall
from webui.core.registry import LoaderRegistry
from webui.core.reply_streams import CompletionStream, ReplyStream, tidy_reply
from webui.core.templates.store import InstructionTemplate, TemplateDetection, TemplateStore
from webui.core.tools.request import ToolRequest, ToolRequestError

# What the page and the API use: the Service and the engine's types they see (never the engine itself).
__all__ = [
    "ChatMessage",
    "ChatPrompt",
    "ChatSettings",
    "CompletionStream",
    "EmbeddingResult",
    "EngineError",
    "EngineStatus",
    "GenerationJob",
    "IdleUnload",
    "LoadReport",
    "LoadedModelStatus",
    "LoadedState",
    "PromptBudget",
    "QueueFull",
    "QueueSnapshot",
    "QueuedJob",
    "ReplyStream",
    "Service",
    "TemplateAbilities",
    "ToolCall",
    "ToolRequest",
    "ToolRequestError",
]


class Service:
    """One per process: the engine, the stores, and the objects doing each job (models, prompts, replies)."""

    def __init__(
        self,
        registry: LoaderRegistry,
        *,
        models_dir: Path,
        presets: PresetStore,
        templates: TemplateStore,
        chats: ChatStore | None = None,
        characters: CharacterStore | None = None,
        machine: MachineSource | None = None,
        max_queue: int | None = None,
        extensions: ExtensionManager | None = None,
        embedding_model: str | None = None,
        knowledge_path: Path | None = None,
        memory_budget: int | None = None,
        max_loaded_models: int | None = 3,
    ):
        # Several models stay loaded within the memory budget (default: what the fit check says the machine
        # holds) and the count limit (None: only memory decides), as Ollama's OLLAMA_MAX_LOADED_MODELS.
        self.engine = Engine(registry, models_dir, max_waiting=max_queue, max_loaded=max_loaded_models)
        self.extensions = extensions or ExtensionManager(found=())
        self.presets = presets
        self.templates = templates
        self.chats = chats
        self.characters = characters
        self.model_manager = ModelManager(self.engine, templates, machine or MachineProbe(), memory_budget)
        # The embedding model, apart from the chat model (loaded on first use, or by name).
        self.embeddings = EmbeddingModels(lambda name: match_entry(self.models(), name), embedding_model)
        # Document collections (user_data/knowledge.sqlite3), embedded by that model; None without a user_data.
        self.knowledge = (
            KnowledgeBase(KnowledgeStore(knowledge_path), ModelEmbedder(self.embeddings))
            if knowledge_path is not None
            else None
        )
        self.prompts = PromptBuilder(
            self.engine,
            templates,
            self.extensions,
            detected_template=self.model_manager.detected_template,
            tool_template=self.model_manager.tool_template,
            quick_reply=self.quick_reply,
        )

    @property
    def machine(self) -> MachineSource:
        """What the fit checks measure (probed once; a test may set a fake one)."""
        return self.model_manager.machine

    @machine.setter
    def machine(self, machine: MachineSource) -> None:
        self.model_manager.machine = machine

    # -- what the engine is doing (the page and the API ask here, never the engine itself) ----------------

    @property
    def loaded(self) -> LoadedState | None:
        """The loaded model this thread targets (see ``target_model``), else the page's model, with its loader
        and settings; None when it is not loaded."""
        return self.engine.state

    def loaded_models(self) -> list[LoadedState]:
        """Every loaded model: the page's first, then the most recently used first."""
        return self.engine.loaded()

    def loaded_model(self, name: str) -> LoadedState | None:
        """The loaded model called ``name`` (None when it is not loaded)."""
        return self.engine.state_of(name)

    def memory_budget(self) -> int:
        """Bytes the loaded models may hold together (--model-memory-budget, else what the machine holds)."""
        return self.model_manager.memory_budget()

    def engine_status(self) -> EngineStatus:
        """What is loaded and what runs now (cheap enough to poll)."""
        return self.engine.status()

    def queue_snapshot(self) -> QueueSnapshot:
        """The running generations and the waiting ones, in the order they will run."""
        return self.engine.queue_snapshot()

    def idle_seconds(self, model: str | None = None) -> float | None:
        """How long the model ``model`` (default: the page's) has had nothing to do; None while busy or when
        it is not loaded."""
        return self.engine.idle_seconds(model)

    def unload_if_idle(self, idle_s: float, model: str | None = None) -> bool:
        """Unload ``model`` (default: the page's) if it has been idle ``idle_s`` seconds (decided on its
        worker)."""
        return self.engine.unload_if_idle(idle_s, model)

    def job_origin(
        self, source: JobSource, request_id: str | None = None, model: str | None = None
    ) -> AbstractContextManager[None]:
        """Label the generations this thread submits inside the block (the API marks its requests' jobs);
        with ``model`` they, the prompts built for them and ``loaded`` use that model, not the page's."""
        return self.engine.origin(source, request_id, model)

    def target_model(self) -> str | None:
        """The model this thread's generations go to (see ``job_origin``), else the page's model."""
        return self.engine.target_name()

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes with the loaded model's tokenizer (EngineError with nothing loaded)."""
        return self.engine.count_tokens(text)

    @property
    def loaders(self) -> LoaderRegistry:
        """The loaders that can be chosen (built-in and installed through the entry point)."""
        return self.engine.registry

    def uses_files(self, name: str, loader: str | None) -> bool:
        """False when ``name`` would load through a loader whose models are not files (a remote server)."""
        return self.engine.uses_files(name, loader)

    # -- models (the ModelManager) --------------------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        """The models folder's models, plus the loaded model when it was loaded by path from elsewhere
        (also while the idle watcher has it unloaded: the next message loads it again)."""
        return self.model_manager.models()

    def load_model(
        self,
        name: str,
        loader: str | None = None,
        settings: Mapping[str, Any] | None = None,
        template: str | None = None,
        insist: bool = False,
        *,
        page: bool = True,
    ) -> LoadReport:
        """Load ``name`` (beside the loaded models when the memory budget holds them all); on failure
        EngineError and the models loaded before stay loaded.

        A model estimated not to fit in RAM (+VRAM) is refused unless ``insist``; so is an embedding-only model
        (a sentence-transformers folder), which generates no text. ``page``: it becomes the page's model.
        """
        entry = match_entry(self.models(), name)
        if entry is not None and is_embedding_entry(entry):
            raise EngineError(
                f"{entry.name} is an embedding model, not a text generator: use it through /v1/embeddings or "
                "/api/embed (or `webui serve --embedding-model`)."
            )
        return self.model_manager.load(name, loader, settings, template, insist, page=page)

    def check_fit(self, name: str, loader: str | None, settings: Mapping[str, Any] | None) -> None:
        """EngineError with the estimate and suggestions when the model would not fit."""
        self.model_manager.check_fit(name, loader, settings)

    def with_slots(
        self, name: str, loader: str | None, settings: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        """``settings`` with an automatic ``parallel`` made the number a load would get now (see ModelManager)."""
        return self.model_manager.with_slots(name, loader, settings)

    def resume_idle_model(self, name: str | None = None) -> LoadReport | None:
        """Load the model the idle watcher unloaded again, with the loader and settings it had: ``name``, or
        without one the page's model (when it is not loaded); None when there is nothing to resume.

        As with Ollama and LM Studio, an idle unload only frees memory: the next message brings the model back.
        """
        return self.model_manager.resume_idle(name)

    def unload_model(self, name: str | None = None) -> None:
        """Unload ``name`` (default: the page's model); the others stay loaded."""
        self.model_manager.unload(name)

    @property
    def detection(self) -> TemplateDetection | None:
        """The template detected for the loaded model (None once it is unloaded, also by the idle watcher)."""
        return self.model_manager.detection

    def detection_of(self, name: str) -> TemplateDetection | None:
        """The template detected for the loaded model ``name``."""
        return self.model_manager.detection_of(name)

    def status_line(self) -> str:
        """One line for the page: what is loaded, the template found, and the last reply's speed."""
        return self.model_manager.status_line()

    # -- prompts (the PromptBuilder) ------------------------------------------------------------------------

    def template_for(self, settings: ChatSettings) -> InstructionTemplate | None:
        """The template ``settings`` asks for, else the one detected for the loaded model (TemplateError)."""
        return self.prompts.template_for(settings)

    def abilities(self, settings: ChatSettings | None = None) -> TemplateAbilities:
        """What the template ``settings`` pick (default: the loaded model's) lets the model do: its thinking
        format and controls (the page's Think switch), its tool-call family (TemplateError for a bad name)."""
        return self.prompts.abilities(self.prompts.template_for(settings or ChatSettings()))

    def prompt_budget(self, params: GenerationParams) -> PromptBudget:
        """The loaded model's context shared between prompt and reply for ``params`` (EngineError with
        nothing loaded)."""
        return self.prompts.budget(params)

    def build_chat_prompt(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
        preview: bool = False,
    ) -> ChatPrompt:
        """The exact prompt text for ``history`` in ``settings.mode``, truncated to fit the context, with the
        enabled extensions applied, and the budget it was built within. ``preview``: only to be looked at
        (the context meter), so the extensions skip slow work (ChatContext.preview)."""
        return self.prompts.chat(
            history, settings, params, continue_last=continue_last, impersonate=impersonate, preview=preview
        )[0]

    # -- generation (the reply streams) ---------------------------------------------------------------------

    def quick_reply(self, messages: Sequence[ChatMessage], max_new_tokens: int) -> str:
        """A short greedy reply of the loaded model to ``messages`` (for extensions, e.g. summaries), through
        the detected template (a plain transcript when there is none)."""
        built = self.prompts.quick(messages)
        params = GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens)
        job = self.engine.submit(built.text, params, built.stop_strings, messages=built.messages)
        return "".join(chunk.text for chunk in tidy_reply(job, strip_leading=True)).strip()

    def stream_chat_reply(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ReplyStream:
        """Start generating the next reply (or the user's next message when impersonating).

        The stream's chunks carry the answer, the reasoning and the tool calls apart (``Chunk.text``,
        ``.reasoning``, ``.tool_calls``); ``tools`` and ``template_kwargs`` as in ``PromptBuilder.chat``."""
        self.resume_idle_model()
        prompt, params = self.prompts.chat(
            history,
            settings,
            params,
            continue_last=continue_last,
            impersonate=impersonate,
            tools=tools,
            template_kwargs=template_kwargs,
        )
        job = self.engine.submit(
            prompt.text,
            params,
            prompt.stop_strings,
            messages=prompt.messages,
            reply_format=prompt.reply_format,
            images=prompt.images,
            tools=tools if prompt.messages is not None else None,
            template_kwargs=(
                {**thinking_variables(params), **(template_kwargs or {})}
                if prompt.messages is not None
                else None
            ),
        )
        return ReplyStream(prompt, job, continuing=continue_last, extensions=self.extensions)

    def stream_completion(self, prompt: str, params: GenerationParams) -> CompletionStream:
        """Start a raw text completion (Default / Notebook tabs, `webui generate`, the APIs' completions),
        with the enabled extensions' completion, chunk and reply hooks applied."""
        self.resume_idle_model()
        prepared = self.prompts.completion(prompt, params)
        job = self.engine.submit(prepared.text, prepared.params)
        return CompletionStream(job, self.extensions, list(prepared.warnings))

    # -- embeddings ---------------------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[EmbeddingInput],
        model: str | None = None,
        *,
        normalize: bool = False,
        truncate: bool = True,
    ) -> EmbeddingResult:
        """One vector per text (or token-id list) from the embedding model ``model`` names (None: the loaded
        or default one), loading it when needed; EmbeddingError for what the caller can fix."""
        return self.embeddings.embed(texts, model, normalize=normalize, truncate=truncate)

    def close(self) -> None:
        try:
            self.embeddings.close()
            if self.knowledge is not None:
                self.knowledge.store.close()
            self.extensions.close()
            self.engine.close()
        finally:
            if self.chats is not None:
                self.chats.close()
