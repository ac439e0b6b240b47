"""OpenAI's endpoints over the serving base: each method returns a response model, or an async stream of
OpenAI's chunk events (the router frames them as server-sent events ending in ``data: [DONE]``)."""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from anyio import to_thread
from pydantic import BaseModel

from webui.api.core_requests import CoreRequest
from webui.api.errors import ApiError
from webui.api.logprob_shapes import (
    CompletionLogprobs,
    CompletionOffsets,
    chat_logprobs,
    joined,
)
from webui.api.openai_protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FunctionCallOut,
    GenerationRequest,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    ToolCallOut,
    Usage,
)
from webui.api.serving import RequestContext, Serving
from webui.api.streams import (
    EventStream,
    Piece,
    Reply,
    ReplyParts,
    Started,
    ToolCallAssembly,
    new_call_id,
    public_finish_reason,
    tool_steps_body,
    warnings_body,
)
from webui.core.loader import Chunk, TokenLogprob
from webui.core.models.discovery import ModelEntry
from webui.core.service import LoadedState, Service

# An event of the stream: a chunk model, or a chunk as a dict where it carries more than the model says.
OpenAIEvent = BaseModel | dict[str, Any]


def model_card(entry: ModelEntry, loaded: LoadedState | None) -> ModelCard:
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0  # a remote server's model has no file
    return ModelCard(id=entry.name, created=created, loaded=loaded is not None and loaded.entry == entry)


def usage_of(started: Started) -> Usage:
    prompt, completion = started.usage()
    cached = PromptTokensDetails(cached_tokens=started.cached_prompt_tokens())
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=cached,
    )


def error_event(error: ApiError) -> OpenAIEvent:
    """A failure after the stream began, as OpenAI's error body in its own event."""
    return error.openai_body()


class _Answer(ABC):
    """How one request's generation is answered in OpenAI's shapes: whole, or as chunk events."""

    def __init__(self, request_id: str, started: Started, include_usage: bool) -> None:
        self.started = started
        self.include_usage = include_usage
        self.runs = {run.index: run for run in started.runs}
        # The fields every response and chunk of the request starts with.
        self.envelope: dict[str, Any] = {
            "id": request_id,
            "created": int(time.time()),
            "model": started.model,
        }

    def whole(self, replies: dict[int, ReplyParts]) -> Reply:
        runs = self.started.runs
        choices = [
            self.choice(run.index, replies[run.index], public_finish_reason(run.job.finish_reason))
            for run in runs
        ]
        # The extensions' errors, also in the server log.
        return Reply(self.response(choices, self.usage()), self.started.warnings())

    def usage(self) -> Usage:
        return usage_of(self.started)

    def wants_logprobs(self, index: int) -> bool:
        """Whether choice ``index``'s request asked for logprobs."""
        return self.runs[index].job.params.logprobs >= 0

    @abstractmethod
    def choice(self, index: int, reply: ReplyParts, finish_reason: str) -> BaseModel:
        """One whole choice."""

    @abstractmethod
    def response(self, choices: list[Any], usage: Usage) -> BaseModel:
        """The whole response."""

    @abstractmethod
    def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[OpenAIEvent]:
        """The chunk events of the pieces, in order."""


