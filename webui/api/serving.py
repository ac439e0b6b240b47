"""Translation between the HTTP API and the core: models by name (loaded just in time), requests ->
GenerationParams and ChatSettings, and generations followed off the event loop, cancelled when the client goes.

Nothing here computes a prompt or a sampler value: the prompt comes from Service.build_chat_prompt (through
stream_chat_reply), the sampler values from a preset, a personality and the request's fields, validated by
GenerationParams. No fastapi import: routes turn ApiError into their protocol's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from webui.core import grammar
from webui.core.characters import Character, CharacterError
from webui.core.conversation import chat_settings_for, params_for
from webui.core.idle import IdleUnloader
from webui.core.loader import Chunk, GenerationStats
from webui.core.models import ModelEntry
from webui.core.params import PARAM_NAMES, GenerationParams
from webui.core.presets import DEFAULT_PRESET, PresetError
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import ChatSettings, EngineError, GenerationJob, LoadedState, QueueFull, Service
from webui.core.templates import InstructionTemplate, TemplateError

DEFAULT_MODEL_NAMES = frozenset(["", "default"])
POLL_S = 0.25  # how often a waiting request checks whether its client is still there
_SEED_LIMIT = 2**32


class ApiError(Exception):
    """A request the API refuses; routes render it in OpenAI's or Ollama's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})  # e.g. Retry-After on a 429

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the auth middleware (webui/api/auth.py) saw it: which key, and whether it is an
    admin's. Without the middleware, or with no admin key configured, every caller is an admin."""

    client: str | None = None  # a digest prefix of the request's key; None without a key
    admin: bool = True

    @classmethod
    def of(cls, state: object) -> Caller:
        """The caller a ``request.state`` describes."""
        return cls(getattr(state, "client", None), bool(getattr(state, "admin", True)))

    def owns(self, owner: str | None) -> bool:
        """True when a job started by ``owner`` is this caller's; callers without a key count as one client,
        as nothing tells them apart."""
        if owner is None or self.client is None:
            return owner is None and self.client is None
        # The id is derived from a key: compared as one, in constant time.
        return hmac.compare_digest(owner, self.client)

    def may_stop(self, owner: str | None) -> bool:
        """An admin stops anyone's generations; any other caller only its own."""
        return self.admin or self.owns(owner)


def api_error(exc: BaseException) -> ApiError:
    """Any failure as an ApiError: the core's refusals are the client's fault (400), the rest is ours (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFull):
        return queue_full_error(exc)
    if isinstance(exc, EngineError):
        return ApiError(400, str(exc))
    return ApiError(500, f"Internal error: {exc}", kind="server_error")


def queue_full_error(exc: QueueFull) -> ApiError:
    """429 with Retry-After: the queue is full now, the same request will be taken a little later."""
    return ApiError(
        429,
        str(exc),
        kind="requests",  # OpenAI's type and code for a rate limit, which clients know to retry
        code="rate_limit_exceeded",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


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


# -- generations ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One generation the API started (one choice): ``chunks`` streams it, ``job`` holds its stats."""

    index: int
    job: GenerationJob
    chunks: Iterable[Chunk]
    counts_prompt: bool = True  # False for the 2nd..nth choice of one prompt: OpenAI counts a prompt once
    prefix: str = ""  # text shown before the generated text (a completion's echoed prompt)
    # The extensions' errors for this choice (the reply's or completion's list, which grows as it streams).
    warnings: list[str] = field(default_factory=list)

    @property
    def stats(self) -> GenerationStats | None:
        return self.job.stats


@dataclass
class Started:
    """The runs of one request, on which model, and how long loading that model took."""

    runs: list[Run]
    model: str
    load_seconds: float = 0.0
    started_at: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        """Stop every run of this request (finished runs are unaffected)."""
        for run in self.runs:
            run.job.cancel()

    def warnings(self) -> list[str]:
        """The extensions' errors of every run, each once (shown to API clients as ``palabre_warnings``)."""
        return list(dict.fromkeys(warning for run in self.runs for warning in run.warnings))

    def usage(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) as the loader counted them."""
        prompt = sum(run.stats.prompt_tokens for run in self.runs if run.stats and run.counts_prompt)
        completion = sum(run.stats.new_tokens for run in self.runs if run.stats)
        return prompt, completion


def public_finish_reason(reason: str | None) -> str:
    """The engine's finish reason as OpenAI and Ollama name it ("cancelled" only reaches a gone client)."""
    return "length" if reason == "length" else "stop"


WARNINGS_FIELD = "palabre_warnings"
WARNINGS_HEADER = "X-Palabre-Warnings"


def warnings_body(warnings: Sequence[str]) -> dict[str, list[str]]:
    """The extensions' errors as an extra top-level field (clients of OpenAI / Ollama ignore unknown
    fields); nothing when there are none, so a clean answer has exactly the upstream shape."""
    return {WARNINGS_FIELD: list(warnings)} if warnings else {}


