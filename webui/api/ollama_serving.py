"""Ollama's endpoints over the serving base: each method returns a body, or an async stream of Ollama's
events (the router frames them as NDJSON; the last has ``done: true``, ``done_reason`` and the counts and
durations in nanoseconds).

As in Ollama, the reasoning streams as ``thinking`` in events of its own before the answer's, and each tool
call comes whole (its arguments an object) once the model has written it; a reply that called tools ends
with ``done_reason: "stop"``."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from anyio import to_thread

from webui import __version__
from webui.api import ollama_models
from webui.api.errors import ApiError
from webui.api.logprob_shapes import tokens_out
from webui.api.ollama_protocol import (
    OLLAMA_VERSION,
    ChatRequest,
    GenerateRequest,
    OllamaRequest,
    ShowRequest,
    allowed_keep_alive,
    unloads,
)
from webui.api.serving import RequestContext, Serving
from webui.api.streams import (
    AssembledCall,
    EventStream,
    Piece,
    Reply,
    ReplyParts,
    Started,
    ToolCallAssembly,
    new_call_id,
    public_finish_reason,
    warnings_body,
)
from webui.core.service import EngineError
from webui.core.templates.store import TemplateError

NS = 1_000_000_000
OllamaEvent = dict[str, Any]


class Shape(Protocol):
    """Shapes a reply's parts (or deltas) as the endpoint's own fields: /api/generate's ``response`` and
    ``thinking``, /api/chat's ``message``."""

    def __call__(
        self, text: str, thinking: str = "", calls: Sequence[OllamaEvent] = ()
    ) -> dict[str, Any]: ...


def generate_shape(text: str, thinking: str = "", calls: Sequence[OllamaEvent] = ()) -> dict[str, Any]:
    return {"response": text, **({"thinking": thinking} if thinking else {})}


