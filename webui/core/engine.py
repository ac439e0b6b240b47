"""The Engine owns the loaded model: one worker thread runs loads and generations in order from a job queue.

A model that decodes several generations together (``ParallelModel``, e.g. llama.cpp with parallel slots) gets
up to ``parallel`` of them at once, each streamed by its own thread; the next one to start is the oldest of the
source (page or API) with fewer running, so neither side waits behind a queue full of the other's. Loads and
unloads wait until every running generation has ended. Any other model runs one generation at a time, in order.

Every generation has its own CancelToken, so Stop stops that generation and nobody else's. Stop strings are
matched across chunk boundaries and never shown. Each finished generation carries its own stats.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from webui.core.loader import (
    CancelToken,
    ChatTemplatedModel,
    Chunk,
    FinishReason,
    GenerationStats,
    LoadedModel,
    LoaderCapabilities,
    LoaderError,
    PromptUsage,
    renders_own_template,
    sees_images,
)
from webui.core.media import Image, cannot_see
from webui.core.models.discovery import (
    ModelEntry,
    ModelFileError,
    ModelNotFoundError,
    find_model,
    infer_loader,
)
from webui.core.params import GenerationParams, describe_validation_error
from webui.core.prompts import ChatMessage
from webui.core.registry import LoaderRegistry
from webui.core.reply_reader import ReplyFormat, ReplyReader
from webui.core.tools.request import ToolRequest

_END = object()


class EngineError(RuntimeError):
    """Something the user asked for cannot be done; the message is meant for them."""


class QueueFull(EngineError):
    """Too many generations already wait: the caller should try again after ``retry_after_s`` seconds."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(
            f"The server is busy: {waiting} requests are already waiting. Try again in {retry_after_s} s."
        )
        self.waiting = waiting
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LoadedState:
    """What is loaded now, and how."""

    entry: ModelEntry
    loader: str
    settings: BaseModel
    capabilities: LoaderCapabilities
    model: LoadedModel
    load_seconds: float


JobSource = Literal["api", "page"]
Activity = Literal["idle", "generating", "loading", "unloading"]


@dataclass(frozen=True)
class QueuedJob:
    """One generation as the queue shows it: position 0 is running, 1, 2, ... wait in that order."""

    id: str
    source: JobSource
    request_id: str | None  # the API request it belongs to (the id POST /v1/internal/stop takes)
    position: int
    state: Literal["running", "queued"]
    waited_s: float  # since it was submitted


@dataclass(frozen=True)
class QueueSnapshot:
    """What the engine is doing now and which generations wait, in the order they were submitted."""

    activity: Activity
    running: QueuedJob | None  # the oldest running generation (the only one, unless the model is parallel)
    queued: tuple[QueuedJob, ...]
    running_jobs: tuple[QueuedJob, ...] = ()  # every running generation, oldest first (position 0 each)


@runtime_checkable
class ParallelModel(Protocol):
    """A loaded model that decodes up to ``parallel`` generations together (its capabilities say parallel)."""

    parallel: int


@dataclass(frozen=True)
class _Tick:
    """A generation's turn on the worker: it starts the next waiting job submitted before ``epoch`` ended."""

    epoch: int


@dataclass(frozen=True)
class IdleUnload:
    """The model the idle watcher unloaded, after ``idle_s`` seconds with nothing to do."""

    model: str
    idle_s: float
    # How it was loaded, so that the next generation loads it again the same way (not part of equality:
    # the page compares unloads by model and time).
    loader: str = field(default="", compare=False)
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Its files, so that one loaded by path from outside the models folder (``serve --model /x.gguf``)
    # is still found by name: listed and loaded again like the others (None for a server's model).
    entry: ModelEntry | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EngineStatus:
    """What is loaded and what the engine does, read without waiting (equal values: nothing changed)."""

    model: str | None
    loader: str | None
    activity: Activity
    loading: str | None  # the model a load in progress is loading
    loads: int  # successful loads so far: a reload of the same model with other settings changes it
    idle_unload: IdleUnload | None  # set while nothing is loaded because the idle watcher unloaded it


