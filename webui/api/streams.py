"""A request's generations as the API follows them: the runs it started, their chunks read off the event loop
(cancelled when the client goes), and the one skeleton every protocol answers with: a whole reply, or a stream
of protocol events whose first chunk was awaited before answering.

No fastapi import: the routers turn a Reply into JSON and a stream into SSE or NDJSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from webui.api.errors import ApiError, api_error
from webui.core.agent.api_reply import ApiToolReply
from webui.core.loader import Chunk, FinishReason, GenerationStats, TokenLogprob, ToolCallDelta
from webui.core.params import GenerationParams

POLL_S = 0.25  # how often a waiting request checks whether its client is still there
WARNINGS_FIELD = "palabre_warnings"
# The server's own tool calls of a reply (the page's tools, run for the client): an extra field clients ignore.
TOOL_STEPS_FIELD = "palabre_tool_steps"
WARNINGS_HEADER = "X-Palabre-Warnings"

Event = TypeVar("Event")
Piece = tuple["Run", Chunk]
# What a serving method streams: protocol events, which the router frames as SSE or NDJSON.
EventStream = AsyncGenerator[Event, None]


class RunJob(Protocol):
    """What the API reads of a run's generation: an engine GenerationJob, or a reply that may use the
    server's tools (webui.core.agent.api_reply.ApiToolReply: several generations, counted as one)."""

    @property
    def finish_reason(self) -> FinishReason | None: ...

    @property
    def stats(self) -> GenerationStats | None: ...

    @property
    def stop_string(self) -> str | None: ...

    @property
    def params(self) -> GenerationParams: ...

    def cancel(self) -> None: ...


@dataclass
class Run:
    """One generation the API started (one choice): ``chunks`` streams it, ``job`` holds its stats."""

    index: int
    job: RunJob
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

    def cached_prompt_tokens(self) -> int:
        """Prompt tokens the loader reused from its cache (of those ``usage`` counts)."""
        reused = sum(run.stats.reused_prompt_tokens for run in self.runs if run.stats and run.counts_prompt)
        return min(reused, self.usage()[0])


def public_finish_reason(reason: str | None, *, tool_calls: bool = True) -> str:
    """The engine's finish reason as OpenAI names it ("cancelled" only reaches a gone client); without
    ``tool_calls`` a reply that called tools ends with "stop", as Ollama's do."""
    if reason == "length" or (reason == "tool_calls" and tool_calls):
        return reason
    return "stop"


def new_call_id() -> str:
    """An id for a tool call that came without one (OpenAI's shape: ``call_`` and 24 characters)."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class AssembledCall:
    """One tool call of a reply, put together from its deltas: ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str = ""

    def arguments_value(self) -> Any:
        """The arguments as a value (an object for any well-formed call); the text if it is not JSON."""
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return self.arguments


class ToolCallAssembly:
    """The tool calls of one reply as their deltas arrive, numbered 0, 1, ... in the order they begin."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self.calls: list[AssembledCall] = []
        self._positions: dict[int, int] = {}
        self._new_id = new_id

    def add(self, delta: ToolCallDelta) -> tuple[int, bool]:
        """Take ``delta`` in: (its call's number, whether this delta began that call)."""
        position = self._positions.get(delta.index)
        began = position is None
        if position is None:
            position = self._positions[delta.index] = len(self.calls)
            self.calls.append(AssembledCall(delta.id or self._new_id(), delta.name))
        call = self.calls[position]
        if not call.name and delta.name:
            call.name = delta.name
        call.arguments += delta.arguments
        return position, began


@dataclass
class ReplyParts:
    """One choice's whole reply: the answer, the reasoning and the tool calls."""

    text: str = ""
    reasoning: str = ""
    tool_calls: ToolCallAssembly = field(default_factory=lambda: ToolCallAssembly(new_call_id))
    # The generated tokens' logprobs, and the prompt's (when the request asked for them).
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)

    def add(self, chunk: Chunk) -> None:
        self.text += chunk.text
        self.reasoning += chunk.reasoning
        for delta in chunk.tool_calls:
            self.tool_calls.add(delta)
        self.logprobs.extend(chunk.logprobs)
        self.prompt_logprobs.extend(chunk.prompt_logprobs)

    @property
    def calls(self) -> list[AssembledCall]:
        return self.tool_calls.calls


