"""The internal endpoints (``/v1/internal/*``) over the serving base: tokens, the chat prompt without
generating, model info / load / unload, the preset, template and personality lists, the queue and stopping the
API's generations. Each method returns a response model.

Everything goes through the core Service; loading and unloading need an admin caller, and a caller that is not
an admin stops and sees the request ids of only its own key's generations. Bad input is an InternalApiError
(a 4xx in OpenAI's error shape), never a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from webui.api.errors import ApiError, InternalApiError, user_errors
from webui.api.internal_protocol import (
    CharacterInfo,
    CharacterList,
    ChatPromptRequest,
    ChatPromptResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    LoadedModelInfo,
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
from webui.api.jobs import ApiJobs, Caller
from webui.api.serving import Serving, find_entry, sees
from webui.core.model_lane import slots_of
from webui.core.presets import PresetError
from webui.core.service import LoadedState, QueuedJob, QueueSnapshot, Service


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
    return user_errors(lambda: state.model.tokenize(text))


def loaded_models(service: Service) -> dict[str, Any]:
    """Every loaded model with its memory, the budget, and the load and eviction counts."""
    status = service.engine_status()
    models = []
    for entry in status.models:
        state = service.loaded_model(entry.name)
        detection = service.detection_of(entry.name)
        models.append(
            LoadedModelInfo(
                name=entry.name,
                loader=entry.loader,
                page=entry.page,
                activity=entry.activity,
                memory_bytes=entry.memory_bytes,
                gpu_bytes=entry.gpu_bytes,
                context_length=state.model.facts.context_length if state is not None else None,
                slots=slots_of(state),
                template=detection.template.name if detection else None,
            )
        )
    models.sort(key=lambda model: not model.page)
    return {
        "models": models,
        "memory_budget_bytes": service.memory_budget(),
        "loads": status.loads,
        "evictions": status.evictions,
    }


def model_info(service: Service) -> ModelInfo:
    state = service.loaded
    if state is None:
        return ModelInfo(loaded=False, **loaded_models(service))
    detection = service.detection
    return ModelInfo(
        **loaded_models(service),
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
        sees_images=sees(state.model),
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
        running_jobs=[entry(job) for job in snapshot.running_jobs],
        queued=[entry(job) for job in snapshot.queued],
    )


def _require_admin(caller: Caller) -> None:
    if not caller.admin:
        raise InternalApiError(
            403,
            "Loading and unloading models needs an admin key (Authorization: Bearer ADMIN_KEY).",
            "admin_key_required",
        )


class InternalServing:
    """The ``/v1/internal`` endpoints through ``serving``: its Service, and its registry of API requests."""

    def __init__(self, serving: Serving) -> None:
        self.service = serving.service
        self.jobs = serving.jobs
        self.images = serving.images  # where a chat-prompt request's image URLs may be read from

    def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        tokens = _tokenize(self.service, body.text)
        return TokenizeResponse(tokens=tokens, count=len(tokens))

    def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        state = _loaded(self.service)
        try:
            text = user_errors(lambda: state.model.detokenize(list(body.tokens)))
        except (ValueError, IndexError, OverflowError, TypeError) as exc:
            raise InternalApiError(400, f"These token ids are not in the model's vocabulary: {exc}") from exc
        return DetokenizeResponse(text=text)

    def token_count(self, body: TokenizeRequest) -> TokenCountResponse:
        return TokenCountResponse(count=len(_tokenize(self.service, body.text)))

    def chat_prompt(self, body: ChatPromptRequest) -> ChatPromptResponse:
        """The prompt a chat request would be given, without generating."""
        service = self.service
        _loaded(service)
        try:
            request = body.to_chat_request(service, self.images)
        except InternalApiError:
            raise
        except ApiError as exc:  # a bad image part, too many images: the same 400, in this router's shape
            raise InternalApiError(exc.status, exc.message, code=exc.code) from exc
        settings = request.settings
        built = user_errors(
            lambda: service.build_chat_prompt(
                request.history,
                settings,
                request.params,
                continue_last=body.continue_last,
                impersonate=body.impersonate,
            )
        )
        template = None
        if settings.mode != "chat":
            chosen = user_errors(lambda: service.template_for(settings))
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

    def model_info(self) -> ModelInfo:
        return model_info(self.service)

    def load_model(self, body: LoadModelRequest, caller: Caller) -> LoadModelResponse:
        _require_admin(caller)
        if _turns_on(body.settings.get("trust_remote_code")):
            # Running code from a model folder is the user's decision at the machine, never a client's.
            raise InternalApiError(
                403,
                "trust_remote_code cannot be turned on through the API: it runs code from the model's folder. "
                "Turn it on in the page's Model tab or with `webui serve --setting trust_remote_code=true`.",
                "trust_remote_code_refused",
            )
        service = self.service
        report = user_errors(
            lambda: service.load_model(
                _listed_model(service, body.model, body.loader),
                body.loader,
                body.settings,
                body.instruction_template,
                insist=body.force,
            )
        )
        return LoadModelResponse(**model_info(service).model_dump(), message=report.message)

    def unload_model(self, caller: Caller, model: str | None = None) -> UnloadModelResponse:
        """Unload ``model`` (default: the page's model); the other loaded models stay."""
        _require_admin(caller)
        service = self.service
        if model is not None:
            name = _listed_model(service, model, None)
            state = service.loaded_model(name)
            if state is None:
                return UnloadModelResponse(unloaded=None)
            user_errors(lambda: service.unload_model(name))
            return UnloadModelResponse(unloaded=name)
        state = service.loaded
        user_errors(service.unload_model)
        return UnloadModelResponse(unloaded=state.entry.name if state else None)

    def presets(self) -> PresetList:
        store = self.service.presets
        items = []
        for name in store.names():
            user = store.is_user_preset(name)
            try:
                items.append(PresetInfo(name=name, user=user, settings=store.load(name).overlay))
            except PresetError as exc:  # one broken file must not hide the others
                items.append(PresetInfo(name=name, user=user, settings={}, error=str(exc)))
        return PresetList(presets=items)

    def templates(self) -> TemplateList:
        # An idle unload frees the model without the Service forgetting its last detection.
        detection = self.service.detection if self.service.loaded is not None else None
        return TemplateList(
            templates=self.service.templates.names(), detected=detection.template.name if detection else None
        )

    def characters(self) -> CharacterList:
        store = self.service.characters
        names = store.names() if store is not None else []
        return CharacterList(
            characters=[
                CharacterInfo(name=n, user=store.is_user_character(n)) for n in names if store is not None
            ]
        )

    def queue(self, caller: Caller) -> QueueResponse:
        state = self.service.loaded
        model = state.entry.name if state else None
        return queue_view(self.service.queue_snapshot(), model, self.jobs, caller)

    def stop(self, body: StopRequest | None, caller: Caller) -> StopResponse:
        return StopResponse(cancelled=self.jobs.cancel(body.id if body else None, caller))
