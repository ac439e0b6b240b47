"""The API's refusals: ApiError carries a status and OpenAI's error fields; each protocol renders it in its own
shape (OpenAI and the internal endpoints ``{"error": {"message", "type", "param", "code"}}``, Ollama
``{"error": "..."}``). No fastapi import: the serving layer raises these, the routers render them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from webui.core.characters.store import CharacterError
from webui.core.loader import LoaderError
from webui.core.media import ImageError
from webui.core.models.discovery import ModelNotFoundError
from webui.core.presets import PresetError
from webui.core.service import EngineError, QueueFull

T = TypeVar("T")


class ApiError(Exception):
    """A request the API refuses; routes render it in OpenAI's or Ollama's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})  # e.g. Retry-After on a 429

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def ollama_body(self) -> dict[str, Any]:
        """Ollama's error shape: {"error": "..."}."""
        return {"error": self.message}


_INTERNAL_KINDS = {403: "permission_error"}


class InternalApiError(ApiError):
    """A refusal of the ``/v1/internal`` endpoints: OpenAI's shape, its type read from the status, no param;
    the message is meant for the caller."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(
            status, message, kind=_INTERNAL_KINDS.get(status, "invalid_request_error"), code=code
        )


def user_errors(fn: Callable[[], T], status: int = 400) -> T:
    """Run ``fn``; the core's user-facing errors become an InternalApiError ``status`` (a missing model: 404)."""
    try:
        return fn()
    except EngineError as exc:
        not_found = isinstance(exc.__cause__, ModelNotFoundError)
        raise InternalApiError(404 if not_found else status, str(exc)) from exc
    except (LoaderError, PresetError, CharacterError, ImageError) as exc:
        raise InternalApiError(status, str(exc)) from exc


def api_error(exc: BaseException) -> ApiError:
    """Any failure as an ApiError: the core's refusals are the client's fault (400), the rest is ours (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFull):
        return queue_full_error(exc)
    if isinstance(exc, ImageError):  # a bad image, one the model cannot take, a refused URL
        return ApiError(400, str(exc), code="invalid_image")
    if isinstance(exc, EngineError):
        return ApiError(400, str(exc))
    return ApiError(500, f"Internal error: {exc}", kind="server_error")


def queue_full_error(exc: QueueFull) -> ApiError:
    """429 with Retry-After: the queue is full now, the same request will be taken a little later."""
    return ApiError(
        429,
        str(exc),
        kind="requests",  # OpenAI's type and code for a rate limit, which clients know to retry
        code="rate_limit_exceeded",
        headers={"Retry-After": str(exc.retry_after_s)},
    )