def warnings_headers(warnings: Sequence[str]) -> dict[str, str]:
    """The same errors as a response header: a JSON list, ASCII-escaped (header values are latin-1)."""
    return {WARNINGS_HEADER: json.dumps(list(warnings))} if warnings else {}


async def follow(
    started: Started, disconnected: Callable[[], Awaitable[bool]], poll_s: float = POLL_S
) -> AsyncIterator[tuple[Run, Chunk]]:
    """The chunks of every run in order, read on a thread of their own so the event loop never blocks.

    When the client goes away (checked every ``poll_s``, also while queued) or the reader stops early,
    the request's jobs are cancelled at once, which frees the engine for the next request.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Run, Chunk] | BaseException | None] = asyncio.Queue()

    def put(item: tuple[Run, Chunk] | BaseException | None) -> None:
        # RuntimeError: the event loop is gone (server shutting down), nobody reads any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        try:
            for run in started.runs:
                for chunk in run.chunks:
                    put((run, chunk))
        except BaseException as exc:
            put(exc)
        finally:
            put(None)

    threading.Thread(target=pump, name="palabre-api-reader", daemon=True).start()
    finished = False
    last_check = time.monotonic()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), poll_s)
            except TimeoutError:
                item = False  # type: ignore[assignment]
            if time.monotonic() - last_check >= poll_s or item is False:
                last_check = time.monotonic()
                if await disconnected():
                    return
            if item is False:
                continue
            if item is None:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise api_error(item) from item
            yield item
    finally:
        if not finished:
            started.cancel()


# -- requests -> params --------------------------------------------------------------------------------------


def load_character(service: Service, name: str | None) -> Character | None:
    if not name:
        return None
    if service.characters is None:
        raise ApiError(400, "Personalities are not available on this server.", param="character")
    try:
        return service.characters.load(name)
    except CharacterError as exc:
        raise ApiError(404, str(exc), param="character", code="character_not_found") from exc


def base_params(service: Service, preset: str | None, character: Character | None) -> GenerationParams:
    """The preset (Default unless named) with the personality's own sampler settings on top."""
    try:
        params = service.presets.load(preset or DEFAULT_PRESET).params
    except PresetError as exc:
        raise ApiError(400, str(exc), param="preset", code="preset_not_found") from exc
    try:
        return params_for(character, params)
    except ValidationError as exc:
        raise ApiError(400, f"The personality's sampler settings are invalid: {exc}") from exc


def apply_overrides(
    base: GenerationParams, overrides: Mapping[str, Any], sources: Mapping[str, str] | None = None
) -> GenerationParams:
    """``base`` with the request's values; a bad value is a 400 naming the request's own field."""
    try:
        return base.overlay(dict(overrides))
    except ValidationError as exc:
        problems = []
        first: str | None = None
        for item in exc.errors():
            target = str(item["loc"][0]) if item["loc"] else ""
            name = (sources or {}).get(target, target)
            first = first or name
            problems.append(f"{name}: {item['msg']}")
        raise ApiError(400, "Invalid parameter " + "; ".join(problems), param=first) from exc


