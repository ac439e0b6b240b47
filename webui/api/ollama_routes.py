"""The Ollama-compatible routes: /api/tags, /api/version, /api/show, /api/ps, /api/generate, /api/chat.

Each handler hands its request to the OllamaServing object built once per app (``app.state.ollama_serving``).
Replies stream as NDJSON by default (``"stream": false`` for one object), as Ollama's do; the last object has
``done: true``, ``done_reason`` and the counts and durations (nanoseconds). Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from webui.api.http import (
    error_catching_route,
    install_router,
    ndjson_response,
    ollama_error,
    request_context,
    serving_of,
    streamed_doc,
)
from webui.api.ollama_protocol import ChatRequest, GenerateRequest, ShowRequest
from webui.api.ollama_serving import OllamaServing
from webui.api.serving import Serving

# With ``stream`` (Ollama's default) the answer is one JSON object a line, the last with ``done: true``.
STREAMED = streamed_doc("application/x-ndjson", {"done": {"type": "boolean"}})

router = APIRouter(
    prefix="/api",
    tags=["ollama"],
    route_class=error_catching_route(ollama_error),
    strict_content_type=False,
)


def install_ollama_routes(app: FastAPI, serving: Serving) -> None:
    """Build the app's OllamaServing on ``serving`` and add the ``/api`` Ollama-compatible router."""
    install_router(app, router, OllamaServing(serving))


def ollama(request: Request) -> OllamaServing:
    return serving_of(request, OllamaServing)


@router.api_route("/version", methods=["GET", "HEAD"])  # HEAD: clients check that the server is up
def version(request: Request) -> dict[str, str]:
    return ollama(request).version()


@router.api_route("/tags", methods=["GET", "HEAD"])
def tags(request: Request) -> dict[str, Any]:
    return ollama(request).tags()


@router.get("/ps")
def ps(request: Request) -> dict[str, Any]:
    return ollama(request).ps()


@router.post("/show")
def show(body: ShowRequest, request: Request) -> dict[str, Any]:
    return ollama(request).show(body)


@router.post("/generate", responses=STREAMED)
async def generate(body: GenerateRequest, request: Request) -> Response:
    """Complete ``prompt`` through the model's template (``raw``: as is); an empty prompt loads the model."""
    return ndjson_response(await ollama(request).generate(body, request_context(request)))


@router.post("/chat", responses=STREAMED)
async def chat(body: ChatRequest, request: Request) -> Response:
    """Reply to ``messages`` with the model's template; no messages loads the model."""
    return ndjson_response(await ollama(request).chat(body, request_context(request)))
