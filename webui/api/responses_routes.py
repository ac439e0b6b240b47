"""The OpenAI Responses route: POST /v1/responses (HTTP and SSE only), stateless.

The handler hands its request to the ResponsesServing object built once per app and maps the result onto
JSON or server-sent events (``event: <type>`` and ``data: {event}``, as OpenAI sends them); errors are answered
in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``. Nothing is stored, so GET and DELETE of a
response id answer 404 saying so.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from webui.api.errors import ApiError
from webui.api.http import (
    SSE_HEADERS,
    error_catching_route,
    install_router,
    json_reply,
    openai_error,
    request_context,
    serving_of,
    streamed_doc,
)
from webui.api.openai_protocol import ErrorResponse
from webui.api.responses_protocol import ResponseObject, ResponsesRequest
from webui.api.responses_serving import ResponseEvent, ResponsesServing
from webui.api.serving import Serving
from webui.api.streams import EventStream, Reply

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Bad request"), (403, "Needs an admin key"), (404, "Unknown model"))
}
# With ``stream: true`` the same 200 is server-sent events: ``event: response.created`` ... ``response.completed``.
STREAMED = streamed_doc("text/event-stream", {"event": {"type": "string"}, "data": {"type": "string"}})

router = APIRouter(
    prefix="/v1",
    tags=["openai responses"],
    route_class=error_catching_route(openai_error),
    strict_content_type=False,  # curl -d sends form content type: read the body as JSON anyway
    responses=ERRORS,
)


def install_responses_routes(app: FastAPI, serving: Serving) -> None:
    """Build the app's ResponsesServing on ``serving`` and add the ``/v1/responses`` router."""
    install_router(app, router, ResponsesServing(serving))


async def _typed_sse(events: EventStream[ResponseEvent]) -> AsyncIterator[str]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


@router.post("/responses", response_model=ResponseObject, responses=STREAMED)
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    """Answer ``input`` (text, or messages and tool-call items) with output items; ``stream`` answers with the
    Responses API's typed server-sent events. Stateless: nothing is stored."""
    result = await serving_of(request, ResponsesServing).create_response(body, request_context(request))
    if isinstance(result, Reply):
        return json_reply(result)
    return StreamingResponse(_typed_sse(result), media_type="text/event-stream", headers=SSE_HEADERS)


@router.api_route("/responses/{response_id}", methods=["GET", "DELETE"], include_in_schema=False)
def stored_response(response_id: str) -> Response:
    raise ApiError(
        404,
        f"No response with id {response_id!r}: this server does not store responses.",
        param="response_id",
        code="not_found",
    )