def sampler_extras(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's extra keys that are GenerationParams fields (unknown keys are ignored, as OpenAI's
    clients send fields of their own; ``null`` means not given, as for OpenAI's own fields)."""
    return {key: value for key, value in (extra or {}).items() if key in PARAM_NAMES and value is not None}


def seeded(params: GenerationParams, index: int) -> GenerationParams:
    """The ``index``-th of n choices: a fixed seed is moved on so the choices differ but stay reproducible."""
    if index == 0 or params.seed < 0:
        return params
    return params.overlay({"seed": (params.seed + index) % _SEED_LIMIT})


def json_grammar(schema: Mapping[str, Any] | None) -> str:
    """A GBNF grammar for replies that are a JSON object, following ``schema`` when one is given; a schema
    that cannot be converted is a 400 naming ``response_format``."""
    try:
        return grammar.json_grammar(schema)
    except grammar.GrammarError as exc:
        raise ApiError(400, str(exc), param="response_format") from exc


def check_supported(state: LoadedState, *, grammar: bool, logprobs: bool, grammar_param: str) -> None:
    """400 for what the loaded model's loader cannot do."""
    capabilities = state.capabilities
    if grammar and "grammar" not in capabilities.honoured_params:
        raise ApiError(
            400,
            f"The {state.loader} loader cannot constrain replies with a grammar, so {grammar_param} "
            "cannot be honoured.",
            param=grammar_param,
        )
    if logprobs and not capabilities.streams_logprobs:
        raise ApiError(400, f"logprobs are not supported by this loader ({state.loader}).", param="logprobs")


# -- chat requests -------------------------------------------------------------------------------------------

_ROLES: dict[str, str] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_message(role: str, content: str | Sequence[Mapping[str, Any]] | None) -> ChatMessage:
    """One API message as the core's ChatMessage; text parts are joined, other parts are refused."""
    if role in ("tool", "function", "ipython"):
        raise ApiError(400, f"Messages with role {role!r} (tool calls) are not supported.", param="messages")
    if role not in _ROLES:
        roles = ", ".join(_ROLES)
        raise ApiError(400, f"Messages with role {role!r} are not supported; use {roles}.", param="messages")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for part in content:
            if part.get("type") != "text":
                raise ApiError(
                    400,
                    f"Message parts of type {part.get('type')!r} are not supported; send text.",
                    param="messages",
                )
            texts.append(str(part.get("text") or ""))
        text = "\n".join(texts)
    return ChatMessage(_ROLES[role], text)  # type: ignore[arg-type]


def chat_settings(
    service: Service,
    *,
    mode: Mode,
    character: Character | None,
    template: str | InstructionTemplate | None,
    user_name: str | None = None,
) -> ChatSettings:
    """How the conversation becomes a prompt; an unknown template name is a 400 here, not at build time."""
    if isinstance(template, str):
        try:
            service.templates.get(template)
        except TemplateError as exc:
            raise ApiError(400, str(exc), param="instruction_template") from exc
    name = template if isinstance(template, str) else None
    settings = chat_settings_for(character, mode=mode, user_name=user_name, template=name)
    if isinstance(template, InstructionTemplate):
        settings = ChatSettings(**{**settings.__dict__, "template": template})
    return settings


# -- the API's view of the service ---------------------------------------------------------------------------


class Serving:
    """Models by name and the start of generations, for every API route of one server."""

    def __init__(self, service: Service, idle_unload_s: float | None = None) -> None:
        self.service = service
        # Held while a request makes sure of its model and queues its jobs, so that another request's
        # just-in-time load (or an idle unload) cannot slip between the two.
        self._switch = threading.Lock()
        # Started by the server (create_app), stopped when it shuts down.
        self.idle = IdleUnloader(self._unload_if_idle, self._idle_seconds, idle_unload_s)

    def _idle_seconds(self) -> float | None:
        return self.service.idle_seconds()

    def _unload_if_idle(self, idle_s: float) -> bool:
        with self._switch:
            return self.service.unload_if_idle(idle_s)

    def entries(self) -> list[ModelEntry]:
        return self.service.models()

    def loaded(self) -> LoadedState | None:
        return self.service.loaded

    def find(self, name: str) -> ModelEntry:
        """The model a request names (the loaded one for an empty name); 404 when there is none."""
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
        if state is not None and (
            _normalize(name) in aliases(state.entry) or _normalize(name) == state.model.facts.name.lower()
        ):
            return state.entry
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

    def _ensure(self, name: str, admin: bool) -> tuple[LoadedState, float]:
        entry = self.find(name)
        state = self.loaded()
        if state is not None and state.entry == entry:
            return state, 0.0
        # The model the idle watcher unloaded comes back for anyone allowed to use it, as it was loaded:
        # the unload was the server's own doing, not a switch made by a client.
        try:
            resumed = self.service.resume_idle_model(entry.name)
        except EngineError as exc:
            raise ApiError(500, f"Could not load {entry.name}: {exc}", kind="server_error") from exc
        if resumed is not None:
            return resumed.state, resumed.state.load_seconds
        if not admin:
            current = f" (loaded: {state.entry.name})" if state else ""
            raise ApiError(
                403,
                f"Loading the model {entry.name!r} needs an admin key{current}.",
                kind="permission_error",
                param="model",
                code="admin_required",
            )
        try:
            report = self.service.load_model(entry.name)
        except EngineError as exc:
            raise ApiError(500, f"Could not load {entry.name}: {exc}", kind="server_error") from exc
        return report.state, report.state.load_seconds

    def start(
        self,
        model: str,
        admin: bool,
        submit: Callable[[LoadedState], list[Run]],
        request_id: str | None = None,
    ) -> Started:
        """Make sure ``model`` is loaded (loading it if allowed), then queue the runs ``submit`` makes,
        labelled in the engine's queue as the API's, under ``request_id``.

        Blocking (a load takes seconds): call it from a worker thread.
        """
        # keep_alive is per request, as in Ollama: an earlier request's 0 must not unload the model under
        # this one as soon as its reply is done (Ollama's routes set their request's own value once started).
        self.idle.keep_alive(None)
        with self._switch:
            state, load_seconds = self._ensure(model, admin)
            try:
                with self.service.job_origin("api", request_id):
                    runs = submit(state)
            except QueueFull as exc:
                raise queue_full_error(exc) from exc
            except EngineError as exc:
                raise ApiError(400, str(exc)) from exc
        return Started(runs, state.entry.name, load_seconds)

    def chat_runs(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        n: int = 1,
    ) -> list[Run]:
        """Queue ``n`` replies to ``history`` (on the loaded model)."""
        runs: list[Run] = []
        try:
            for index in range(n):
                stream = self.service.stream_chat_reply(history, settings, seeded(params, index))
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
