"""``/v1/internal/*``: tokens, the chat prompt without generating, model info / load / unload, the preset,
template and personality lists, and stopping the API's generations.

Everything goes through the core Service; loading and unloading need ``request.state.admin`` (set by
webui/api/auth.py), and a caller that is not an admin stops and sees the request ids of only its own key's
generations. Bad input is a 4xx in OpenAI's error shape, never a 500.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from webui.api.internal_protocol import (
    CharacterInfo,
    CharacterList,
    ChatPromptRequest,
    ChatPromptResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    LoadModelRequest,
    LoadModelResponse,
    ModelInfo,
    PresetInfo,
    PresetList,
    QueueEntry,
    QueueResponse,
    StopRequest,
    StopResponse,
    TemplateList,
    TokenCountResponse,
    TokenizeRequest,
    TokenizeResponse,
    UnloadModelResponse,
)
from webui.api.serving import Caller, find_entry
from webui.core.characters import CharacterError
from webui.core.conversation import chat_settings_for, params_for
from webui.core.loader import LoaderError
from webui.core.models import ModelNotFoundError
from webui.core.params import PARAM_NAMES, GenerationParams, describe_validation_error
from webui.core.presets import DEFAULT_PRESET, PresetError
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, EngineError, LoadedState, QueuedJob, QueueSnapshot, Service

T = TypeVar("T")

_ERROR_TYPES = {403: "permission_error", 404: "invalid_request_error", 409: "invalid_request_error"}


class InternalApiError(Exception):
    """Answered as ``status`` with OpenAI's error shape; the message is meant for the caller."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class ApiJobs:
    """The generations the API has running or queued, by request id, each with the client that started it,
    so ``POST stop`` can cancel them and the queue view can tell a caller's own jobs from others'.

    The OpenAI/Ollama routes register each job (``app.state.api_jobs.add(id, job, owner=...)``) and remove it
    when the response ends (``discard``). Page generations are never here, so stop never touches them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[Cancellable]] = {}
        self._owners: dict[str, str | None] = {}  # request id -> Caller.client of the request

    def add(self, job_id: str, job: Cancellable, owner: str | None = None) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, []).append(job)
            self._owners.setdefault(job_id, owner)

    def discard(self, job_id: str, job: Cancellable | None = None) -> None:
        """Forget ``job`` (or every job under ``job_id``)."""
        with self._lock:
            jobs = self._jobs.get(job_id, [])
            remaining = [j for j in jobs if job is not None and j is not job]
            if remaining:
                self._jobs[job_id] = remaining
            else:
                self._jobs.pop(job_id, None)
                self._owners.pop(job_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def belongs_to(self, job_id: str, caller: Caller) -> bool:
        """True when ``caller`` started the request ``job_id`` (False for one not registered here)."""
        with self._lock:
            if job_id not in self._owners:
                return False
            owner = self._owners[job_id]
        return caller.owns(owner)

    def cancel(self, job_id: str | None = None, caller: Caller | None = None) -> int:
        """Cancel one request's jobs, or all of them, of those ``caller`` may stop (None: anyone's); how many
        were cancelled."""
        with self._lock:
            named = list(self._jobs) if job_id is None else [job_id]
            ids = [
                i
                for i in named
                if i in self._jobs and (caller is None or caller.may_stop(self._owners.get(i)))
            ]
            jobs = [job for i in ids for job in self._jobs.pop(i)]
            for i in ids:
                self._owners.pop(i, None)
        for job in jobs:
            job.cancel()
        return len(jobs)


# -- translation to the core ----------------------------------------------------------------------------------


def _user_errors(fn: Callable[[], T], status: int = 400) -> T:
    """Run ``fn``; the core's user-facing errors become ``status`` (a missing model: 404)."""
    try:
        return fn()
    except EngineError as exc:
        not_found = isinstance(exc.__cause__, ModelNotFoundError)
        raise InternalApiError(404 if not_found else status, str(exc)) from exc
    except (LoaderError, PresetError, CharacterError) as exc:
        raise InternalApiError(status, str(exc)) from exc


def _listed_model(service: Service, name: str, loader: str | None) -> str:
    """The listed model a request names: never a path elsewhere on the machine (``../x.gguf``, ``/tmp/x``).
    A remote loader's models are names on its server, not files, and pass as they are."""
    if not service.uses_files(name, loader):
        return name
    entries = service.models()
    entry = find_entry(entries, name)
    if entry is None:
        listing = ", ".join(e.name for e in entries) or "none"
        raise InternalApiError(
            404, f"Model {name!r} not found. Available models: {listing}.", "model_not_found"
        )
    return entry.name


def _turns_on(value: Any) -> bool:
    """True when a loader setting's value would read as true (pydantic's rules: true, 1, "yes", "on", "t" ...)."""
    try:
        return TypeAdapter(bool).validate_python(value) is True
    except ValidationError:
        return False


