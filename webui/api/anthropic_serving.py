"""Anthropic's Messages endpoints over the serving base: a whole message, or an async stream of Anthropic's
events (``message_start``, ``ping``, then per content block ``content_block_start`` / ``_delta`` / ``_stop``,
``message_delta`` with the stop reason and usage, ``message_stop``); the router frames each as a server-sent
event named by its ``type``.

A reply's reasoning is a ``thinking`` block (its signature empty: nothing to sign), its answer a ``text``
block and each tool call a ``tool_use`` block whose input streams as ``input_json_delta`` pieces; blocks come
in the order the model writes them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread

from webui.api.anthropic_protocol import (
    ContentBlock,
    CountTokensRequest,
    CountTokensResponse,
    MessageResponse,
    MessagesRequest,
    MessageUsage,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    error_body,
    stop_reason,
    tool_use_id,
)
from webui.api.serving import RequestContext, Serving
from webui.api.streams import (
    EventStream,
    Piece,
    Reply,
    ReplyParts,
    Run,
    RunJob,
    Started,
    ToolCallAssembly,
    new_call_id,
    warnings_body,
)
from webui.core.loader import Chunk, ToolCallDelta
from webui.core.service import LoadedState

AnthropicEvent = dict[str, Any]


def usage_of(started: Started) -> MessageUsage:
    """The request's tokens: the prompt's evaluated ones, those reused from the cache, and the generated."""
    prompt, completion = started.usage()
    reused = started.cached_prompt_tokens()
    return MessageUsage(
        input_tokens=prompt - reused, output_tokens=completion, cache_read_input_tokens=reused
    )


def new_tool_use_id() -> str:
    return tool_use_id(new_call_id())


class _BlockWriter:
    """The content block events of one streamed reply: a block opens when a part of another kind (or another
    tool call) begins, and closes before the next one opens."""

    def __init__(self, show_thinking: bool) -> None:
        self.show_thinking = show_thinking
        self.index = -1
        self.open: str | None = None  # "thinking", "text", or the tool call's number as "call:N"
        self.calls = ToolCallAssembly(new_tool_use_id)

    def _start(self, key: str, block: dict[str, Any]) -> list[AnthropicEvent]:
        events = self.close()
        self.index += 1
        self.open = key
        return [*events, {"type": "content_block_start", "index": self.index, "content_block": block}]

    def _delta(self, delta: dict[str, Any]) -> AnthropicEvent:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def close(self) -> list[AnthropicEvent]:
        """The open block's last events (a thinking block's signature, then its stop)."""
        if self.open is None:
            return []
        events = []
        if self.open == "thinking":
            events.append(self._delta({"type": "signature_delta", "signature": ""}))
        events.append({"type": "content_block_stop", "index": self.index})
        self.open = None
        return events

    def thinking(self, text: str) -> list[AnthropicEvent]:
        events = (
            []
            if self.open == "thinking"
            else self._start("thinking", {**ThinkingBlock(thinking="").model_dump()})
        )
        if self.show_thinking:
            events.append(self._delta({"type": "thinking_delta", "thinking": text}))
        return events

    def text(self, text: str) -> list[AnthropicEvent]:
        events = [] if self.open == "text" else self._start("text", TextBlock(text="").model_dump())
        return [*events, self._delta({"type": "text_delta", "text": text})]

    def tool_call(self, delta: ToolCallDelta) -> list[AnthropicEvent]:
        number, began = self.calls.add(delta)
        block_name = f"call:{number}"
        events: list[AnthropicEvent] = []
        if began or self.open != block_name:
            call = self.calls.calls[number]
            block = ToolUseBlock(id=tool_use_id(call.id), name=call.name, input={})
            events = self._start(block_name, block.model_dump())
        if delta.arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": delta.arguments}))
        return events

    def chunk(self, chunk: Chunk) -> list[AnthropicEvent]:
        events: list[AnthropicEvent] = []
        if chunk.reasoning:
            events += self.thinking(chunk.reasoning)
        if chunk.text:
            events += self.text(chunk.text)
        for delta in chunk.tool_calls:
            events += self.tool_call(delta)
        return events


class _Answer:
    """How one request's generation is answered in Anthropic's shapes: whole, or as events."""

    def __init__(self, message_id: str, started: Started, show_thinking: bool) -> None:
        self.message_id = message_id
        self.started = started
        self.show_thinking = show_thinking

    @property
    def run(self) -> Run:
        return self.started.runs[0]

    def whole(self, replies: dict[int, ReplyParts]) -> Reply:
        reply = replies[self.run.index]
        content: list[ContentBlock] = []
        if reply.reasoning:
            content.append(ThinkingBlock(thinking=reply.reasoning if self.show_thinking else ""))
        if reply.text or not reply.calls:
            content.append(TextBlock(text=reply.text))
        content += [
            ToolUseBlock(id=tool_use_id(call.id), name=call.name, input=call.arguments_value())
            for call in reply.calls
        ]
        message = MessageResponse(
            id=self.message_id,
            model=self.started.model,
            content=content,
            stop_reason=stop_reason(self.run.job.finish_reason, requested_stop(self.run.job)),
            stop_sequence=requested_stop(self.run.job),
            usage=usage_of(self.started),
        )
        return Reply(message, self.started.warnings())

    async def events(self, pieces: AsyncIterator[Piece]) -> AsyncIterator[AnthropicEvent]:
        opening = MessageResponse(
            id=self.message_id,
            model=self.started.model,
            content=[],
            stop_reason=None,
            usage=MessageUsage(input_tokens=0, output_tokens=0),
        )
        yield {"type": "message_start", "message": opening.model_dump()}
        yield {"type": "ping"}
        blocks = _BlockWriter(self.show_thinking)
        finish: str | None = None
        async for _run, chunk in pieces:
            for event in blocks.chunk(chunk):
                yield event
            finish = chunk.finish_reason or finish
        if blocks.index < 0:  # nothing was said: one empty text block, as the whole reply has
            for event in blocks.text(""):
                yield event
        for event in blocks.close():
            yield event
        usage = usage_of(self.started).model_dump()
        stopped = requested_stop(self.started.runs[0].job)
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish, stopped), "stop_sequence": stopped},
            "usage": usage,
        } | warnings_body(self.started.warnings())
        yield {"type": "message_stop"}


def requested_stop(job: RunJob) -> str | None:
    """The client's stop sequence that ended the reply (not the prompt's own stops, e.g. chat mode's)."""
    return job.stop_string if job.stop_string in job.params.stop else None


