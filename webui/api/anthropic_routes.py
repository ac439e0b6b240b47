"""The Anthropic-compatible routes: /v1/messages and /v1/messages/count_tokens (HTTP and SSE only).

Each handler hands its request to the AnthropicServing object built once per app and maps the result onto JSON
or server-sent events (``event: <type>`` and ``data: {event}`` lines, as Anthropic's clients read them; no
``[DONE]``); errors are answered in Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``.
Clients authenticate as for the other /v1 routes (their ``x-api-key`` header works); ``anthropic-version`` and
``anthropic-beta`` headers are accepted whatever they say.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from webui.api.anthropic_protocol import (
    CountTokensRequest,
    CountTokensResponse,
    ErrorResponse,
    MessageResponse,
    MessagesRequest,
    error_body,
)
from webui.api.anthropic_serving import AnthropicEvent, AnthropicServing
from webui.api.errors import ApiError
from webui.api.http import (
    SSE_HEADERS,
    error_catching_route,
    install_router,
    json_reply,
    request_context,
    serving_of,
    streamed_doc,
)
from webui.api.serving import Serving
from webui.api.streams import EventStream, Reply

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Bad request"),
        (403, "Needs an admin key"),
        (404, "Unknown model"),
        (429, "The queue is full"),
        (500, "The model could not be loaded"),
    )
}
# With ``stream: true`` the same 200 is server-sent events: ``event: <type>`` and ``data: {event}`` lines.
STREAMED = streamed_doc("text/event-stream", {"event": {"type": "string"}, "data": {"type": "string"}})


def anthropic_error(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)


router = APIRouter(
    prefix="/v1",
    tags=["anthropic"],
    route_class=error_catching_route(anthropic_error),
    strict_content_type=False,
    responses=ERRORS,
)


def install_anthropic_routes(app: FastAPI, serving: Serving) -> None:
    """Build the app's AnthropicServing on ``serving`` and add the ``/v1/messages`` router."""
    install_router(app, router, AnthropicServing(serving))


async def _events(events: EventStream[AnthropicEvent]) -> AsyncIterator[str]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


def event_stream_response(result: Reply | EventStream[AnthropicEvent]) -> Response:
    """A whole message as JSON, a stream as Anthropic's named server-sent events."""
    if isinstance(result, Reply):
        return json_reply(result)
    return StreamingResponse(_events(result), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/messages", response_model=MessageResponse, responses=STREAMED)
async def messages(body: MessagesRequest, request: Request) -> Response:
    """Anthropic's Messages API: reply to a conversation with content blocks (text, thinking, tool_use);
    ``stream`` answers with Anthropic's server-sent events."""
    result = await serving_of(request, AnthropicServing).create_message(body, request_context(request))
    return event_stream_response(result)


@router.post("/messages/count_tokens", response_model=CountTokensResponse)
async def count_tokens(body: CountTokensRequest, request: Request) -> CountTokensResponse:
    """The tokens the prompt of such a request takes with the model (its system prompt and tools included)."""
    return await serving_of(request, AnthropicServing).count_tokens(body, request_context(request))