def _loaded(service: Service) -> LoadedState:
    state = service.loaded
    if state is None:
        raise InternalApiError(
            409, "No model is loaded. Load one with POST /v1/internal/model/load.", "no_model"
        )
    return state


def _tokenize(service: Service, text: str) -> list[int]:
    state = _loaded(service)
    if not state.capabilities.can_tokenize:
        raise InternalApiError(400, f"The {state.loader} loader cannot tokenize with this model.")
    return _user_errors(lambda: state.model.tokenize(text))


def request_params(service: Service, preset: str | None, extras: dict[str, Any]) -> GenerationParams:
    """The preset's values with the sampler fields the request names; unknown names are refused."""
    unknown = sorted(set(extras) - PARAM_NAMES)
    if unknown:
        hints = [difflib.get_close_matches(name, sorted(PARAM_NAMES), n=1) for name in unknown]
        hint = "".join(f" (did you mean {h[0]!r}?)" for h in hints if h)
        raise InternalApiError(400, f"Unknown field(s): {', '.join(unknown)}{hint}.")
    base = _user_errors(lambda: service.presets.load(preset or DEFAULT_PRESET).params)
    try:
        return base.overlay(extras)
    except ValidationError as exc:
        raise InternalApiError(400, f"Invalid sampler parameters: {describe_validation_error(exc)}") from exc


def chat_request_settings(service: Service, body: ChatPromptRequest) -> tuple[ChatSettings, GenerationParams]:
    """What the Chat tab would use for these fields: a personality shapes the prompt as on the page, and
    explicitly given fields win."""
    extras = dict(body.model_extra or {})
    character = None
    if body.character:
        store = service.characters
        if store is None:
            raise InternalApiError(400, "Personalities are not available in this server.")
        name = body.character
        character = _user_errors(lambda: store.load(name), status=404)
    base = ChatSettings()
    settings = chat_settings_for(
        character,
        mode=body.mode,
        user_name=body.user_name,
        template=body.instruction_template,
        chat_instruct_command=body.chat_instruct_command or base.chat_instruct_command,
    )
    if body.system_message is not None:
        settings = replace(settings, system_message=body.system_message)
    if character is None and body.character_name is not None:
        settings = replace(settings, character_name=body.character_name)
    if character is None and body.context is not None:
        settings = replace(settings, context=body.context)
    params = request_params(service, body.preset, extras)
    return settings, params_for(character, params) if character is not None else params


def model_info(service: Service) -> ModelInfo:
    state = service.loaded
    if state is None:
        return ModelInfo(loaded=False)
    detection = service.detection
    return ModelInfo(
        loaded=True,
        name=state.entry.name,
        loader=state.loader,
        settings=state.settings.model_dump(mode="json"),
        context_length=state.model.facts.context_length,
        template=detection.template.name if detection else None,
        template_reason=detection.reason if detection else None,
        honoured_params=sorted(state.capabilities.honoured_params),
        can_tokenize=state.capabilities.can_tokenize,
        streams_logprobs=state.capabilities.streams_logprobs,
        load_seconds=round(state.load_seconds, 3),
    )


def queue_view(snapshot: QueueSnapshot, model: str | None, jobs: ApiJobs, caller: Caller) -> QueueResponse:
    """The queue as ``caller`` may see it: every job's place, and the request ids (what POST stop takes) of
    its own jobs only, unless it is an admin; ``mine`` marks its own."""

    def entry(job: QueuedJob) -> QueueEntry:
        mine = job.request_id is not None and jobs.belongs_to(job.request_id, caller)
        shown = job.request_id if caller.admin or mine else None
        return QueueEntry(**{**job.__dict__, "request_id": shown}, mine=mine)

    return QueueResponse(
        activity=snapshot.activity,
        model=model,
        running=entry(snapshot.running) if snapshot.running else None,
        queued=[entry(job) for job in snapshot.queued],
    )


def _require_admin(request: Request) -> None:
    if not getattr(request.state, "admin", True):
        raise InternalApiError(
            403,
            "Loading and unloading models needs an admin key (Authorization: Bearer ADMIN_KEY).",
            "admin_key_required",
        )


# -- routes ---------------------------------------------------------------------------------------------------


