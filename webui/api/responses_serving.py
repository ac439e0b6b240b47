"""POST /v1/responses over the serving base: the core's reply stream translated into the Responses API's
output items (a reasoning item, a message, function calls), whole or as its typed events.

One translation serves both: the chunks are read into output items in the order the model makes them, each
step also told as events (``response.output_item.added``, ``response.output_text.delta`` ...). A whole
response is the same items once the stream is read, so a streamed response ends with exactly what a
non-streamed one returns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn

from anyio import to_thread

from webui.api.core_requests import CoreChatRequest
from webui.api.errors import ApiError
from webui.api.logprob_shapes import tokens_out
from webui.api.responses_protocol import (
    FunctionCallOutput,
    IncompleteDetails,
    InputTokensDetails,
    MessageOutput,
    OutputItem,
    OutputText,
    OutputTokensDetails,
    ReasoningOutput,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
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
    warnings_body,
)
from webui.core.loader import Chunk

# An event of the stream: its ``type`` names it (the router also sends it as the SSE ``event:`` line).
ResponseEvent = dict[str, Any]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseAnswer:
    """One request's output items, built from its chunks; every step is also a typed event, numbered."""

    def __init__(self, response_id: str, started: Started, body: ResponsesRequest, request: CoreChatRequest):
        self.started = started
        self.items: list[OutputItem] = []
        self._open: OutputItem | None = None
        self._calls = ToolCallAssembly(new_call_id)
        self._call_items: dict[int, FunctionCallOutput] = {}  # a call's position -> its item
        self._sequence = 0
        self._reasoning_tokens = 0
        self._finish: str | None = None
        self._logprobs = body.wants_logprobs  # the answer's tokens come with their logprobs
        self._waiting: list[
            dict[str, Any]
        ] = []  # answer tokens whose text has not come yet (e.g. whitespace)
        params = request.params
        tools = request.tools
        self.response = ResponseObject(
            id=response_id,
            created_at=int(time.time()),
            status="in_progress",
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            model=started.model,
            parallel_tool_calls=tools.parallel if tools else body.parallel_tool_calls is not False,
            reasoning={
                "effort": body.reasoning.effort if body.reasoning else None,
                "summary": body.reasoning.summary if body.reasoning else None,
            },
            temperature=params.temperature,
            text={"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
            if body.text and body.text.format
            else {"format": {"type": "text"}},
            tool_choice=body.tool_choice or "auto",
            tools=[{"strict": None, **tool} for tool in body.tools or []],
            top_p=params.top_p,
            user=body.user,
            metadata=body.metadata or {},
        )

    # -- events ---------------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> ResponseEvent:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _lifecycle(self, kind: str) -> ResponseEvent:
        return self._event(kind, response=self.response.model_dump())

    def _index(self, item: OutputItem) -> int:
        return next(i for i, known in enumerate(self.items) if known is item)

    def _where(self, item: OutputItem) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": self._index(item)}

    def _begin(self, item: OutputItem) -> list[ResponseEvent]:
        """Close the open item and open ``item``."""
        events = self._close()
        self.items.append(item)
        self._open = item
        events.append(
            self._event(
                "response.output_item.added", output_index=len(self.items) - 1, item=item.model_dump()
            )
        )
        if isinstance(item, ReasoningOutput | MessageOutput):
            part = ReasoningText() if isinstance(item, ReasoningOutput) else OutputText()
            item.content.append(part)  # type: ignore[arg-type]
            events.append(
                self._event(
                    "response.content_part.added",
                    **self._where(item),
                    content_index=0,
                    part=part.model_dump(),
                )
            )
        return events

    def _close(self, status: str = "completed") -> list[ResponseEvent]:
        """The open item's closing events (its whole text or arguments, then the item itself)."""
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status  # type: ignore[assignment]
        where = self._where(item)
        events: list[ResponseEvent] = []
        if isinstance(item, FunctionCallOutput) and not item.arguments:  # a call without arguments: {}
            item.arguments = "{}"
            events.append(self._event("response.function_call_arguments.delta", **where, delta="{}"))
        if isinstance(item, ReasoningOutput):
            part = item.content[0]
            events.append(
                self._event("response.reasoning_text.done", **where, content_index=0, text=part.text)
            )
            events.append(
                self._event("response.content_part.done", **where, content_index=0, part=part.model_dump())
            )
        elif isinstance(item, MessageOutput):
            text = item.content[0]
            events.append(
                self._event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=text.text,
                    logprobs=list(text.logprobs),
                )
            )
            events.append(
                self._event("response.content_part.done", **where, content_index=0, part=text.model_dump())
            )
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done", **where, name=item.name, arguments=item.arguments
                )
            )
        events.append(
            self._event(
                "response.output_item.done", output_index=where["output_index"], item=item.model_dump()
            )
        )
        return events

    def add(self, chunk: Chunk) -> list[ResponseEvent]:
        """A chunk's parts as events: reasoning, then answer text, then each tool call's pieces; a part of
        another kind than the open item's closes it and opens its own item."""
        events: list[ResponseEvent] = []
        # Reasoning and tool-call tokens are no answer tokens.
        if self._logprobs and (chunk.text or not (chunk.reasoning or chunk.tool_calls)):
            self._waiting += tokens_out(chunk.logprobs)
        self._reasoning_tokens += chunk.reasoning_tokens
        if chunk.reasoning:
            if not isinstance(self._open, ReasoningOutput):
                events += self._begin(ReasoningOutput(id=_new_id("rs")))
            item = self._open
            assert isinstance(item, ReasoningOutput)
            item.content[0].text += chunk.reasoning
            events.append(
                self._event(
                    "response.reasoning_text.delta",
                    **self._where(item),
                    content_index=0,
                    delta=chunk.reasoning,
                )
            )
        if chunk.text:
            if not isinstance(self._open, MessageOutput):
                events += self._begin(MessageOutput(id=_new_id("msg")))
            message = self._open
            assert isinstance(message, MessageOutput)
            message.content[0].text += chunk.text
            logprobs, self._waiting = self._waiting, []
            message.content[0].logprobs += logprobs
            events.append(
                self._event(
                    "response.output_text.delta",
                    **self._where(message),
                    content_index=0,
                    delta=chunk.text,
                    logprobs=logprobs,
                )
            )
        for delta in chunk.tool_calls:
            position, began = self._calls.add(delta)
            call = self._calls.calls[position]
            if began:
                item = FunctionCallOutput(id=_new_id("fc"), call_id=call.id, name=call.name)
                self._call_items[position] = item
                events += self._begin(item)
            target = self._call_items[position]
            target.name = call.name
            if delta.arguments:
                target.arguments += delta.arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta", **self._where(target), delta=delta.arguments
                    )
                )
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        return events

    def finish(self) -> list[ResponseEvent]:
        """The last item closed and the response complete (or incomplete: cut at max_output_tokens)."""
        cut = self._finish == "length"
        events = self._close("incomplete" if cut else "completed")
        prompt, completion = self.started.usage()
        cached = sum(run.stats.reused_prompt_tokens for run in self.started.runs if run.stats)
        self.response.output = self.items
        self.response.status = "incomplete" if cut else "completed"
        self.response.incomplete_details = IncompleteDetails() if cut else None
        self.response.usage = ResponseUsage(
            input_tokens=prompt,
            input_tokens_details=InputTokensDetails(cached_tokens=cached),
            output_tokens=completion,
            output_tokens_details=OutputTokensDetails(
                reasoning_tokens=min(self._reasoning_tokens, completion)
            ),
            total_tokens=prompt + completion,
        )
        last = self._lifecycle("response.incomplete" if cut else "response.completed")
        last["response"] |= warnings_body(
            self.started.warnings()
        )  # the extensions' errors, as a whole reply's
        events.append(last)
        return events

    def events_of(self, chunks: Iterable[Chunk]) -> list[ResponseEvent]:
        """Every event of a whole generation's chunks, from response.created to its end."""
        events = [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]
        for chunk in chunks:
            events += self.add(chunk)
        return events + self.finish()

    async def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[ResponseEvent]:
        yield self._lifecycle("response.created")
        yield self._lifecycle("response.in_progress")
        async for _, chunk in pieces:
            for event in self.add(chunk):
                yield event
        for event in self.finish():
            yield event

    def error(self, error: ApiError) -> ResponseEvent:
        """A failure after the stream began: the response failed, with the error (OpenAI sends
        ``response.failed``, whose response carries it)."""
        self.response.status = "failed"
        self.response.error = ResponseError(code=error.code or "server_error", message=error.message)
        self.response.output = self.items
        return self._lifecycle("response.failed")


