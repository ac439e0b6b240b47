"""Answers for ``/v1/*`` and ``/api/*`` requests that no API route takes, in the protocol's own error shape.

Without these, such requests fall through to the page mounted at ``/`` and get ``{"detail": "Not Found"}``,
which the openai and ollama libraries show as a bare "Error code: 404". Clients reach them for endpoints
Palabre does not serve (Ollama's model management) and with the wrong method (a GET on a POST
route): each gets a sentence saying what happened, 404 or 405. Installed last, after every other API route.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Match, Mount

from webui.api.errors import ApiError
from webui.api.http import ollama_error, openai_error

# Methods the fallback answers; OPTIONS is left to the CORS layer (a preflight is not an API call).
CATCH_ALL = ("/v1/{path:path}", "/api/{path:path}")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
MANAGEMENT = (
    "Palabre does not manage models through the Ollama API ({path}): put model files in user_data/models/, "
    "or download them with `webui models download org/model` or the Model tab."
)
UNSUPPORTED: dict[str, str] = {
    **{
        f"/api/{name}": MANAGEMENT
        for name in ("pull", "push", "create", "copy", "delete", "blobs")  # /api/blobs/<digest> too
    },
}


def unsupported_message(path: str) -> str | None:
    """What to tell a client calling an endpoint of OpenAI's or Ollama's that Palabre does not serve."""
    for prefix, message in UNSUPPORTED.items():
        if path == prefix or path.startswith(prefix + "/"):
            return message.format(path=prefix)
    return None


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods the API routes accept at this request's path (empty when no route has the path).

    Each method is tried against the routes' own ``matches`` (routers included with ``include_router``
    are nested, so the routes' paths cannot simply be listed); the page's mount and these catch-alls,
    which match every path, are left out.
    """
    routes = [
        route
        for route in app.router.routes
        if not isinstance(route, Mount) and getattr(route, "path", None) not in CATCH_ALL
    ]
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def fallback_error(app: FastAPI, request: Request) -> ApiError:
    """404 for an endpoint that does not exist here, 405 for a known one asked with the wrong method."""
    path = request.url.path.rstrip("/") or "/"
    allowed = allowed_methods(app, request)
    if allowed:
        return ApiError(
            405,
            f"{request.method} is not allowed on {path}: use {' or '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
    message = unsupported_message(path)
    if message is None:
        message = f"There is no endpoint {request.method} {path}. See /api-docs for the API."
    return ApiError(404, message, code="unknown_url")


def install_fallback_routes(app: FastAPI) -> None:
    """Catch-all routes under ``/v1`` (OpenAI's error shape) and ``/api`` (Ollama's)."""

    async def openai_fallback(request: Request) -> Response:
        return openai_error(fallback_error(app, request))

    async def ollama_fallback(request: Request) -> Response:
        return ollama_error(fallback_error(app, request))

    options = {"methods": METHODS, "include_in_schema": False}
    openai_path, ollama_path = CATCH_ALL
    app.add_api_route(openai_path, openai_fallback, **options)  # type: ignore[arg-type]
    app.add_api_route(ollama_path, ollama_fallback, **options)  # type: ignore[arg-type]