def install_internal_routes(app: FastAPI, service: Service) -> None:
    """Add the ``/v1/internal`` router, its error handler and ``app.state.api_jobs``."""
    if not hasattr(app.state, "api_jobs"):
        app.state.api_jobs = ApiJobs()
    jobs: ApiJobs = app.state.api_jobs
    router = APIRouter(prefix="/v1/internal", tags=["internal"])

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InternalApiError)
        return _error_response(exc)

    app.add_exception_handler(InternalApiError, on_error)

    # Plain ``def`` handlers: FastAPI runs them in its thread pool, so a tokenizer or a load never blocks
    # the event loop (and with it the page).
    @router.post("/tokenize", response_model=TokenizeResponse)
    def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        tokens = _tokenize(service, body.text)
        return TokenizeResponse(tokens=tokens, count=len(tokens))

    @router.post("/detokenize", response_model=DetokenizeResponse)
    def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        state = _loaded(service)
        try:
            text = _user_errors(lambda: state.model.detokenize(list(body.tokens)))
        except (ValueError, IndexError, OverflowError, TypeError) as exc:
            raise InternalApiError(400, f"These token ids are not in the model's vocabulary: {exc}") from exc
        return DetokenizeResponse(text=text)

    @router.post("/token-count", response_model=TokenCountResponse)
    def token_count(body: TokenizeRequest) -> TokenCountResponse:
        return TokenCountResponse(count=len(_tokenize(service, body.text)))

    @router.post("/chat-prompt", response_model=ChatPromptResponse)
    def chat_prompt(body: ChatPromptRequest) -> ChatPromptResponse:
        _loaded(service)
        settings, params = chat_request_settings(service, body)
        history = [ChatMessage(m.role, m.text()) for m in body.messages]
        built = _user_errors(
            lambda: service.build_chat_prompt(
                history, settings, params, continue_last=body.continue_last, impersonate=body.impersonate
            )
        )
        template = None
        if settings.mode != "chat":
            chosen = _user_errors(lambda: service.template_for(settings))
            template = chosen.name if chosen is not None else None
        return ChatPromptResponse(
            prompt=built.text,
            prompt_tokens=built.prompt_tokens,
            dropped_messages=built.dropped_messages,
            stop_strings=list(built.stop_strings),
            template=template,
            extensions=list(service.extensions.enabled),
            warnings=list(built.warnings),
        )

    @router.get("/model", response_model=ModelInfo)
    def get_model() -> ModelInfo:
        return model_info(service)

    @router.post("/model/load", response_model=LoadModelResponse)
    def load_model(body: LoadModelRequest, request: Request) -> LoadModelResponse:
        _require_admin(request)
        if _turns_on(body.settings.get("trust_remote_code")):
            # Running code from a model folder is the user's decision at the machine, never a client's.
            raise InternalApiError(
                403,
                "trust_remote_code cannot be turned on through the API: it runs code from the model's folder. "
                "Turn it on in the page's Model tab or with `webui serve --setting trust_remote_code=true`.",
                "trust_remote_code_refused",
            )
        report = _user_errors(
            lambda: service.load_model(
                _listed_model(service, body.model, body.loader),
                body.loader,
                body.settings,
                body.instruction_template,
                insist=body.force,
            )
        )
        return LoadModelResponse(**model_info(service).model_dump(), message=report.message)

    @router.post("/model/unload", response_model=UnloadModelResponse)
    def unload_model(request: Request) -> UnloadModelResponse:
        _require_admin(request)
        state = service.loaded
        _user_errors(service.unload_model)
        return UnloadModelResponse(unloaded=state.entry.name if state else None)

    @router.get("/presets", response_model=PresetList)
    def presets() -> PresetList:
        items = []
        for name in service.presets.names():
            user = service.presets.is_user_preset(name)
            try:
                items.append(PresetInfo(name=name, user=user, settings=service.presets.load(name).overlay))
            except PresetError as exc:  # one broken file must not hide the others
                items.append(PresetInfo(name=name, user=user, settings={}, error=str(exc)))
        return PresetList(presets=items)

    @router.get("/templates", response_model=TemplateList)
    def templates() -> TemplateList:
        # An idle unload frees the model without the Service forgetting its last detection.
        detection = service.detection if service.loaded is not None else None
        return TemplateList(
            templates=service.templates.names(), detected=detection.template.name if detection else None
        )

    @router.get("/characters", response_model=CharacterList)
    def characters() -> CharacterList:
        store = service.characters
        names = store.names() if store is not None else []
        return CharacterList(
            characters=[
                CharacterInfo(name=n, user=store.is_user_character(n)) for n in names if store is not None
            ]
        )

    @router.get("/queue", response_model=QueueResponse)
    def engine_queue(request: Request) -> QueueResponse:
        """The running generation and the waiting ones, in order; request ids of the caller's own jobs
        (every job's for an admin)."""
        state = service.loaded
        model = state.entry.name if state else None
        return queue_view(service.queue_snapshot(), model, jobs, Caller.of(request.state))

    @router.post("/stop", response_model=StopResponse)
    def stop(request: Request, body: StopRequest | None = None) -> StopResponse:
        """Cancel the caller's API generations (an admin's: anyone's); another client's id counts 0, as an
        unknown one does, so that nobody learns which ids exist."""
        return StopResponse(cancelled=jobs.cancel(body.id if body else None, Caller.of(request.state)))

    app.include_router(router)


def _error_response(exc: InternalApiError) -> JSONResponse:
    error_type = _ERROR_TYPES.get(exc.status, "invalid_request_error")
    body = {"error": {"message": exc.message, "type": error_type, "param": None, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status)
