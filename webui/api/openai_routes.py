"""The OpenAI-compatible routes: /v1/models, /v1/completions and /v1/chat/completions (HTTP and SSE only).

Each handler hands its request to the OpenAIServing object built once per app (``app.state.openai_serving``)
and maps the result onto JSON or server-sent events; errors are answered in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with 400 / 403 / 404 / 429 / 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from webui.api.http import (
    error_catching_route,
    install_router,
    openai_error,
    request_context,
    serving_of,
    sse_response,
    streamed_doc,
)
from webui.api.openai_protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from webui.api.openai_serving import OpenAIServing
from webui.api.serving import Serving

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Bad request"), (403, "Needs an admin key"), (404, "Unknown model"))
}
# With ``stream: true`` the same 200 is server-sent events: ``data: {chunk}`` lines, then ``data: [DONE]``.
STREAMED = streamed_doc("text/event-stream", {"data": {"type": "string"}})

router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=error_catching_route(openai_error),
    strict_content_type=False,  # curl -d sends form content type: read the body as JSON anyway
    responses=ERRORS,
)


def install_openai_routes(app: FastAPI, serving: Serving) -> None:
    """Build the app's OpenAIServing on ``serving`` and add the ``/v1`` OpenAI-compatible router."""
    install_router(app, router, OpenAIServing(serving))


@router.api_route("/models", methods=["GET", "HEAD"], response_model=ModelList)
def list_models(request: Request) -> ModelList:
    return serving_of(request, OpenAIServing).list_models()


@router.get("/models/{model_id:path}", response_model=ModelCard)
def get_model(model_id: str, request: Request) -> ModelCard:
    return serving_of(request, OpenAIServing).get_model(model_id)


@router.post("/completions", response_model=CompletionResponse, responses=STREAMED)
async def completions(body: CompletionRequest, request: Request) -> Response:
    """Continue raw text; ``stream`` answers with server-sent events ending in ``data: [DONE]``."""
    result = await serving_of(request, OpenAIServing).create_completion(body, request_context(request))
    return sse_response(result)


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=STREAMED)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    """Reply to a conversation, with the model's instruction template (or ``mode`` chat / chat-instruct)."""
    result = await serving_of(request, OpenAIServing).create_chat_completion(body, request_context(request))
    return sse_response(result)