def chat_shape(text: str, thinking: str = "", calls: Sequence[OllamaEvent] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = list(calls)
    return {"message": message}


def ollama_call(index: int, call: AssembledCall) -> OllamaEvent:
    """A whole tool call in Ollama's shape: the arguments as an object (the text, should it not be JSON)."""
    return {
        "id": call.id,
        "function": {"index": index, "name": call.name, "arguments": call.arguments_value()},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def stats_fields(started: Started) -> dict[str, Any]:
    """Ollama's counts and durations (ns) for the request's one run."""
    run = started.runs[0] if started.runs else None
    stats = run.stats if run else None
    load_ns = int(started.load_seconds * NS)
    fields: dict[str, Any] = {
        "total_duration": int((time.perf_counter() - started.started_at) * NS) + load_ns,
        "load_duration": load_ns,
    }
    if stats is not None:
        fields.update(
            prompt_eval_count=stats.prompt_tokens,
            prompt_eval_duration=int(stats.time_to_first_token_s * NS),
            eval_count=stats.new_tokens,
            eval_duration=int(max(stats.total_s - stats.time_to_first_token_s, 0.0) * NS),
        )
    return fields


class _Answer:
    """How one request's generation is answered in Ollama's shapes: whole, or one event a delta.

    ``thinking``: whether the reasoning is sent (not when the request turned thinking off)."""

    def __init__(self, started: Started, shape: Shape, *, thinking: bool = True) -> None:
        self.started = started
        self.shape = shape
        self.thinking = thinking
        runs = started.runs
        self.logprobs = bool(runs) and runs[0].job.params.logprobs >= 0  # the request asked for them

    def _final(self, text: str, thinking: str = "", calls: Sequence[OllamaEvent] = ()) -> OllamaEvent:
        return {
            "model": self.started.model,
            "created_at": _now(),
            **self.shape(text, thinking, calls),
            "done": True,
            "done_reason": public_finish_reason(self.started.runs[0].job.finish_reason, tool_calls=False),
            **stats_fields(self.started),
        }

    def _event(self, text: str, thinking: str = "", calls: Sequence[OllamaEvent] = ()) -> OllamaEvent:
        return {
            "model": self.started.model,
            "created_at": _now(),
            **self.shape(text, thinking, calls),
            "done": False,
        }

    def whole(self, replies: dict[int, ReplyParts]) -> Reply:
        reply = replies[self.started.runs[0].index]
        calls = [ollama_call(index, call) for index, call in enumerate(reply.calls)]
        final = self._final(reply.text, reply.reasoning if self.thinking else "", calls)
        if self.logprobs:
            final["logprobs"] = tokens_out(reply.logprobs)
        # The extensions' errors are complete once the reply is done.
        return Reply(final, self.started.warnings())

    async def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[OllamaEvent]:
        assembly = ToolCallAssembly(new_call_id)
        sent = 0  # the calls sent so far: each goes once the next one begins, or the reply ends

        def written() -> list[OllamaEvent]:
            nonlocal sent
            done = len(assembly.calls) - 1  # the last call may still be writing its arguments
            calls = [ollama_call(index, assembly.calls[index]) for index in range(sent, done)]
            sent = max(sent, done)
            return calls

        async for _run, chunk in pieces:
            events: list[OllamaEvent] = []
            if chunk.reasoning and self.thinking:
                events.append(self._event("", chunk.reasoning))
            if chunk.text:
                events.append(self._event(chunk.text))
            for delta in chunk.tool_calls:
                assembly.add(delta)
            calls = written()
            if calls:
                events.append(self._event("", calls=calls))
            if self.logprobs and chunk.logprobs:
                # The chunk's tokens go with its first event (alone when it has none: markup read away).
                events = events or [self._event("")]
                events[0]["logprobs"] = tokens_out(chunk.logprobs)
            for event in events:
                yield event
        rest = [ollama_call(index, assembly.calls[index]) for index in range(sent, len(assembly.calls))]
        if rest:
            yield self._event("", calls=rest)
        yield self._final("") | warnings_body(self.started.warnings())


class OllamaServing:
    """/api/version, /api/tags, /api/ps, /api/show, /api/generate and /api/chat through ``serving``."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.service = serving.service

    def version(self) -> dict[str, str]:
        return {"version": OLLAMA_VERSION, "palabre": __version__}

    def tags(self) -> dict[str, Any]:
        return {"models": [ollama_models.tag(entry) for entry in self.serving.entries()]}

    def ps(self) -> dict[str, Any]:
        return {"models": ollama_models.running_models(self.serving)}

    def show(self, body: ShowRequest) -> dict[str, Any]:
        name = body.model or body.name
        if not name:
            raise ApiError(400, "model is required.", param="model")
        try:
            entry = self.serving.find(name)
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, f"model '{name}' not found") from exc
            raise
        page = self.serving.loaded()
        # The model itself when it is loaded (beside the page's model, too): it can say whether it sees.
        loaded = next((state for state in self.service.engine.loaded() if state.entry == entry), None)
        abilities = None
        if loaded is not None and page is not None and page.entry == entry:
            try:
                abilities = self.service.abilities()
            except TemplateError:
                abilities = None  # a template chosen at load that is gone since: judged as none
        return ollama_models.show(entry, loaded, abilities)

    async def generate(
        self, body: GenerateRequest, context: RequestContext
    ) -> Reply | EventStream[OllamaEvent]:
        """Complete ``prompt``; an empty prompt loads the model (or unloads it with keep_alive 0)."""
        body.refuse_unsupported()
        admin = context.caller.admin

        def start(request_id: str) -> Started | str:
            if not body.prompt and not body.images:
                return self._load_or_unload(body.model, body.keep_alive, admin)
            return self.serving.start_request(
                body.model, admin, body.to_core_request(self.service), request_id
            )

        return await self._answer(body, context, start, generate_shape)

    async def chat(self, body: ChatRequest, context: RequestContext) -> Reply | EventStream[OllamaEvent]:
        """Reply to ``messages``; no messages loads the model (or unloads it with keep_alive 0)."""
        admin = context.caller.admin

        def start(request_id: str) -> Started | str:
            history = body.history()  # off the event loop: images are decoded here
            if not history:
                return self._load_or_unload(body.model, body.keep_alive, admin)
            request = body.to_chat_request(self.service, history)
            return self.serving.start_request(body.model, admin, request, request_id)

        return await self._answer(body, context, start, chat_shape)

    async def _answer(
        self,
        body: OllamaRequest,
        context: RequestContext,
        start: Callable[[str], Started | str],
        shape: Shape,
    ) -> Reply | EventStream[OllamaEvent]:
        """Run ``start`` off the event loop, then answer whole or streamed; ``shape`` shapes a delta."""
        # Refused (403 for a non-admin, 400 for a bad value) before anything starts or loads.
        keep_alive = allowed_keep_alive(body.keep_alive, context.caller.admin)
        request_id = f"ollama-{uuid.uuid4().hex[:24]}"
        outcome = await to_thread.run_sync(start, request_id)
        if outcome != "unload":
            self.serving.keep_alive(body.model, keep_alive)  # this model's idle time after it, as Ollama
        if isinstance(outcome, str):  # a load or an unload, no generation (Ollama's empty prompt)
            done = {
                "model": body.model,
                "created_at": _now(),
                **shape(""),
                "done": True,
                "done_reason": outcome,
            }
            return Reply(done)
        generation = self.serving.follow(outcome, context, request_id)
        answer = _Answer(outcome, shape, thinking=body.shows_thinking)
        return await generation.answer(
            stream=body.stream, reply=answer.whole, events=answer.events, error=ApiError.ollama_body
        )

    def _load_or_unload(self, model: str, keep_alive: float | str | None, admin: bool) -> str:
        """Ollama's empty request: load the model (another one only for an admin), or unload it when
        keep_alive is 0 (only an admin: _answer refuses anybody else's keep_alive first)."""
        if unloads(keep_alive):
            entry = self.serving.find(model)
            if self.service.loaded_model(entry.name) is not None:  # only the named model goes
                if not admin:  # unreachable through _answer; kept so that no other caller can unload
                    raise ApiError(403, "Unloading the model needs an admin key.", kind="permission_error")
                try:
                    self.serving.unload(entry)
                except EngineError as exc:
                    raise ApiError(500, str(exc), kind="server_error") from exc
            return "unload"
        self.serving.start(model, admin, lambda state: [])
        return "load"