class _CompletionAnswer(_Answer):
    """A completion; with ``generates`` False (max_tokens 0) only the echoed prompt and its logprobs: the one
    token generated is left out, and not counted."""

    def __init__(
        self, request_id: str, started: Started, include_usage: bool, *, generates: bool = True
    ) -> None:
        super().__init__(request_id, started, include_usage)
        self.generates = generates

    def choice(self, index: int, reply: ReplyParts, finish_reason: str) -> BaseModel:
        run = self.runs[index]
        text = reply.text if self.generates else run.prefix
        logprobs = None
        if self.wants_logprobs(index):
            offsets = CompletionOffsets(run.prefix)
            logprobs = self._logprobs(offsets, reply.prompt_logprobs, reply.logprobs)
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)

    def usage(self) -> Usage:
        usage = super().usage()
        if self.generates:
            return usage
        return usage.model_copy(update={"completion_tokens": 0, "total_tokens": usage.prompt_tokens})

    def _logprobs(
        self,
        offsets: CompletionOffsets,
        prompt: Sequence[TokenLogprob | None],
        tokens: Sequence[TokenLogprob],
    ) -> CompletionLogprobs:
        """The legacy logprobs of the echoed prompt's tokens (when given), then of the generated ones."""
        shape = offsets.prompt(prompt) if prompt else offsets.generated(())
        return joined(shape, offsets.generated(tokens if self.generates else ()))

    def response(self, choices: list[Any], usage: Usage | None) -> BaseModel:
        return CompletionResponse(**self.envelope, choices=choices, usage=usage)

    async def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[OpenAIEvent]:
        offsets: dict[int, CompletionOffsets] = {}
        async for run, piece in pieces:
            text = piece.text if self.generates else ""
            if run.index not in offsets:
                offsets[run.index] = CompletionOffsets(run.prefix)
                text = run.prefix + text
            logprobs = None
            if self.wants_logprobs(run.index):
                logprobs = self._logprobs(offsets[run.index], piece.prompt_logprobs, piece.logprobs)
            finish = public_finish_reason(piece.finish_reason) if piece.finish_reason else None
            if text or finish or (logprobs is not None and logprobs.tokens):
                choice = CompletionChoice(index=run.index, text=text, logprobs=logprobs, finish_reason=finish)
                chunk = CompletionResponse(**self.envelope, choices=[choice])
                # The choice's last chunk carries the extensions' errors (complete by now).
                warnings = run.warnings if finish else ()
                yield chunk.model_dump() | warnings_body(warnings) if warnings else chunk
        if self.include_usage:
            yield self.response([], self.usage())


