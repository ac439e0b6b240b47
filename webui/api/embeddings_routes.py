"""The embeddings routes (HTTP only): OpenAI's ``POST /v1/embeddings`` and Ollama's ``POST /api/embed`` and
``POST /api/embeddings``, each answering refusals in its protocol's error shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from webui.api.embeddings_protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbedRequest,
    LegacyEmbeddingsRequest,
)
from webui.api.embeddings_serving import EmbeddingsServing
from webui.api.http import (
    error_catching_route,
    install_router,
    ollama_error,
    openai_error,
    request_context,
    serving_of,
)
from webui.api.openai_protocol import ErrorResponse
from webui.api.serving import Serving

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((400, "Bad request"), (403, "Needs an admin key"), (404, "Unknown model"))
}

openai_router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=error_catching_route(openai_error),
    strict_content_type=False,
    responses=ERRORS,
)
ollama_router = APIRouter(
    prefix="/api", tags=["ollama"], route_class=error_catching_route(ollama_error), strict_content_type=False
)


def install_embeddings_routes(app: FastAPI, serving: Serving) -> None:
    """Add the embeddings routes of both protocols, on one EmbeddingsServing built on ``serving``."""
    embeddings = EmbeddingsServing(serving)
    install_router(app, openai_router, embeddings)
    install_router(app, ollama_router, embeddings)


def embeddings_of(request: Request) -> EmbeddingsServing:
    return serving_of(request, EmbeddingsServing)


@openai_router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """Vectors for ``input`` (L2-normalised), as floats or base64 float32."""
    return await embeddings_of(request).openai_embeddings(body, request_context(request))


@ollama_router.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
    """L2-normalised vectors for ``input``; no input only loads the model."""
    return await embeddings_of(request).ollama_embed(body, request_context(request))


@ollama_router.post("/embeddings")
async def embeddings(body: LegacyEmbeddingsRequest, request: Request) -> dict[str, Any]:
    """The older endpoint: one ``prompt``, the model's vector as it comes."""
    return await embeddings_of(request).ollama_embeddings(body, request_context(request))