class AnthropicServing:
    """/v1/messages and /v1/messages/count_tokens, translated to the core through ``serving``."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.service = serving.service

    async def create_message(
        self, body: MessagesRequest, context: RequestContext
    ) -> Reply | EventStream[AnthropicEvent]:
        """Reply to a conversation: a whole message, or its events."""
        message_id = f"msg_{uuid.uuid4().hex[:24]}"

        def start() -> Started:
            request = body.to_chat_request(self.service, self.serving.images)
            return self.serving.start_request(body.model, context.caller.admin, request, message_id)

        started = await to_thread.run_sync(start)
        generation = self.serving.follow(started, context, message_id)
        answer = _Answer(message_id, started, body.shows_thinking())
        return await generation.answer(
            stream=body.stream, reply=answer.whole, events=answer.events, error=error_body
        )

    async def count_tokens(self, body: CountTokensRequest, context: RequestContext) -> CountTokensResponse:
        """The tokens of the prompt ``body`` would give the model (system prompt and tools included)."""

        def count() -> int:
            request = body.to_chat_request(self.service, self.serving.images)
            counted: list[int] = []

            def measure(state: LoadedState) -> list[Run]:
                request.needs.check(state, request.params)
                prompt, _ = self.service.prompts.chat(
                    request.history,
                    request.settings,
                    request.params,
                    preview=True,
                    tools=request.tools,
                    template_kwargs=request.template_kwargs,
                )
                counted.append(prompt.prompt_tokens)
                return []

            self.serving.start(body.model, context.caller.admin, measure)
            return counted[0]

        return CountTokensResponse(input_tokens=await to_thread.run_sync(count))
