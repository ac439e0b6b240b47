"""The serving base every protocol's serving object holds: models by name (loaded just in time, or resumed
after an idle unload), generations started on the loaded model and followed for their client, and the API's
registry of running requests. No fastapi import: routers render ApiError in their protocol's error shape.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webui.api.core_requests import CoreCompletionRequest, CoreRequest
from webui.api.errors import ApiError, queue_full_error
from webui.api.jobs import ApiJobs, Caller
from webui.api.streams import Generation, Run, Started
from webui.core.agent import Toolbox
from webui.core.agent.api_reply import ApiToolReply, offers_server_tools
from webui.core.agent.base import Tool
from webui.core.embeddings import is_embedding_entry
from webui.core.idle import IdleUnloader
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.loader import LoadedModel, renders_own_template, sees_images
from webui.core.media import ImageError
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, EngineError, LoadedState, QueueFull, Service, ToolRequest

DEFAULT_MODEL_NAMES = frozenset(["", "default"])
_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class RequestContext:
    """What a serving method needs of the HTTP request: who sent it, and whether its client is still there."""

    caller: Caller
    disconnected: Callable[[], Awaitable[bool]]


# -- model names ---------------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    name = name.strip()
    if name.endswith(":latest"):  # Ollama clients add the default tag
        name = name[: -len(":latest")]
    return name.lower()


def aliases(entry: ModelEntry) -> set[str]:
    """Every name a request may use for ``entry``: its name, its file name, and both without ".gguf"."""
    names = {entry.name, entry.path.name}
    names |= {name[: -len(".gguf")] for name in names if name.lower().endswith(".gguf")}
    return {name.lower() for name in names}


def find_entry(entries: Iterable[ModelEntry], name: str) -> ModelEntry | None:
    wanted = _normalize(name)
    return next((entry for entry in entries if wanted in aliases(entry)), None)


def seeded(params: GenerationParams, index: int) -> GenerationParams:
    """The ``index``-th of n choices: a fixed seed is moved on so the choices differ but stay reproducible."""
    if index == 0 or params.seed < 0:
        return params
    return params.overlay({"seed": (params.seed + index) % _SEED_LIMIT})


def sees(model: LoadedModel) -> bool | None:
    """Whether ``model`` takes images: a vision model with its projector loaded (True); a model behind a
    server that applies its own chat template (None: the images are sent and the server answers); any other
    model (False)."""
    if sees_images(model):
        return True
    return None if renders_own_template(model) else False


# -- the API's view of the service ---------------------------------------------------------------------------


class Serving:
    """Models by name and the start of generations, for every API route of one server."""

    def __init__(
        self,
        service: Service,
        idle_unload_s: float | None = None,
        images: ImageSources = DATA_URLS_ONLY,
        toolbox: Toolbox | None = None,
    ) -> None:
        self.service = service
        # The page's tools, shared with the page: offered to API clients only when the user turned on "API
        # clients may use these tools too" (see server_tools).
        self.toolbox = toolbox
        # Where requests' image URLs may be read from (data: URLs; http(s) with --allow-image-host).
        self.images = images
        self.jobs = ApiJobs()  # the requests generating now, for /v1/internal/stop and the queue view
        # Held while a request makes sure of its model and queues its jobs, so that another request's
        # just-in-time load (or an idle unload) cannot slip between the two.
        self._switch = threading.Lock()
        # Started by the server (create_app), stopped when it shuts down; each loaded model on its own clock.
        self.idle = IdleUnloader(
            self._unload_if_idle, self.service.idle_seconds, self._loaded_names, idle_unload_s
        )

    def _loaded_names(self) -> list[str]:
        return [state.entry.name for state in self.service.loaded_models()]

    def _unload_if_idle(self, model: str, idle_s: float) -> bool:
        with self._switch:
            return self.service.unload_if_idle(idle_s, model)

    def entries(self) -> list[ModelEntry]:
        return self.service.models()

    def loaded(self) -> LoadedState | None:
        """The page's model (or the model this thread's request targets)."""
        return self.service.loaded

    def loaded_models(self) -> list[LoadedState]:
        """Every loaded model, the page's first."""
        return self.service.loaded_models()

    def keep_alive(self, model: str, seconds: float | None) -> None:
        """Ollama's keep_alive for the model a request named: how long it stays once idle (see IdleUnloader)."""
        try:
            name = self.find(model).name
        except ApiError:
            return  # the request itself failed on its model name
        self.idle.keep_alive(seconds, name)

    def unload(self, entry: ModelEntry) -> bool:
        """Unload ``entry`` if it is loaded (the others stay); True if it was."""
        if self.service.loaded_model(entry.name) is None:
            return False
        with self._switch:
            self.service.unload_model(entry.name)
        return True

    def find(self, name: str) -> ModelEntry:
        """The model a request names (the page's model for an empty name); 404 when there is none."""
        state = self.loaded()
        if _normalize(name) in DEFAULT_MODEL_NAMES:
            unloaded = self.service.engine_status().idle_unload
            resumable = find_entry(self.entries(), unloaded.model) if state is None and unloaded else None
            if resumable is not None:
                return resumable  # the model the idle watcher unloaded: _ensure loads it again
            if state is None:
                raise ApiError(
                    400, "No model is loaded: name one in `model` (see /v1/models).", param="model"
                )
            return state.entry
        for loaded in self.loaded_models():
            if (
                _normalize(name) in aliases(loaded.entry)
                or _normalize(name) == loaded.model.facts.name.lower()
            ):
                return loaded.entry
        entry = find_entry(self.entries(), name)
        if entry is None:
            listing = ", ".join(e.name for e in self.entries()) or "none"
            raise ApiError(
                404,
                f"The model {name!r} does not exist. Available models: {listing}.",
                param="model",
                code="model_not_found",
            )
        return entry

    def _generator(self, name: str) -> ModelEntry:
        """The model a request names, when it generates text (400 for an embedding model)."""
        entry = self.find(name)
        if is_embedding_entry(entry):
            raise ApiError(
                400,
                f"{entry.name} is an embedding model, not a text generator: use it through /v1/embeddings or "
                "/api/embed.",
                param="model",
                code="model_not_supported",
            )
        return entry

    def _ensure(self, entry: ModelEntry, admin: bool) -> float:
        """Load ``entry`` unless it is loaded (if this caller may); the seconds the load took."""
        if self.service.loaded_model(entry.name) is not None:
            return 0.0
        # The model the idle watcher unloaded comes back for anyone allowed to use it, as it was loaded:
        # the unload was the server's own doing, not a switch made by a client.
        try:
            resumed = self.service.resume_idle_model(entry.name)
        except EngineError as exc:
            raise ApiError(500, f"Could not load {entry.name}: {exc}", kind="server_error") from exc
        if resumed is not None:
            return resumed.state.load_seconds
        if not admin:
            page = self.service.loaded
            current = f" (loaded: {page.entry.name})" if page else ""
            raise ApiError(
                403,
                f"Loading the model {entry.name!r} needs an admin key{current}.",
                kind="permission_error",
                param="model",
                code="admin_required",
            )
        try:
            # Beside the page's model when the memory budget holds both (else the least recently used goes).
            report = self.service.load_model(entry.name, page=False)
        except EngineError as exc:
            raise ApiError(500, f"Could not load {entry.name}: {exc}", kind="server_error") from exc
        return report.state.load_seconds

    def start(
        self,
        model: str,
        admin: bool,
        submit: Callable[[LoadedState], list[Run]],
        request_id: str | None = None,
    ) -> Started:
        """Make sure ``model`` is loaded (loading it if allowed, beside the others when they fit), then queue
        the runs ``submit`` makes on it, labelled in the engine's queue as the API's, under ``request_id``.

        A load runs outside the lock that queueing holds, so requests for models already loaded go on while
        another model loads. Blocking (a load takes seconds): call it from a worker thread.
        """
        load_seconds = 0.0
        for _ in range(3):  # a model unloaded again between its load and the queueing is loaded once more
            entry = self._generator(model)
            # keep_alive is per request, as in Ollama: an earlier request's 0 must not unload the model under
            # this one as soon as its reply is done (Ollama's routes set their request's own value once
            # started).
            self.idle.keep_alive(None, entry.name)
            with self._switch:
                state = self.service.loaded_model(entry.name)
                if state is not None:
                    try:
                        with self.service.job_origin("api", request_id, state.entry.name):
                            runs = submit(state)
                    except QueueFull as exc:
                        raise queue_full_error(exc) from exc
                    except (
                        ImageError
                    ) as exc:  # the model cannot see images (ModelCannotSeeError), or this one
                        raise ApiError(400, str(exc), param="messages", code="invalid_image") from exc
                    except EngineError as exc:
                        raise ApiError(400, str(exc)) from exc
                    return Started(runs, state.entry.name, load_seconds)
            load_seconds += self._ensure(entry, admin)
        raise ApiError(
            503, f"{model} was unloaded while it was being loaded; try again.", kind="server_error"
        )

    def start_request(self, model: str, admin: bool, request: CoreRequest, request_id: str) -> Started:
        """Queue ``request``'s replies or completions on ``model`` (blocking: see ``start``), once the
        loaded model's loader is known to support what it needs."""

        def submit(state: LoadedState) -> list[Run]:
            request.needs.check(state, request.params)
            if isinstance(request, CoreCompletionRequest):
                prompts = request.prompts(state)
                return self.completion_runs(prompts, request.params, request.n, echo=request.echo)
            return self.chat_runs(
                request.history,
                request.settings,
                request.params,
                request.n,
                tools=request.tools,
                template_kwargs=request.template_kwargs,
                request_id=request_id,
            )

        return self.start(model, admin, submit, request_id)

    def server_tools(self, client: ToolRequest | None) -> list[Tool]:
        """The page's tools a chat request gets on top of its own ``client`` tools: none unless the user lets
        API clients use them (Tools panel; off by default), only those that need no approval (read-only, or
        allowed for the API in tools.yaml), none when the request forces a call of its own tools or asks for
        none, and never one named like a client's tool (the client's wins). A request cannot change this."""
        if self.toolbox is None or not offers_server_tools(client):
            return []
        theirs = set(client.names) if client is not None else set()
        return [tool for tool in self.toolbox.api_tools() if tool.spec.name not in theirs]

    def follow(self, started: Started, context: RequestContext, request_id: str) -> Generation:
        """``started`` followed for its client, registered under ``request_id`` (owned by the caller's key)
        for /v1/internal/stop and the queue view until its answer ends."""
        self.jobs.add(request_id, started, owner=context.caller.client)
        return Generation(started, context.disconnected, lambda: self.jobs.discard(request_id))

    def chat_runs(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        n: int = 1,
        *,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> list[Run]:
        """Queue ``n`` replies to ``history`` (on the loaded model), offering ``tools``, with more template
        variables ``template_kwargs``; with the server's tools (``server_tools``) each reply is a tool loop
        whose calls of those tools run here (webui.core.agent.api_reply)."""
        runs: list[Run] = []
        server = self.server_tools(tools)
        model = self.service.target_model()  # the request's model: a tool loop's later turns use it too
        try:
            for index in range(n):
                if server:
                    reply = ApiToolReply(
                        self.service,
                        server,
                        history,
                        settings,
                        seeded(params, index),
                        client=tools,
                        template_kwargs=template_kwargs,
                        origin=lambda: self.service.job_origin("api", request_id, model),
                    )
                    runs.append(Run(index, reply, reply, counts_prompt=index == 0, warnings=reply.warnings))
                    continue
                stream = self.service.stream_chat_reply(
                    history,
                    settings,
                    seeded(params, index),
                    tools=tools,
                    template_kwargs=template_kwargs,
                )
                runs.append(
                    Run(index, stream.job, stream, counts_prompt=index == 0, warnings=stream.warnings)
                )
        except BaseException:
            for run in runs:
                run.job.cancel()
            raise
        return runs

    def completion_runs(
        self, prompts: Sequence[str], params: GenerationParams, n: int = 1, *, echo: bool = False
    ) -> list[Run]:
        """Queue ``n`` raw completions of each prompt; choice index = prompt index * n + i."""
        runs: list[Run] = []
        try:
            for number, prompt in enumerate(prompts):
                for index in range(n):
                    stream = self.service.stream_completion(prompt, seeded(params, index))
                    runs.append(
                        Run(
                            number * n + index,
                            stream.job,
                            stream,
                            counts_prompt=index == 0,
                            # The echo is the prompt as sent, as the page keeps it (an extension's
                            # change to it is for the model only).
                            prefix=prompt if echo else "",
                            warnings=stream.warnings,
                        )
                    )
        except BaseException:
            for run in runs:
                run.job.cancel()
            raise
        return runs