def warnings_body(warnings: Sequence[str]) -> dict[str, list[str]]:
    """The extensions' errors as an extra top-level field (clients of OpenAI / Ollama ignore unknown
    fields); nothing when there are none, so a clean answer has exactly the upstream shape."""
    return {WARNINGS_FIELD: list(warnings)} if warnings else {}


def tool_steps_body(runs: Sequence[Run]) -> dict[str, list[dict[str, Any]]]:
    """The calls Palabre ran with its own tools for these runs (``{choice, name, arguments, status, result}``
    each, in order) as an extra top-level field; nothing when there were none."""
    steps = [
        {
            "choice": run.index,
            "name": s.name,
            "arguments": s.arguments,
            "status": s.status,
            "result": s.result,
        }
        for run in runs
        if isinstance(run.job, ApiToolReply)
        for s in run.job.steps
    ]
    return {TOOL_STEPS_FIELD: steps} if steps else {}


def warnings_headers(warnings: Sequence[str]) -> dict[str, str]:
    """The same errors as a response header: a JSON list, ASCII-escaped (header values are latin-1)."""
    return {WARNINGS_HEADER: json.dumps(list(warnings))} if warnings else {}


@dataclass(frozen=True)
class Reply:
    """A whole answer: its body, and the extensions' errors (an extra ``palabre_warnings`` field and header)."""

    body: BaseModel | dict[str, Any]
    warnings: Sequence[str] = ()

    def content(self) -> dict[str, Any]:
        """The JSON body, warnings included."""
        body = self.body.model_dump() if isinstance(self.body, BaseModel) else self.body
        return body | warnings_body(self.warnings)

    def headers(self) -> dict[str, str]:
        return warnings_headers(self.warnings)


async def follow(
    started: Started, disconnected: Callable[[], Awaitable[bool]], poll_s: float = POLL_S
) -> AsyncGenerator[Piece, None]:
    """The chunks of every run in order, read on a thread of their own so the event loop never blocks.

    When the client goes away (checked every ``poll_s``, also while queued) or the reader stops early,
    the request's jobs are cancelled at once, which frees the engine for the next request.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Piece | BaseException | None] = asyncio.Queue()

    def put(item: Piece | BaseException | None) -> None:
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
                # What already waits is taken at once: a timed wait costs a timer per chunk, which adds up
                # with many streams on the event loop.
                item = (
                    queue.get_nowait() if not queue.empty() else await asyncio.wait_for(queue.get(), poll_s)
                )
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


class Generation:
    """One request's runs followed for its client; ``release`` (cancel the runs, forget the request id) is
    called once the answer is complete, failed or abandoned."""

    def __init__(
        self, started: Started, disconnected: Callable[[], Awaitable[bool]], forget: Callable[[], None]
    ) -> None:
        self.started = started
        self._forget = forget
        self._pieces = follow(started, disconnected)

    def release(self) -> None:
        self.started.cancel()
        self._forget()

    async def answer(
        self,
        *,
        stream: bool,
        reply: Callable[[dict[int, ReplyParts]], Reply],
        events: Callable[[AsyncIterator[Piece]], AsyncIterator[Event]],
        error: Callable[[ApiError], Event],
    ) -> Reply | EventStream[Event]:
        """The shared skeleton of every generating endpoint: ``reply`` shapes the whole reply of each choice
        (by index); with ``stream``, ``events`` turns the chunks into protocol events and ``error`` a failure
        after the first chunk (the answer has begun: it ends with an error event, not a status)."""
        if not stream:
            return reply(await self._replies())
        try:
            first = await anext(self._pieces, None)  # an early failure is still answered with its status
        except BaseException:
            self.release()
            raise
        return self._events(first, events, error)

    async def _replies(self) -> dict[int, ReplyParts]:
        """The whole reply of every choice."""
        replies = {run.index: ReplyParts(text=run.prefix) for run in self.started.runs}
        try:
            async for run, chunk in self._pieces:
                replies[run.index].add(chunk)
        finally:
            self.release()
        return replies

    async def _chained(self, first: Piece | None) -> AsyncIterator[Piece]:
        if first is not None:
            yield first
        async for piece in self._pieces:
            yield piece

    async def _events(
        self,
        first: Piece | None,
        events: Callable[[AsyncIterator[Piece]], AsyncIterator[Event]],
        error: Callable[[ApiError], Event],
    ) -> EventStream[Event]:
        try:
            async for event in events(self._chained(first)):
                yield event
        except ApiError as exc:
            yield error(exc)
        finally:
            self.release()
            await self._pieces.aclose()