def _raise(error: ApiError) -> NoReturn:
    raise error


def _unused(replies: dict[int, ReplyParts]) -> NoReturn:
    raise AssertionError("a whole response is read from its events")


class ResponsesServing:
    """POST /v1/responses, translated to the core through ``serving``."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.service = serving.service

    async def create_response(
        self, body: ResponsesRequest, context: RequestContext
    ) -> Reply | EventStream[ResponseEvent]:
        """Convert and start off the event loop (a load takes seconds), then answer whole or as events."""
        response_id = _new_id("resp")
        converted: list[CoreChatRequest] = []

        def start() -> Started:
            request = body.to_chat_request(self.service, self.serving.images)
            converted.append(request)
            return self.serving.start_request(body.model, context.caller.admin, request, response_id)

        started = await to_thread.run_sync(start)
        generation = self.serving.follow(started, context, response_id)
        answer = ResponseAnswer(response_id, started, body, converted[0])
        if body.stream:
            return await generation.answer(
                stream=True, reply=_unused, events=answer.events, error=answer.error
            )
        # Whole: the same events read to the end (a failure is raised, and answered with its status).
        events = await generation.answer(stream=True, reply=_unused, events=answer.events, error=_raise)
        assert not isinstance(events, Reply)
        async for _ in events:
            pass
        return Reply(answer.response.model_dump(), started.warnings())