class GenerationJob:
    """One queued generation: iterate it for Chunks; ``cancel()`` stops it (and only it)."""

    def __init__(
        self,
        prompt: str,
        params: GenerationParams,
        stops: Sequence[str],
        messages: Sequence[ChatMessage] | None = None,
        *,
        reply_format: ReplyFormat | None = None,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        job_id: str = "",
        source: JobSource = "page",
        request_id: str | None = None,
        withdraw: Callable[[GenerationJob], None] | None = None,
        images: Sequence[Image] = (),
    ) -> None:
        self.id = job_id
        self.source: JobSource = source
        self.request_id = request_id
        self.submitted_at = time.monotonic()
        self._withdraw = withdraw  # the engine's: a job cancelled while queued leaves the queue at once
        self.prompt = prompt
        self.messages = tuple(messages) if messages is not None else None  # for a model with its own template
        # The images whose markers the prompt holds, in prompt order (a vision model's stream_images gets them).
        self.images = tuple(images)
        self.reply_format = reply_format  # how to tell reasoning and tool calls from the answer (None: plain)
        # For a model with its own template: the tools and template variables its server gets.
        self.tools = tools
        self.template_kwargs = dict(template_kwargs or {})
        self.params = params
        self.stops = tuple(s for s in (*params.stop, *stops) if s)
        self.token = CancelToken()
        self._chunks: queue.SimpleQueue[Chunk | BaseException | object] = queue.SimpleQueue()
        self.stats: GenerationStats | None = None
        self.finish_reason: FinishReason | None = None
        self.stop_string: str | None = None  # the stop string that ended the reply, if one did

    def cancel(self) -> None:
        self.token.cancel()
        if self._withdraw is not None:
            self._withdraw(self)

    def _put(self, item: Chunk | BaseException | object) -> None:
        self._chunks.put(item)

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Chunk)
            yield item

    def text(self) -> str:
        """Run to the end and return the whole reply (non-streaming output is just the joined stream)."""
        return "".join(chunk.text for chunk in self)