class _ChatAnswer(_Answer):
    def whole(self, replies: dict[int, ReplyParts]) -> Reply:
        answer = super().whole(replies)
        assert isinstance(answer.body, ChatCompletionResponse)
        # With the calls of the server's tools, if it ran any (an extra field clients ignore).
        body = answer.body.without_absent_parts() | tool_steps_body(self.started.runs)
        return Reply(body, answer.warnings)

    def choice(self, index: int, reply: ReplyParts, finish_reason: str) -> BaseModel:
        calls = [
            ToolCallOut(
                id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments or "{}")
            )
            for call in reply.calls
        ]
        message = ChatMessageOut(
            content=reply.text if reply.text or not calls else None,
            reasoning_content=reply.reasoning or None,
            reasoning=reply.reasoning or None,
            tool_calls=calls or None,
        )
        logprobs = chat_logprobs(reply.logprobs) if self.wants_logprobs(index) else None
        return ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=finish_reason)

    def response(self, choices: list[Any], usage: Usage) -> BaseModel:
        return ChatCompletionResponse(**self.envelope, choices=choices, usage=usage)

    def _chunk(
        self,
        choices: list[ChatChunkChoice],
        usage: Usage | None = None,
        warnings: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> OpenAIEvent:
        payload = ChatCompletionChunk(**self.envelope, choices=choices, usage=usage).model_dump()
        for choice in payload["choices"]:  # a delta carries only what changed, as OpenAI's do
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return payload | warnings_body(warnings) | dict(extra or {})

    def _deltas(self, chunk: Chunk, calls: ToolCallAssembly) -> list[ChatDelta]:
        """A chunk's parts as deltas: the reasoning, the answer, then each tool call's pieces (its id and
        name once, then its arguments in pieces, which clients' accumulators concatenate)."""
        deltas = []
        if chunk.reasoning:
            deltas.append(ChatDelta(reasoning_content=chunk.reasoning, reasoning=chunk.reasoning))
        if chunk.text:
            deltas.append(ChatDelta(content=chunk.text))
        for piece in chunk.tool_calls:
            index, began = calls.add(piece)
            if began:
                call = calls.calls[index]
                opening = {"name": call.name, "arguments": ""}
                deltas.append(
                    ChatDelta(
                        tool_calls=[{"index": index, "id": call.id, "type": "function", "function": opening}]
                    )
                )
            if piece.arguments:
                deltas.append(
                    ChatDelta(tool_calls=[{"index": index, "function": {"arguments": piece.arguments}}])
                )
        return deltas

    async def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[OpenAIEvent]:
        begun: set[int] = set()
        calls: dict[int, ToolCallAssembly] = {}
        async for run, piece in pieces:
            if run.index not in begun:
                begun.add(run.index)
                calls[run.index] = ToolCallAssembly(new_call_id)
                opening = ChatDelta(role="assistant", content="")
                yield self._chunk([ChatChunkChoice(index=run.index, delta=opening)])
            # The piece's tokens' logprobs go with its first delta (alone when it has none: markup read away).
            logprobs = (
                chat_logprobs(piece.logprobs) if piece.logprobs and self.wants_logprobs(run.index) else None
            )
            deltas = self._deltas(piece, calls[run.index]) or ([ChatDelta()] if logprobs else [])
            for delta in deltas:
                yield self._chunk([ChatChunkChoice(index=run.index, delta=delta, logprobs=logprobs)])
                logprobs = None
            if piece.finish_reason:
                finish = public_finish_reason(piece.finish_reason)
                # The choice's last chunk carries the extensions' errors (complete by now).
                last = ChatChunkChoice(index=run.index, delta=ChatDelta(), finish_reason=finish)
                yield self._chunk([last], warnings=run.warnings, extra=tool_steps_body([run]))
        if self.include_usage:
            yield self._chunk([], self.usage())


class OpenAIServing:
    """/v1/models, /v1/completions and /v1/chat/completions, translated to the core through ``serving``."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.service = serving.service

    def list_models(self) -> ModelList:
        loaded = self.service.loaded_model  # every loaded model is marked (several may be loaded at once)
        return ModelList(data=[model_card(entry, loaded(entry.name)) for entry in self.serving.entries()])

    def get_model(self, model_id: str) -> ModelCard:
        entry = self.serving.find(model_id)
        return model_card(entry, self.service.loaded_model(entry.name))

    async def create_completion(
        self, body: CompletionRequest, context: RequestContext
    ) -> Reply | EventStream[OpenAIEvent]:
        """Continue raw text: a whole CompletionResponse, or its chunks."""

        def answer(request_id: str, started: Started, include_usage: bool) -> _Answer:
            return _CompletionAnswer(request_id, started, include_usage, generates=not body.scores_only)

        return await self._generate(body, context, "cmpl", body.to_completion_request, answer)

    async def create_chat_completion(
        self, body: ChatCompletionRequest, context: RequestContext
    ) -> Reply | EventStream[OpenAIEvent]:
        """Reply to a conversation: a whole ChatCompletionResponse, or its chunks."""
        images = self.serving.images

        def convert(service: Service) -> CoreRequest:
            return body.to_chat_request(service, images)

        return await self._generate(body, context, "chatcmpl", convert, _ChatAnswer)

    async def _generate(
        self,
        body: GenerationRequest,
        context: RequestContext,
        id_prefix: str,
        convert: Callable[[Service], CoreRequest],
        answer: Callable[[str, Started, bool], _Answer],
    ) -> Reply | EventStream[OpenAIEvent]:
        """Convert and start off the event loop (a load takes seconds), then answer whole or streamed."""
        request_id = f"{id_prefix}-{uuid.uuid4().hex[:24]}"

        def start() -> Started:
            return self.serving.start_request(
                body.model, context.caller.admin, convert(self.service), request_id
            )

        started = await to_thread.run_sync(start)
        generation = self.serving.follow(started, context, request_id)
        shape = answer(request_id, started, bool(body.stream_options and body.stream_options.include_usage))
        return await generation.answer(
            stream=body.stream, reply=shape.whole, events=shape.events, error=error_event
        )
