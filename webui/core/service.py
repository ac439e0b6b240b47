"""The core facade the front ends call: load models, detect templates, build prompts, stream replies.

The page, the API and the CLI all go through one Service, so none of them computes a prompt, a sampler value
or a file path itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from webui.core.characters import Character, CharacterStore
from webui.core.chats import ChatStore
from webui.core.engine import (
    Engine,
    EngineError,
    EngineStatus,
    GenerationJob,
    IdleUnload,
    JobSource,
    LoadedState,
    QueuedJob,
    QueueFull,
    QueueSnapshot,
)
from webui.core.extension_hooks import ChatContext, GenerationKind
from webui.core.extensions import ExtensionManager
from webui.core.fit_check import check_before_load, refusal_message
from webui.core.hardware import MachineSource
from webui.core.loader import Chunk, GenerationStats, renders_own_template
from webui.core.machine import MachineProbe
from webui.core.models import ModelEntry, ModelFileError, discover_models, infer_loader
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.prompts import (
    DEFAULT_CHAT_INSTRUCT_COMMAND,
    BuiltPrompt,
    ChatMessage,
    Mode,
    PromptError,
    PromptRequest,
    build_messages,
    build_prompt,
    reply_reserve,
)
from webui.core.registry import LoaderRegistry
from webui.core.templates import (
    InstructionTemplate,
    TemplateDetection,
    TemplateError,
    TemplateStore,
    detect_template,
)

# What the page and the API use: the Service and the engine's types they see (never the engine itself).
__all__ = [
    "ChatSettings",
    "CompletionStream",
    "EngineError",
    "EngineStatus",
    "GenerationJob",
    "IdleUnload",
    "LoadReport",
    "LoadedState",
    "QueueFull",
    "QueueSnapshot",
    "QueuedJob",
    "ReplyStream",
    "Service",
]


@dataclass(frozen=True)
class ChatSettings:
    """How a conversation is turned into a prompt (everything but the sampler)."""

    mode: Mode = "instruct"
    # A template name, a template itself (an API request's own), or None = the one detected for the model.
    template: str | InstructionTemplate | None = None
    system_message: str = ""
    character_name: str = "Assistant"
    user_name: str = "You"
    context: str = ""
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND
    # The personality in use, for extensions (e.g. its card's character_book); the fields above already
    # carry what the prompt takes from it.
    character: Character | None = field(default=None, compare=False, repr=False)


@dataclass
class ReplyStream:
    """A reply being generated: iterate for text deltas; ``job`` holds stats once done.

    ``warnings`` lists the extensions' errors (from building the prompt, then while streaming).
    """

    prompt: BuiltPrompt
    job: GenerationJob
    continuing: bool = False
    extensions: ExtensionManager | None = None
    warnings: list[str] = field(default_factory=list)
    _chunks: Iterator[Chunk] = field(init=False)

    def __post_init__(self) -> None:
        self.warnings.extend(self.prompt.warnings)
        self._chunks = _tidy_reply(self.job, strip_leading=not self.continuing)
        extensions = self.extensions
        if extensions is not None and _extends_replies(extensions):
            self._chunks = _extend_reply(self._chunks, extensions, self.warnings, "chat")

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def stats(self) -> GenerationStats | None:
        return self.job.stats


def _tidy_reply(chunks: Iterable[Chunk], *, strip_leading: bool) -> Iterator[Chunk]:
    """Drop the space after "Name:" that opens a chat reply and the whitespace that ends any reply.

    Trailing whitespace is held back until more text follows, so streaming stays incremental.
    """
    started = not strip_leading
    pending = ""
    for chunk in chunks:
        text = chunk.text
        if not started:
            text = text.lstrip()
            started = bool(text)
        text = pending + text
        body = text.rstrip()
        pending = text[len(body) :]
        if chunk.finish_reason is not None:
            pending = ""
        yield replace(chunk, text=body)


@dataclass
class CompletionStream:
    """A raw completion being generated: iterate for text deltas (the continuation only, whitespace kept).

    ``prompt`` and ``params`` are what the model got, after the extensions' completion hooks; ``warnings``
    lists the extensions' errors (from those hooks, then while streaming).
    """

    job: GenerationJob
    extensions: ExtensionManager | None = None
    warnings: list[str] = field(default_factory=list)
    _chunks: Iterator[Chunk] = field(init=False)

    def __post_init__(self) -> None:
        self._chunks = iter(self.job)
        if self.extensions is not None and _extends_replies(self.extensions):
            self._chunks = _extend_reply(self._chunks, self.extensions, self.warnings, "completion")

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks

    def text(self) -> str:
        """Run to the end and return the whole continuation (with the extensions' changes)."""
        return "".join(chunk.text for chunk in self)

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def prompt(self) -> str:
        return self.job.prompt

    @property
    def params(self) -> GenerationParams:
        return self.job.params

    @property
    def stats(self) -> GenerationStats | None:
        return self.job.stats

    @property
    def finish_reason(self) -> str | None:
        return self.job.finish_reason


def _extends_replies(extensions: ExtensionManager) -> bool:
    return extensions.changes_replies()


def _extend_reply(
    chunks: Iterable[Chunk], extensions: ExtensionManager, warnings: list[str], kind: GenerationKind
) -> Iterator[Chunk]:
    """Each delta through the extensions' modify_chunk; the whole reply through modify_reply at the end.

    A reply hook can only add text at the end of what has streamed; any other change is reported.
    """
    streamed = ""
    finished = False

    def ending() -> str:
        final = extensions.modify_reply(streamed, kind, warnings)
        if final.startswith(streamed):
            return final[len(streamed) :]
        warnings.append(
            "An extension changed the reply's text after it had streamed; only text added at the end can be "
            "applied, so the change was skipped."
        )
        return ""

    for chunk in chunks:
        text = chunk.text
        if text:
            text = extensions.modify_chunk(text, kind, warnings)
        streamed += text
        if chunk.finish_reason is not None and not finished:
            finished = True
            text += ending()
        yield replace(chunk, text=text)
    if not finished:
        extra = ending()
        if extra:
            yield Chunk(text=extra)


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


class Service:
    """One per process: the engine, the preset and template stores, and the current template choice."""

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
    ):
        self.engine = Engine(registry, models_dir, max_waiting=max_queue)
        self.extensions = extensions or ExtensionManager(found=())
        self.machine: MachineSource = machine or MachineProbe()  # measured once, used by the fit checks
        self.presets = presets
        self.templates = templates
        self.chats = chats
        self.characters = characters
        self._detection: TemplateDetection | None = None
        self._lock = threading.Lock()
        self._resume_lock = threading.Lock()  # one reload after an idle unload, however many ask at once

    # -- what the engine is doing (the page and the API ask here, never the engine itself) ----------------

    @property
    def loaded(self) -> LoadedState | None:
        """The loaded model, its loader and settings; None when nothing is loaded."""
        return self.engine.state

    def engine_status(self) -> EngineStatus:
        """What is loaded and what runs now (cheap enough to poll)."""
        return self.engine.status()

    def queue_snapshot(self) -> QueueSnapshot:
        """The running generation and the waiting ones, in the order they will run."""
        return self.engine.queue_snapshot()

    def idle_seconds(self) -> float | None:
        """How long the loaded model has had nothing to do; None while busy or with nothing loaded."""
        return None if self.engine.state is None else self.engine.idle_seconds()

    def unload_if_idle(self, idle_s: float) -> bool:
        """Unload the model if it has been idle ``idle_s`` seconds (decided on the engine's worker)."""
        return self.engine.unload_if_idle(idle_s)

    def job_origin(self, source: JobSource, request_id: str | None = None) -> AbstractContextManager[None]:
        """Label the generations this thread submits inside the block (the API marks its requests' jobs)."""
        return self.engine.origin(source, request_id)

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

    # -- models ---------------------------------------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        """The models folder's models, plus the loaded model when it was loaded by path from elsewhere
        (also while the idle watcher has it unloaded: the next message loads it again)."""
        entries = discover_models(self.engine.models_dir)
        state = self.engine.state
        unloaded = self.engine.status().idle_unload
        elsewhere = state.entry if state is not None else unloaded.entry if unloaded is not None else None
        if elsewhere is not None and all(entry.name != elsewhere.name for entry in entries):
            entries.append(elsewhere)
        return entries

    def load_model(
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
        with self._lock:
            self._detection = detection
        return LoadReport(state, detection)

    def check_fit(self, name: str, loader: str | None, settings: Mapping[str, Any] | None) -> None:
        """EngineError with the estimate and suggestions when the model would not fit."""
        if not self.engine.uses_files(name, loader):
            return  # a server's model uses the server's memory, not this machine's
        entry = self.engine.resolve(name)
        try:
            loader_name = loader or infer_loader(entry)
        except ModelFileError:
            return  # the load itself reports unreadable files
        advice = check_before_load(entry, loader_name, settings, self.machine)
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

    def resume_idle_model(self, name: str | None = None) -> LoadReport | None:
        """Load the model the idle watcher unloaded again, with the loader and settings it had, when nothing
        else is loaded (and, given ``name``, when it is that model); None when there is nothing to resume.

        As with Ollama and LM Studio, an idle unload only frees memory: the next message brings the model back.
        """
        with self._resume_lock:
            status = self.engine.status()
            unloaded = status.idle_unload
            if status.model is not None or unloaded is None or name not in (None, unloaded.model):
                return None
            # The fit check already passed for these settings; the user chose them.
            return self.load_model(unloaded.model, unloaded.loader or None, unloaded.settings, insist=True)

    def unload_model(self) -> None:
        self.engine.unload()
        with self._lock:
            self._detection = None

    @property
    def detection(self) -> TemplateDetection | None:
        """The template detected for the loaded model (None once it is unloaded, also by the idle watcher)."""
        return self._detection if self.engine.state is not None else None

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

    # -- prompts and generation -------------------------------------------------------------------------------

    def template_for(self, settings: ChatSettings) -> Any:
        if isinstance(settings.template, InstructionTemplate):
            return settings.template
        if settings.template:
            return self.templates.get(settings.template)
        if self._detection is not None:
            return self._detection.template
        return None

    def build_chat_prompt(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
        preview: bool = False,
    ) -> BuiltPrompt:
        """The exact prompt text for ``history`` in ``settings.mode``, truncated to fit the context, with the
        enabled extensions applied. ``preview``: only to be looked at (the context meter), so the extensions
        skip slow work (ChatContext.preview)."""
        return self._build_chat_prompt(
            history, settings, params, continue_last=continue_last, impersonate=impersonate, preview=preview
        )[0]

    def _build_chat_prompt(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
        preview: bool = False,
    ) -> tuple[BuiltPrompt, GenerationParams]:
        """The prompt and the sampler parameters after the extensions' hooks (input, params, history,
        prompt: in that order)."""
        state = self.engine.require_model()
        facts = state.model.facts
        try:
            template = self.template_for(settings)
        except TemplateError as exc:
            raise EngineError(str(exc)) from exc
        # A model that applies its own chat template (a server's chat endpoint) gets the messages.
        build = build_messages if renders_own_template(state.model) else build_prompt
        request = PromptRequest(
            messages=list(history),
            mode=settings.mode,
            template=template,
            system_message=settings.system_message,
            character_name=settings.character_name,
            user_name=settings.user_name,
            context=settings.context,
            chat_instruct_command=settings.chat_instruct_command,
            continue_last=continue_last,
            impersonate=impersonate,
            bos_token=facts.bos_token,
            eos_token=facts.eos_token,
        )
        extensions = self.extensions
        warnings: list[str] = []
        chat: ChatContext | None = None
        if extensions.enabled:

            def measure(messages: Sequence[ChatMessage]) -> int:
                unlimited = replace(request, messages=list(messages))
                return build(
                    unlimited, count_tokens=self.engine.count_tokens, max_prompt_tokens=2**62
                ).prompt_tokens

            chat = ChatContext(
                mode=settings.mode,
                character_name=settings.character_name,
                user_name=settings.user_name,
                character=settings.character,
                max_prompt_tokens=self._prompt_budget(params),
                count_tokens=self.engine.count_tokens,
                measure=measure,
                generate=self.quick_reply,
                user_data_dir=extensions.user_data_dir,
                preview=preview,
            )
            messages = list(history)
            if messages and messages[-1].role == "user" and not (continue_last or impersonate):
                text = extensions.modify_input(messages[-1].content, chat, warnings)
                messages[-1] = ChatMessage("user", text)
            params = extensions.modify_params(params, chat, warnings)
            chat = replace(chat, max_prompt_tokens=self._prompt_budget(params))
            messages = extensions.modify_history(messages, chat, warnings)
            request = replace(request, messages=messages)
        try:
            built = build(
                request, count_tokens=self.engine.count_tokens, max_prompt_tokens=self._prompt_budget(params)
            )
        except (PromptError, TemplateError) as exc:
            raise EngineError(str(exc)) from exc
        if chat is not None:
            text = extensions.modify_prompt(built.text, chat, warnings)
            if text != built.text:
                built = replace(built, text=text, prompt_tokens=self.engine.count_tokens(text))
        return replace(built, warnings=tuple(warnings)), params

    def _prompt_budget(self, params: GenerationParams) -> int:
        """Tokens the prompt may take: the context (or truncation_length) minus the room kept for the reply."""
        facts = self.engine.require_model().model.facts
        context = min(params.truncation_length or facts.context_length, facts.context_length)
        return max(1, context - reply_reserve(context, params.max_new_tokens))

    def quick_reply(self, messages: Sequence[ChatMessage], max_new_tokens: int) -> str:
        """A short greedy reply of the loaded model to ``messages`` (for extensions, e.g. summaries), through
        the detected template (a plain transcript when there is none)."""
        state = self.engine.require_model()
        template = self._detection.template if self._detection is not None else None
        request = PromptRequest(
            messages=list(messages),
            mode="instruct" if template is not None else "chat",
            template=template,
            bos_token=state.model.facts.bos_token,
            eos_token=state.model.facts.eos_token,
        )
        build = build_messages if renders_own_template(state.model) else build_prompt
        try:
            built = build(request, count_tokens=self.engine.count_tokens, max_prompt_tokens=2**62)
        except (PromptError, TemplateError) as exc:
            raise EngineError(str(exc)) from exc
        params = GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens)
        job = self.engine.submit(built.text, params, built.stop_strings, messages=built.messages)
        return "".join(chunk.text for chunk in _tidy_reply(job, strip_leading=True)).strip()

    def stream_chat_reply(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
    ) -> ReplyStream:
        """Start generating the next reply (or the user's next message when impersonating)."""
        self.resume_idle_model()
        prompt, params = self._build_chat_prompt(
            history, settings, params, continue_last=continue_last, impersonate=impersonate
        )
        job = self.engine.submit(prompt.text, params, prompt.stop_strings, messages=prompt.messages)
        return ReplyStream(prompt, job, continuing=continue_last, extensions=self.extensions)

    def stream_completion(self, prompt: str, params: GenerationParams) -> CompletionStream:
        """Start a raw text completion (Default / Notebook tabs, `webui generate`, the APIs' completions),
        with the enabled extensions' completion, chunk and reply hooks applied."""
        self.resume_idle_model()
        extensions = self.extensions
        warnings: list[str] = []
        if extensions.enabled:
            self.engine.require_model()  # no hook runs for a completion that cannot start
            params = extensions.modify_completion_params(params, prompt, warnings)
            prompt = extensions.modify_completion_prompt(prompt, params, warnings)
        job = self.engine.submit(prompt, params)
        return CompletionStream(job, extensions, warnings)

    def close(self) -> None:
        try:
            self.extensions.close()
            self.engine.close()
        finally:
            if self.chats is not None:
                self.chats.close()
