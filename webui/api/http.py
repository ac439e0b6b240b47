"""HTTP plumbing shared by the routers: errors rendered in a protocol's shape, a serving method's result as
JSON, server-sent events or NDJSON, and the request context the serving objects take."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from webui.api.errors import ApiError, api_error
from webui.api.jobs import Caller
from webui.api.serving import RequestContext
from webui.api.streams import EventStream, Reply

log = logging.getLogger(__name__)
S = TypeVar("S")
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def streamed_doc(media_type: str, properties: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry saying that the same 200 may also come as a stream of ``media_type`` events."""
    schema = {"type": "object", "properties": properties}
    return {200: {"content": {media_type: {"schema": schema}}}}


def install_router(app: FastAPI, router: APIRouter, serving: object) -> None:
    """Add ``router`` to ``app`` with the serving object its handlers get through ``serving_of``."""
    servings: dict[type, object] = getattr(app.state, "servings", {})
    servings[type(serving)] = serving
    app.state.servings = servings
    app.include_router(router)


def serving_of(request: Request, kind: type[S]) -> S:
    """The ``kind`` serving object of the request's app (built once, by install_api)."""
    serving: S = request.app.state.servings[kind]
    return serving


def request_context(request: Request) -> RequestContext:
    """Who sent ``request`` (as the auth middleware marked it) and how to tell that its client is gone."""
    return RequestContext(Caller.of(request.state), request.is_disconnected)


# -- errors --------------------------------------------------------------------------------------------------


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 as OpenAI's 400, naming the first bad field."""
    problems: list[str] = []
    param: str | None = None
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        if item.get("type") == "json_invalid":
            detail = item.get("ctx", {}).get("error", "")
            return ApiError(400, f"The request body is not valid JSON: {detail}.")
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return ApiError(400, "Invalid request: " + "; ".join(problems), param=param)


def openai_error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.openai_body(), status_code=error.status, headers=error.headers)


def ollama_error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.ollama_body(), status_code=error.status, headers=error.headers)


def _read_body_as_json(request: Request) -> None:
    """Treat every POST body as JSON, as OpenAI's and Ollama's servers do (``curl -d`` sends a form type)."""
    if request.method != "POST":
        return
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
    request.__dict__.pop("_headers", None)  # starlette caches the parsed headers


def error_catching_route(render: Callable[[ApiError], Response]) -> type[APIRoute]:
    """A route class answering bad requests, ApiErrors and crashes with ``render`` (this router only)."""

    class ErrorCatchingRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                _read_body_as_json(request)
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return render(validation_error(exc))
                except ApiError as exc:
                    return render(exc)
                except HTTPException as exc:  # FastAPI's own refusals, e.g. a body that is not UTF-8
                    return render(ApiError(exc.status_code, str(exc.detail)))
                except Exception as exc:
                    log.exception("API request %s failed", request.url.path)
                    return render(api_error(exc))

            return route

    return ErrorCatchingRoute


# -- answers -------------------------------------------------------------------------------------------------


def json_reply(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.content(), headers=reply.headers())


def sse_response(result: Reply | EventStream[BaseModel | dict[str, Any]]) -> Response:
    """A whole reply as JSON, a stream as server-sent events: ``data: {event}`` lines, then ``data: [DONE]``."""
    if isinstance(result, Reply):
        return json_reply(result)
    return StreamingResponse(_sse(result), media_type="text/event-stream", headers=SSE_HEADERS)


def ndjson_response(result: Reply | EventStream[dict[str, Any]]) -> Response:
    """A whole reply as JSON, a stream as one JSON object a line."""
    if isinstance(result, Reply):
        return json_reply(result)
    return StreamingResponse(_ndjson(result), media_type="application/x-ndjson")


def sse(payload: BaseModel | dict[str, Any]) -> str:
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else _json(payload)
    return f"data: {body}\n\n"


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


async def _sse(events: EventStream[BaseModel | dict[str, Any]]) -> AsyncIterator[str]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield sse(event)
    yield "data: [DONE]\n\n"


async def _ndjson(events: EventStream[dict[str, Any]]) -> AsyncIterator[str]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield _json(event) + "\n"
