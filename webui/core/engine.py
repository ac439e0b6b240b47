"""The Engine owns the loaded models: each has its own lane (webui.core.model_lane), whose worker thread runs
that model's loads and generations in order, so one model's generation never waits for another's.

Several models stay loaded at once within a memory budget (each model's fit estimate counts against it) and a
count limit; loading one that does not fit beside the others first unloads the least recently used ones, idle
ones before busy ones, only as many as needed. Generations go to the model the submitting thread targets
(``target`` / ``origin``: the API's requests name theirs), else to the page's model (the one the Model tab chose).

Every generation has its own CancelToken, so Stop stops that generation and nobody else's. Stop strings are
matched across chunk boundaries and never shown. Each finished generation carries its own stats.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from webui.core.engine_types import (
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
from webui.core.loader import (
    ChatTemplatedModel,
    Chunk,
    FinishReason,
    GenerationStats,
    LoadedModel,
    LoaderError,
    PromptUsage,
    renders_own_template,
    sees_images,
)
from webui.core.media import Image, cannot_see
from webui.core.model_lane import END as _END
from webui.core.model_lane import Activity, ModelLane, ParallelModel
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
from webui.core.reply_reader import ReplyFormat, ReplyReader, reasoning_apart
from webui.core.tools.request import ToolRequest

__all__ = [
    "Activity",
    "Engine",
    "EngineError",
    "EngineStatus",
    "GenerationJob",
    "IdleUnload",
    "JobSource",
    "LoadedModelStatus",
    "LoadedState",
    "ParallelModel",
    "QueueFull",
    "QueueSnapshot",
    "QueuedJob",
]  # the engine and its types (webui.core.engine_types), as their users know them


class Engine:
    """Owns the loaded models (one lane each) and the memory budget they share.

    ``memory_budget`` (bytes; None: no limit) and ``max_loaded`` (models; None: no limit) bound what stays
    loaded together; an Engine made without them holds one model at a time, as a plain single-model engine.
    """

    def __init__(
        self,
        registry: LoaderRegistry,
        models_dir: Path,
        max_waiting: int | None = None,
        *,
        memory_budget: int | None = None,
        max_loaded: int | None = 1,
    ) -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.max_waiting = max_waiting  # generations allowed to wait (None: no limit); more raise QueueFull
        self.memory_budget = memory_budget
        self.max_loaded = max_loaded
        # One lane per model name, kept after its model is unloaded (state None): a lane's worker never ends
        # while a request may still queue on it; close() ends them all.
        self._lanes: dict[str, ModelLane] = {}
        self._page: str | None = None  # the page's model: the target of threads that name none
        # Guards _lanes and _page; a submit holds it while it queues so that no unload slips in between.
        self._lock = threading.Lock()
        self._admit = threading.Lock()  # one load at a time decides what to evict and loads
        self._local = threading.local()  # the labels and target model of the jobs this thread submits
        self._job_numbers = itertools.count(1)
        self._closed = False
        self.last_stats: GenerationStats | None = None
        self._loading: str | None = None  # the model being loaded (for status())
        self._idle_unloads: dict[str, IdleUnload] = {}  # models the idle watcher unloaded, by name
        self._loads = 0
        self._evictions = 0

    # -- lanes --------------------------------------------------------------------------------------------

    def _new_lane(self, name: str) -> ModelLane:
        return ModelLane(name, self._stream_into, EngineError)

    def target_name(self) -> str | None:
        """The model this thread's generations go to: the one it targets, else the page's model."""
        return getattr(self._local, "model", None) or self._page

    def _target_lane(self) -> ModelLane | None:
        name = self.target_name()
        with self._lock:
            return self._lanes.get(name) if name is not None else None

    def _lane_of(self, name: str | None) -> ModelLane | None:
        with self._lock:
            return self._lanes.get(name if name is not None else self._page or "")

    def _page_loaded(self) -> bool:
        """Whether the page's model is loaded (called with _lock held)."""
        lane = self._lanes.get(self._page) if self._page is not None else None
        return lane is not None and lane.state is not None

    def _page_moves_on(self) -> None:
        """After the page's model was unloaded (not by the idle watcher: then the next message brings it back),
        the page gets the most recently used model still loaded, if any."""
        with self._lock:
            if self._page is None or self._page_loaded():
                return
            lanes = sorted(
                (lane for lane in self._lanes.values() if lane.state is not None),
                key=lambda lane: lane.last_active,
            )
            self._page = lanes[-1].name if lanes else None

    def close(self) -> None:
        """Unload every model and stop the workers."""
        try:
            with self._lock:
                lanes = list(self._lanes.values())
            for lane in lanes:
                with contextlib.suppress(Exception):
                    lane.call(functools.partial(self._unload_lane_now, lane), "unloading")
                lane.stop()
        finally:
            self._closed = True
            for lane in lanes:
                lane.join(timeout=30)

    # -- models -------------------------------------------------------------------------------------------

    @property
    def state(self) -> LoadedState | None:
        """The model this thread targets (see ``target``), else the page's model; None when not loaded."""
        lane = self._target_lane()
        return lane.state if lane is not None else None

    def loaded(self) -> list[LoadedState]:
        """Every loaded model, the page's first, then the most recently used first."""
        with self._lock:
            lanes = sorted(
                self._lanes.values(), key=lambda lane: (lane.name != self._page, -lane.last_active)
            )
        return [lane.state for lane in lanes if lane.state is not None]

    def state_of(self, name: str) -> LoadedState | None:
        """The loaded model called ``name`` (None when it is not loaded)."""
        lane = self._lane_of(name)
        return lane.state if lane is not None else None

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
        state = self.state_of(name)
        if state is not None:
            return state.entry  # also covers a model loaded by path from outside the models folder
        unloaded = self._idle_unloads.get(name)
        if unloaded is not None and unloaded.entry is not None:
            return unloaded.entry  # the same, unloaded while idle: the next message loads it again
        try:
            return find_model(self.models_dir, name, self.registry)
        except ModelNotFoundError as exc:
            raise EngineError(str(exc)) from exc

    def uses_files(self, name: str, loader: str | None) -> bool:
        """False when ``name`` would load through a loader whose models are not files (a remote server)."""
        if loader is None:
            state = self.state_of(name)
            return state is None or state.capabilities.needs_files
        try:
            return self.registry.get(loader).capabilities.needs_files
        except LoaderError:
            return True  # the load itself reports the unknown loader

    def load(
        self,
        name: str,
        loader: str | None = None,
        settings: Mapping[str, Any] | None = None,
        *,
        memory_bytes: int = 0,
        gpu_bytes: int = 0,
        page: bool = True,
        load_with: Mapping[str, Any] | None = None,
    ) -> LoadedState:
        """Load a model by name beside the others; on failure the models loaded before stay usable (unless
        they had to be unloaded to make room).

        ``load_with``: settings the loader gets instead of those in ``settings`` (e.g. the slots an automatic
        ``parallel`` came to), while the loaded state keeps ``settings`` as asked, so a reload asks again.

        ``memory_bytes`` is what it will hold of the memory budget: the least recently used models are
        unloaded first when it does not fit beside them. ``page``: it becomes the page's model (else only
        when the page has none). For a loader whose models are not files (a remote server) any name is
        accepted and no file is looked up; the entry is named after what the loaded model reports.
        """
        current = self.state_of(name)
        if loader is None and current is not None:
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
        chosen = (
            self.settings_for(loader_name, {**dict(settings or {}), **load_with}) if load_with else validated
        )
        target = entry.path if entry is not None else Path(name)
        key = entry.name if entry is not None else name

        with self._admit:
            lane = self._lane_of(key)
            fresh = lane is None
            if lane is None:
                lane = self._new_lane(key)
            self._make_room(key, memory_bytes, count=False)  # memory first, so that the load has room

            def named_load() -> LoadedState:
                self._loading = key  # for status() while it loads
                try:
                    return do_load()
                finally:
                    self._loading = None

            def do_load() -> LoadedState:
                started = time.perf_counter()
                previous = lane.state
                if previous is not None and entry is not None and previous.entry.path == entry.path:
                    self._unload_lane_now(lane)  # reloading the same file: free it first, not held twice
                    previous = None
                try:
                    model = loader_cls().load(target, chosen)
                except LoaderError as exc:
                    raise EngineError(str(exc)) from exc
                except ValueError as exc:  # a setting the loader could not use (e.g. tensor_split "abc")
                    raise EngineError(f"{loader_name} could not use these settings: {exc}") from exc
                except MemoryError as exc:
                    raise EngineError(f"Not enough memory to load {entry.name if entry else name}.") from exc
                if previous is not None:
                    self._unload_lane_now(lane)
                loaded_entry = entry or ModelEntry(model.facts.name, model.facts.path, "remote", 0)
                lane.state = LoadedState(
                    entry=loaded_entry,
                    loader=loader_name,
                    settings=validated,
                    # A loaded model may narrow its loader's capabilities (e.g. no tokenizer on that server).
                    capabilities=model.capabilities,
                    model=model,
                    load_seconds=time.perf_counter() - started,
                    memory_bytes=memory_bytes,
                    gpu_bytes=gpu_bytes,
                )
                self._loads += 1
                return lane.state

            try:
                result: LoadedState = lane.call(named_load, "loading")
            except BaseException:
                if fresh:
                    lane.stop()
                raise
            with self._lock:
                final = result.entry.name  # a server's model is named after what it reports
                if final != key:
                    self._lanes.pop(key, None)
                    lane.name = final
                self._lanes[final] = lane
                self._idle_unloads.pop(key, None)
                if page or not self._page_loaded():
                    if self._page is not None and self._page != final and not self._page_loaded():
                        self._idle_unloads.pop(self._page, None)  # the page moved on: no resume of it
                    self._page = final
            # The count limit after the load: a failed load leaves the models loaded before it in place.
            self._make_room(final, memory_bytes, count=True)
            with self._lock:
                self._idle_unloads.pop(final, None)
            return result

    def _make_room(self, key: str, needed: int, *, count: bool) -> None:
        """Unload the least recently used models other than ``key`` (idle ones first) until ``key``'s
        ``needed`` bytes fit the memory budget beside them (and, with ``count``, the count limit holds);
        called holding _admit. A model that does not fit even alone (loaded anyway, e.g. --force) leaves
        no other loaded."""
        with self._lock:
            others = [lane for name, lane in self._lanes.items() if name != key and lane.state is not None]

        def over() -> bool:
            loaded = len(others) + 1
            used = needed + sum(lane.state.memory_bytes for lane in others if lane.state is not None)
            too_many = count and self.max_loaded is not None and loaded > self.max_loaded
            return too_many or (self.memory_budget is not None and used > self.memory_budget)

        for victim in sorted(others, key=lambda lane: (lane.busy(), lane.last_active)):
            if not over():
                return
            victim.call(functools.partial(self._unload_lane_now, victim), "unloading")
            self._page_moves_on()
            others.remove(victim)
            self._evictions += 1

    def _unload_lane_now(self, lane: ModelLane) -> None:
        state, lane.state = lane.state, None
        if state is not None:
            state.model.unload()

    def unload(self, name: str | None = None) -> None:
        """Free the model ``name`` (default: the page's model) after its running generations."""
        lane = self._lane_of(name)
        if lane is not None:
            lane.call(functools.partial(self._unload_lane_now, lane), "unloading")
        with self._lock:
            self._idle_unloads.pop(name if name is not None else self._page or "", None)  # no resume after it
        self._page_moves_on()

    def idle_seconds(self, name: str | None = None) -> float | None:
        """How long the model ``name`` (default: the page's) has had nothing running or waiting (None while
        busy, or when it is not loaded)."""
        lane = self._lane_of(name)
        return lane.idle_seconds() if lane is not None and lane.state is not None else None

    def unload_if_idle(self, idle_s: float, name: str | None = None) -> bool:
        """Unload the model ``name`` (default: the page's) if it has been idle ``idle_s`` seconds; decided on
        its worker, so no job queued before this check can lose its model. True if it unloaded."""
        lane = self._lane_of(name)
        if self._closed or lane is None:
            return False

        def check_and_unload() -> bool:
            idle = lane.idle_seconds()
            state = lane.state
            if state is None or idle is None or idle < idle_s:
                return False
            files = state.entry if state.entry.kind != "remote" else None
            record = IdleUnload(state.entry.name, idle_s, state.loader, state.settings.model_dump(), files)
            self._idle_unloads[state.entry.name] = record  # first: it stays findable during the unload
            self._unload_lane_now(lane)
            return True

        unloaded: bool = lane.call(check_and_unload)
        return unloaded

    def stats_of(self, name: str) -> GenerationStats | None:
        """The stats of the last generation on the model ``name`` (``last_stats``: on any model)."""
        lane = self._lane_of(name)
        if lane is None:
            return None
        latest = lane.latest  # its stats are set before its reader gets the last chunk
        return latest.stats if latest is not None and latest.stats is not None else lane.last_stats

    def idle_unloads(self) -> list[IdleUnload]:
        """The models the idle watcher unloaded that are not loaded again (the next request brings each back)."""
        return [record for name, record in list(self._idle_unloads.items()) if self.state_of(name) is None]

    def idle_unloaded(self, name: str) -> IdleUnload | None:
        """The record of ``name``'s idle unload while it is not loaded again (None otherwise)."""
        return self._idle_unloads.get(name) if self.state_of(name) is None else None

    def status(self) -> EngineStatus:
        """What is loaded and what runs now, without waiting for the worker (cheap enough to poll)."""
        with self._lock:
            page = self._page
            lane = self._lanes.get(page) if page is not None else None
            lanes = list(self._lanes.values())
        state = lane.state if lane is not None else None
        activity: Activity = "loading" if self._loading is not None else lane.activity if lane else "idle"
        return EngineStatus(
            model=state.entry.name if state is not None else None,
            loader=state.loader if state is not None else None,
            activity=activity,
            loading=self._loading,
            loads=self._loads,
            idle_unload=self._idle_unloads.get(page) if page is not None and state is None else None,
            models=tuple(
                LoadedModelStatus(
                    s.entry.name, s.loader, one.activity, s.memory_bytes, s.gpu_bytes, one.name == page
                )
                for one in lanes
                if (s := one.state) is not None
            ),
            evictions=self._evictions,
        )

    @contextlib.contextmanager
    def origin(
        self, source: JobSource, request_id: str | None = None, model: str | None = None
    ) -> Iterator[None]:
        """Label the generations this thread submits inside the block (the API marks its requests' jobs),
        and with ``model`` send them (and ``state``) to that model instead of the page's."""
        previous = getattr(self._local, "labels", None)
        self._local.labels = (source, request_id)
        try:
            with self.target(model) if model is not None else contextlib.nullcontext():
                yield
        finally:
            self._local.labels = previous

    @contextlib.contextmanager
    def target(self, model: str | None) -> Iterator[None]:
        """Inside the block this thread's generations, ``state`` and token counts use ``model``."""
        previous = getattr(self._local, "model", None)
        self._local.model = model
        try:
            yield
        finally:
            self._local.model = previous

    def queue_snapshot(self) -> QueueSnapshot:
        """The running generations and the queued ones (every model's), in the order they will run."""
        now = time.monotonic()

        def view(job: GenerationJob, position: int) -> QueuedJob:
            state: Literal["running", "queued"] = "running" if position == 0 else "queued"
            waited = now - job.submitted_at
            return QueuedJob(job.id, job.source, job.request_id, position, state, round(waited, 3), job.model)

        with self._lock:
            lanes = list(self._lanes.values())
        running: list[GenerationJob] = []
        pending: list[GenerationJob] = []
        for lane in lanes:
            with lane.lock:
                running += lane.running.values()
                pending += lane.pending.values()
        running.sort(key=lambda job: job.submitted_at)
        pending.sort(key=lambda job: job.submitted_at)
        return QueueSnapshot(
            activity=self.status().activity,
            running=view(running[0], 0) if running else None,
            queued=tuple(view(job, number) for number, job in enumerate(pending, start=1)),
            running_jobs=tuple(view(job, 0) for job in running),
        )

    def require_model(self) -> LoadedState:
        state = self.state
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
        """Queue a generation on the model this thread targets (else the page's); iterate the returned job
        for its chunks.

        With ``messages`` the conversation goes to a model that applies its own chat template, and
        ``prompt`` is only its readable rendering. ``reply_format`` says how to read the reply's reasoning
        and tool calls (see ``ReplyReader``). ``images`` fill the prompt's media markers, in order, for a
        model that sees images (ModelCannotSeeError for any other).
        """
        lane = self._target_lane()
        state = self.require_model()
        assert lane is not None
        if messages is not None and not renders_own_template(state.model):
            raise EngineError("The loaded model takes a rendered prompt, not chat messages.")
        if images and messages is None and not sees_images(state.model):
            raise cannot_see(state.entry.name, state.model.facts.extra)
        labels: tuple[JobSource, str | None] = getattr(self._local, "labels", None) or ("page", None)
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
            withdraw=lambda job: self._withdraw(lane, job),
            images=images if messages is None else (),
            model=state.entry.name,
        )
        with self._lock:
            if lane.closed:
                raise EngineError("The server is shutting down.")
            waiting = sum(len(one.pending) for one in self._lanes.values())
            if self.max_waiting is not None and waiting >= self.max_waiting:
                raise QueueFull(waiting, self._retry_after_s())
            with lane.lock:
                lane.enqueue(job)
        return job

    def _retry_after_s(self) -> int:
        """When a place in a full queue is likely free again: about one generation's time (1 to 30 s)."""
        last = self.last_stats
        return min(30, max(1, round(last.total_s + 0.5))) if last is not None else 2

    def _withdraw(self, lane: ModelLane, job: GenerationJob) -> None:
        """A cancelled job that has not started leaves the queue now and its reader gets the end at once."""
        if not lane.withdraw(job):
            return
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
        drafted = accepted = 0  # speculative decoding's drafts and kept drafts
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
                    drafted += chunk.drafted
                    accepted += chunk.accepted
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
                            for part in reasoning_apart(out):
                                job._put(part)
                        break
                    if parts or chunk.tokens:
                        for part in reasoning_apart(out):
                            job._put(part)
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
            drafted_tokens=drafted,
            accepted_tokens=accepted,
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