class Engine:
    """Owns at most one loaded model and serializes work on it through one worker thread."""

    def __init__(self, registry: LoaderRegistry, models_dir: Path, max_waiting: int | None = None) -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.max_waiting = max_waiting  # generations allowed to wait (None: no limit); more raise QueueFull
        self._state: LoadedState | None = None
        self._jobs: queue.Queue[Callable[[], None] | _Tick | None] = queue.Queue()
        # The generations submitted and not yet started, in order (dicts keep insertion order), and the ones
        # running; guarded by _lock so that a cancel and the worker never both take a queued job.
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)  # notified when a running generation ends
        self._pending: dict[str, GenerationJob] = {}
        self._epochs: dict[str, int] = {}  # job id -> the epoch it was submitted in
        self._running: dict[str, GenerationJob] = {}
        self._epoch = 0  # moves on with every load, unload or other task: jobs never jump over one
        self._activity: Activity = "idle"
        self._last_active = time.monotonic()
        self._job_numbers = itertools.count(1)
        self._origin = threading.local()  # labels for the jobs this thread submits (see ``origin``)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="palabre-engine", daemon=True)
        self._worker.start()
        self.last_stats: GenerationStats | None = None
        self._loading: str | None = None  # the model being loaded (for status())
        self._idle_unload: IdleUnload | None = None  # the last unload, if the idle watcher made it
        self._loads = 0

    # -- worker -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            task = self._jobs.get()
            if isinstance(task, _Tick):
                self._start_next(task.epoch)
                continue
            self._drain()
            if task is None:
                return
            task()

    def _drain(self) -> None:
        """Wait until no generation runs (before a load, unload or check that needs the model to itself)."""
        with self._ended:
            while self._running:
                self._ended.wait()

    def _slots(self) -> int:
        """Generations the loaded model runs at once."""
        state = self._state
        if state is None or not state.capabilities.parallel or not isinstance(state.model, ParallelModel):
            return 1
        return max(1, int(state.model.parallel))

    def _start_next(self, epoch: int) -> None:
        """Start the next waiting generation once a slot is free (at once, inline, for a one-at-a-time model)."""
        slots = self._slots()
        with self._ended:
            while len(self._running) >= slots:
                self._ended.wait()
            job = self._next_job(epoch)
            if job is None:
                return  # withdrawn while queued (its stream has ended), or started by an earlier turn
            del self._pending[job.id]
            self._epochs.pop(job.id, None)
            self._running[job.id] = job
            self._activity = "generating"
        if slots == 1:
            self._generate(job)
        else:
            threading.Thread(
                target=self._generate, args=(job,), name=f"palabre-{job.id}", daemon=True
            ).start()

    def _next_job(self, epoch: int) -> GenerationJob | None:
        """The oldest waiting job of the source with fewer running ones (called with the lock held)."""
        waiting = [job for job in self._pending.values() if self._epochs.get(job.id, 0) <= epoch]
        if not waiting:
            return None
        running = [job.source for job in self._running.values()]
        return min(waiting, key=lambda job: running.count(job.source))  # min keeps the oldest among equals

    def _call(self, fn: Callable[[], Any], activity: Activity | None = None) -> Any:
        """Run ``fn`` on the worker (after the jobs queued before it) and return its result.

        With ``activity`` the queue shows it while it runs and it counts as use of the model.
        """
        future: Future[Any] = Future()

        def task() -> None:
            if activity is not None:
                self._activity = activity
            try:
                try:
                    result = fn()
                finally:  # before the caller wakes: whoever reads status() after load() sees it done
                    if activity is not None:
                        self._activity = "idle"
                        self._last_active = time.monotonic()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        with self._lock:
            self._epoch += 1
            self._jobs.put(task)
        return future.result()

    def close(self) -> None:
        """Unload the model and stop the worker."""
        try:
            self.unload()
        finally:
            self._closed = True
            self._jobs.put(None)
            self._worker.join(timeout=30)

    # -- models -------------------------------------------------------------------------------------------

    @property
    def state(self) -> LoadedState | None:
        return self._state

    def settings_for(self, loader: str, settings: Mapping[str, Any] | None) -> BaseModel:
        """Validate loader settings (strings from the CLI are accepted); EngineError with each bad field.

        The one validation: the loader receives the validated model and never checks it again.
        """
        settings_model = self.registry.get(loader).settings_model
        try:
            return settings_model.model_validate(dict(settings or {}))
        except ValidationError as exc:
            raise EngineError(f"Invalid {loader} settings: {describe_validation_error(exc)}") from exc

    def resolve(self, name: str) -> ModelEntry:
        state = self._state
        if state is not None and name == state.entry.name:
            return state.entry  # also covers a model loaded by path from outside the models folder
        unloaded = self._idle_unload
        if state is None and unloaded is not None and unloaded.entry is not None and name == unloaded.model:
            return unloaded.entry  # the same, unloaded while idle: the next message loads it again
        try:
            return find_model(self.models_dir, name, self.registry)
        except ModelNotFoundError as exc:
            raise EngineError(str(exc)) from exc

    def uses_files(self, name: str, loader: str | None) -> bool:
        """False when ``name`` would load through a loader whose models are not files (a remote server)."""
        if loader is None:
            state = self._state
            return state is None or name != state.entry.name or state.capabilities.needs_files
        try:
            return self.registry.get(loader).capabilities.needs_files
        except LoaderError:
            return True  # the load itself reports the unknown loader

    def load(
        self, name: str, loader: str | None = None, settings: Mapping[str, Any] | None = None
    ) -> LoadedState:
        """Load a model by name; on failure the previously loaded model stays loaded and usable.

        For a loader whose models are not files (a remote server) any name is accepted and no file is
        looked up; the entry is named after what the loaded model reports.
        """
        current = self._state
        if loader is None and current is not None and name == current.entry.name:
            # Reloading a remote model: there are no files to infer its loader from.
            loader = None if current.capabilities.needs_files else current.loader
        entry: ModelEntry | None = None
        if loader is None:
            entry = self.resolve(name)
            try:
                loader = infer_loader(entry, self.registry)
            except ModelFileError as exc:
                raise EngineError(str(exc)) from exc
        loader_name = loader
        try:
            loader_cls = self.registry.get(loader_name)
        except LoaderError as exc:
            raise EngineError(str(exc)) from exc
        if entry is None and loader_cls.capabilities.needs_files:
            entry = self.resolve(name)
        validated = self.settings_for(loader_name, settings)
        target = entry.path if entry is not None else Path(name)

        def do_load() -> LoadedState:
            started = time.perf_counter()
            previous = self._state
            if previous is not None and entry is not None and previous.entry.path == entry.path:
                self._unload_now()  # reloading the same file: free it first so memory is not held twice
                previous = None
            try:
                model = loader_cls().load(target, validated)
            except LoaderError as exc:
                raise EngineError(str(exc)) from exc
            except ValueError as exc:  # a setting the loader could not use (e.g. tensor_split "abc")
                raise EngineError(f"{loader_name} could not use these settings: {exc}") from exc
            except MemoryError as exc:
                raise EngineError(f"Not enough memory to load {entry.name if entry else name}.") from exc
            if previous is not None:
                self._unload_now()
            loaded_entry = entry or ModelEntry(model.facts.name, model.facts.path, "remote", 0)
            self._state = LoadedState(
                entry=loaded_entry,
                loader=loader_name,
                settings=validated,
                # A loaded model may narrow its loader's capabilities (e.g. no tokenizer on that server).
                capabilities=model.capabilities,
                model=model,
                load_seconds=time.perf_counter() - started,
            )
            self._idle_unload = None
            self._loads += 1
            return self._state

        def named_load() -> LoadedState:
            self._loading = entry.name if entry is not None else name  # for status() while it loads
            try:
                return do_load()
            finally:
                self._loading = None

        result: LoadedState = self._call(named_load, "loading")
        return result

    def _unload_now(self, idle: IdleUnload | None = None) -> None:
        # The idle record first: a model unloaded while idle stays findable by name during the slow unload.
        self._idle_unload = idle
        state, self._state = self._state, None
        if state is not None:
            state.model.unload()

    def unload(self) -> None:
        """Free the loaded model (after any running generation)."""
        self._call(self._unload_now, "unloading")

    def idle_seconds(self) -> float | None:
        """How long nothing has run or waited (None while a generation, load or unload runs or waits)."""
        with self._lock:
            if self._pending or self._running or self._activity != "idle":
                return None
            return max(0.0, time.monotonic() - self._last_active)

    def unload_if_idle(self, idle_s: float) -> bool:
        """Unload the model if it has been idle ``idle_s`` seconds; decided on the worker, so no job queued
        before this check can lose its model. True if it unloaded."""
        if self._closed:
            return False

        def check_and_unload() -> bool:
            idle = self.idle_seconds()
            state = self._state
            if state is None or idle is None or idle < idle_s:
                return False
            files = state.entry if state.entry.kind != "remote" else None
            self._unload_now(
                IdleUnload(state.entry.name, idle_s, state.loader, state.settings.model_dump(), files)
            )
            return True

        unloaded: bool = self._call(check_and_unload)
        return unloaded

    def status(self) -> EngineStatus:
        """What is loaded and what runs now, without waiting for the worker (cheap enough to poll)."""
        state = self._state
        return EngineStatus(
            model=state.entry.name if state is not None else None,
            loader=state.loader if state is not None else None,
            activity=self._activity,
            loading=self._loading,
            loads=self._loads,
            idle_unload=self._idle_unload if state is None else None,
        )

    @contextlib.contextmanager
    def origin(self, source: JobSource, request_id: str | None = None) -> Iterator[None]:
        """Label the generations this thread submits inside the block (the API marks its requests' jobs)."""
        previous = getattr(self._origin, "labels", None)
        self._origin.labels = (source, request_id)
        try:
            yield
        finally:
            self._origin.labels = previous

    def queue_snapshot(self) -> QueueSnapshot:
        """The running generation and the queued ones, in the order they will run."""
        now = time.monotonic()

        def view(job: GenerationJob, position: int) -> QueuedJob:
            state: Literal["running", "queued"] = "running" if position == 0 else "queued"
            waited = now - job.submitted_at
            return QueuedJob(job.id, job.source, job.request_id, position, state, round(waited, 3))

        with self._lock:
            running = list(self._running.values())
            pending = list(self._pending.values())
            activity = self._activity
        return QueueSnapshot(
            activity=activity,
            running=view(running[0], 0) if running else None,
            queued=tuple(view(job, number) for number, job in enumerate(pending, start=1)),
            running_jobs=tuple(view(job, 0) for job in running),
        )

    def require_model(self) -> LoadedState:
        state = self._state
        if state is None:
            raise EngineError("No model is loaded. Load one in the Model tab (or pass --model).")
        return state

    def count_tokens(self, text: str) -> int:
        return len(self.require_model().model.tokenize(text))

    # -- generation ---------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str,
        params: GenerationParams,
        stops: Sequence[str] = (),
        *,
        messages: Sequence[ChatMessage] | None = None,
        reply_format: ReplyFormat | None = None,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        images: Sequence[Image] = (),
    ) -> GenerationJob:
        """Queue a generation; iterate the returned job for its chunks.

        With ``messages`` the conversation goes to a model that applies its own chat template, and
        ``prompt`` is only its readable rendering. ``reply_format`` says how to read the reply's reasoning
        and tool calls (see ``ReplyReader``). ``images`` fill the prompt's media markers, in order, for a
        model that sees images (ModelCannotSeeError for any other).
        """
        state = self.require_model()
        if messages is not None and not renders_own_template(state.model):
            raise EngineError("The loaded model takes a rendered prompt, not chat messages.")
        if images and messages is None and not sees_images(state.model):
            raise cannot_see(state.entry.name, state.model.facts.extra)
        labels: tuple[JobSource, str | None] = getattr(self._origin, "labels", None) or ("page", None)
        source, request_id = labels
        job = GenerationJob(
            prompt,
            params,
            stops,
            messages,
            reply_format=reply_format,
            tools=tools,
            template_kwargs=template_kwargs,
            job_id=f"job-{next(self._job_numbers)}",
            source=source,
            request_id=request_id,
            withdraw=self._withdraw,
            images=images if messages is None else (),
        )
        with self._lock:
            if self.max_waiting is not None and len(self._pending) >= self.max_waiting:
                raise QueueFull(len(self._pending), self._retry_after_s())
            self._pending[job.id] = job
            self._epochs[job.id] = self._epoch
            self._jobs.put(_Tick(self._epoch))
        return job

    def _retry_after_s(self) -> int:
        """When a place in a full queue is likely free again: about one generation's time (1 to 30 s)."""
        last = self.last_stats
        return min(30, max(1, round(last.total_s + 0.5))) if last is not None else 2

    def _withdraw(self, job: GenerationJob) -> None:
        """A cancelled job that has not started leaves the queue now and its reader gets the end at once."""
        with self._lock:
            if self._pending.pop(job.id, None) is None:
                return  # running (its token stops it) or already finished
            self._epochs.pop(job.id, None)
        job.finish_reason = "cancelled"
        job._put(Chunk(text="", finish_reason="cancelled"))
        job._put(_END)

    def generate(self, prompt: str, params: GenerationParams, stops: Sequence[str] = ()) -> Iterator[Chunk]:
        """Stream a generation; closing the iterator early cancels it."""
        job = self.submit(prompt, params, stops)
        try:
            yield from job
        finally:
            job.cancel()

    def _generate(self, job: GenerationJob) -> None:
        """Run ``job`` (already moved from waiting to running by ``_start_next``)."""
        try:
            if job.token.cancelled:
                job.finish_reason = "cancelled"
                job._put(Chunk(text="", finish_reason="cancelled"))
                return
            state = self._state
            if state is None:
                raise EngineError("No model is loaded.")
            self._stream_into(job, state.model)
        except LoaderError as exc:
            job._put(EngineError(str(exc)))
        except BaseException as exc:
            job._put(exc)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                if not self._running:
                    self._activity = "idle"
                self._last_active = time.monotonic()
                self._ended.notify_all()
            job._put(_END)

    def _stream_into(self, job: GenerationJob, model: LoadedModel) -> None:
        reader = ReplyReader(job.reply_format, job.prompt, job.stops)
        params = job.params
        if reader.format.parses and params.skip_special_tokens:
            # Thinking and tool-call markers are often special tokens: the reader needs them, never shows them.
            params = params.model_copy(update={"skip_special_tokens": False})
        own_template = job.messages is not None and renders_own_template(model)
        # A thinking budget is enforced here for rendered prompts (a chat endpoint gets it as a parameter):
        # when it runs out, the closing marker is appended and the model continues from there.
        budget = params.thinking_budget if not own_template else -1
        started = time.perf_counter()
        first_token_at: float | None = None
        new_tokens = 0
        finish: FinishReason = "length"
        prompt: PromptUsage | None = None
        text = job.prompt
        while True:
            if budget >= 0 and reader.in_reasoning and reader.reasoning_tokens >= budget:
                text = job.prompt + reader.raw + reader.force_close()
            left = params.max_new_tokens - new_tokens
            if left <= 0:
                break
            run_params = (
                params
                if left == params.max_new_tokens
                else params.model_copy(update={"max_new_tokens": left, "prompt_logprobs": False})
            )
            if own_template and job.messages is not None and isinstance(model, ChatTemplatedModel):
                stream = model.stream_chat(
                    job.messages, run_params, job.token, tools=job.tools, template_kwargs=job.template_kwargs
                )
            elif job.images:
                if not sees_images(model):  # another model was loaded after this job was queued
                    raise cannot_see(model.facts.name, model.facts.extra)
                stream = model.stream_images(text, job.images, run_params, job.token)
            else:
                stream = model.stream(text, run_params, job.token)
            over_budget = False
            try:
                for chunk in stream:
                    if chunk.tokens and first_token_at is None:
                        first_token_at = time.perf_counter()
                    new_tokens += chunk.tokens
                    if prompt is None or text is job.prompt:
                        prompt = chunk.prompt or prompt  # the request's prompt, not a budget continuation's
                    if chunk.finish_reason is not None:
                        finish = chunk.finish_reason
                    out = reader.feed(chunk)
                    parts = bool(
                        out.text or out.reasoning or out.tool_calls or out.logprobs or out.prompt_logprobs
                    )
                    if reader.stopped:
                        finish = "stop"
                        if parts:
                            job._put(out)
                        break
                    if parts or chunk.tokens:
                        job._put(out)
                    if budget >= 0 and reader.in_reasoning and reader.reasoning_tokens >= budget:
                        over_budget = chunk.finish_reason is None
                        if over_budget:
                            break
            finally:
                stream_close = getattr(stream, "close", None)
                if stream_close is not None:
                    stream_close()  # a generator's finally blocks free its sampler at once
            if not over_budget or job.token.cancelled:
                break
        tail = reader.finish()
        if finish == "stop" and reader.calls_made:
            finish = "tool_calls"
        total = time.perf_counter() - started
        stats = GenerationStats(
            prompt=prompt or PromptUsage(0),
            new_tokens=new_tokens,
            time_to_first_token_s=(first_token_at - started) if first_token_at else total,
            total_s=total,
        )
        job.stats = stats
        job.finish_reason = finish
        job.stop_string = reader.stop_string
        self.last_stats = stats
        job._put(
            Chunk(
                tail.text,
                reasoning=tail.reasoning,
                tool_calls=tail.tool_calls,
                finish_reason=finish,
                stats=stats,
                logprobs=tail.logprobs,
            )
        )
