"""What a web page in the user's browser may do with Palabre: the Host, Origin and content-type policy.

Every page the user visits can send requests to ``127.0.0.1``. This middleware, outside everything else, makes
sure only Palabre's own page (and origins listed with ``--cors-origin``) can drive or read the server:

- **Host**: a request must name the server by a name it is meant to be reached by: an IP address, ``localhost``,
  the ``--host`` given, the machine's own name when serving to the network, or a name listed with
  ``--allowed-host``; with the server's port when a port is given. Any other name (``evil.example`` rebound to
  127.0.0.1, ``x.localhost``) is refused: that is the DNS-rebinding defence. IP addresses are safe to accept:
  rebinding needs a name the attacker controls.
- **Origin**: a request carrying an ``Origin`` that is neither the page's own origin nor a ``--cors-origin`` is
  refused on every route, reading ones included, so no route (Gradio's own included) ever answers a foreign
  origin. Without ``Origin``, the browser's ``Sec-Fetch-Site`` tells cross-site loads (``<img>``, ``<script>``)
  apart: only top-level navigations pass. Clients that send neither (curl, SDKs, agents) are unaffected.
- **Content type**: the JSON endpoints (a body sent to ``/v1`` or ``/api``) need a JSON content type (415
  otherwise), so a "simple" cross-site request (text/plain, form, multipart) never reaches them. The one
  exception is the form type ``curl -d`` sends, accepted from a request without any browser mark (no Origin,
  Referer or Sec-Fetch header), because Ollama's own documentation sends JSON that way.
- **Uploads** to the page (``/gradio_api/upload``) are limited per request and per time window.
- **Framing**: every answer says ``X-Frame-Options: SAMEORIGIN`` and ``frame-ancestors 'self'``, so another site
  cannot show the page in a frame and steer the user's clicks.

Pure ASGI, so streamed answers pass through untouched. Imports no web framework.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from webui.api.auth import ASGIApp, Receive, Scope, Send, is_loopback, path_kind, request_headers

if TYPE_CHECKING:
    from webui.config import AppConfig

UPLOAD_PATH = "/gradio_api/upload"  # Gradio's upload route
UPLOAD_WINDOW_S = 600.0  # the time window the upload budget covers
UPLOAD_WINDOW_FACTOR = 4  # per window: this many of the largest allowed files
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BROWSER_MARKS = ("origin", "referer", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
_FRAME_HEADERS = [
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6]:port`` -> (lower-case name without brackets, port or None); None if malformed."""
    text = value.strip().lower()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 address (no port possible)
        name, port_text = text, None
    else:
        name, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class WebPolicy:
    """The names the server answers to and the foreign origins it trusts, from the configuration."""

    names: frozenset[str]  # names accepted with the server's own port
    names_any_port: frozenset[str]  # --allowed-host NAME (no port): any port, as behind a reverse proxy
    names_with_port: frozenset[tuple[str, int]]  # --allowed-host NAME:PORT
    any_host: bool  # --allowed-host '*': the check is off (the user's choice, e.g. behind a proxy)
    cors_origins: frozenset[str]
    any_origin: bool  # --cors-origin '*'
    upload_limit: int  # bytes per request
    upload_window_budget: int  # bytes per UPLOAD_WINDOW_S

    @classmethod
    def from_config(cls, config: AppConfig, machine_names: Iterable[str] | None = None) -> WebPolicy:
        names = {"localhost"}
        host = config.host.strip().strip("[]").lower()
        if not _is_wildcard(host):
            names.add(host)
        if not is_loopback(config.host):
            # Serving to the network: the machine's own name is how others on the LAN reach it.
            for name in machine_names if machine_names is not None else [socket.gethostname()]:
                if name:
                    names.update({name.lower(), f"{name.lower()}.local"})
        any_port: set[str] = set()
        with_port: set[tuple[str, int]] = set()
        for raw in config.allowed_hosts:
            parsed = split_host(raw)
            if parsed is None:
                continue
            name, port = parsed
            if port is None:
                any_port.add(name)
            else:
                with_port.add((name, port))
        upload_limit = int(config.max_upload_mb * 1024 * 1024)
        return cls(
            names=frozenset(names),
            names_any_port=frozenset(any_port),
            names_with_port=frozenset(with_port),
            any_host="*" in config.allowed_hosts,
            cors_origins=frozenset(o.rstrip("/").lower() for o in config.cors_origins),
            any_origin="*" in config.cors_origins,
            upload_limit=upload_limit,
            upload_window_budget=upload_limit * UPLOAD_WINDOW_FACTOR,
        )

    def host_allowed(self, host_header: str | None, server_port: int | None) -> bool:
        """Whether a request naming ``host_header`` is meant for this server (listening on ``server_port``)."""
        if self.any_host or host_header is None:
            return True  # no Host at all: not a browser (every browser sends one), nothing to rebind
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.names_any_port or (port is not None and (name, port) in self.names_with_port):
            return True
        if not (_is_ip(name) or name in self.names):
            return False
        return port is None or server_port is None or port == server_port

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Whether a request from a page at ``origin`` may reach this server, addressed as ``host_header``."""
        normalized = origin.strip().rstrip("/").lower()
        if self.any_origin or normalized in self.cors_origins:
            return True
        return same_origin(normalized, host_header)


def same_origin(origin: str, host_header: str | None) -> bool:
    """True when ``origin`` is the page's own: the same name and port as the request's Host."""
    if host_header is None or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    origin_host, host = split_host(parts.netloc), split_host(host_header)
    if origin_host is None or host is None:
        return False
    default = _DEFAULT_PORTS[parts.scheme]
    return origin_host[0] == host[0] and (origin_host[1] or default) == (host[1] or default)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length", "").strip()
    if length:
        return not length.isdigit() or int(length) > 0
    return "transfer-encoding" in headers


class UploadBudget:
    """Bytes uploaded through the page in the last UPLOAD_WINDOW_S, for the per-window limit."""

    def __init__(self, budget: int, window_s: float = UPLOAD_WINDOW_S) -> None:
        self.budget = budget
        self.window_s = window_s
        self._lock = threading.Lock()
        self._entries: deque[tuple[float, int]] = deque()

    def _used(self, now: float) -> int:
        while self._entries and now - self._entries[0][0] > self.window_s:
            self._entries.popleft()
        return sum(size for _, size in self._entries)

    def take(self, size: int) -> float | None:
        """Count ``size`` bytes; None if they fit, else the seconds until enough of the window frees up."""
        now = time.monotonic()
        with self._lock:
            used = self._used(now)
            if used + size <= self.budget:
                self._entries.append((now, size))
                return None
            freed, wait = used + size - self.budget, self.window_s
            for stamp, taken in self._entries:
                freed -= taken
                if freed <= 0:
                    wait = self.window_s - (now - stamp)
                    break
            return max(wait, 1.0)


class WebPolicyMiddleware:
    """Refuses foreign hosts, foreign origins, non-JSON bodies on the API and oversized uploads."""

    def __init__(self, app: ASGIApp, policy: WebPolicy) -> None:
        self.app = app
        self.policy = policy
        self.uploads = UploadBudget(policy.upload_window_budget)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        path = scope.get("path", "")
        problem = self._problem(scope, headers, path)
        if problem is not None:
            status, message = problem
            await refuse(scope, send, path, status, message)
            return
        if scope["type"] == "http" and path == UPLOAD_PATH and scope.get("method") == "POST":
            limited = self._upload_problem(headers)
            if limited is not None:
                status, message = limited
                await refuse(scope, send, path, status, message)
                return
        await self.app(scope, receive, _with_frame_headers(send))

    def _problem(self, scope: Scope, headers: Mapping[str, str], path: str) -> tuple[int, str] | None:
        host = headers.get("host")
        server = scope.get("server") or (None, None)
        if not self.policy.host_allowed(host, server[1]):
            return 403, (
                f"This server does not answer to the name {host!r}. Reach it as localhost or by its address, "
                "or start it with --allowed-host NAME to allow this name."
            )
        origin = headers.get("origin")
        if origin is not None:
            if not self.policy.origin_allowed(origin, host):
                return 403, (
                    f"Requests from pages on {origin} are refused: only this server's own page and origins "
                    "listed with --cors-origin may call it."
                )
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site") and not _top_level_navigation(
            scope, headers
        ):
            return 403, "Cross-site requests are refused: only this server's own page may load its resources."
        if (
            scope["type"] == "http"
            and scope.get("method") in _BODY_METHODS
            and path_kind(path) == "api"
            and _has_body(headers)
        ):
            content_type = headers.get("content-type", "")
            if not _is_json(content_type) and not _plain_curl_form(content_type, headers):
                shown = content_type.split(";", 1)[0] or "none"
                return 415, (
                    f"This endpoint takes JSON: send 'Content-Type: application/json' (got {shown})."
                )
        return None

    def _upload_problem(self, headers: Mapping[str, str]) -> tuple[int, str] | None:
        length = headers.get("content-length", "").strip()
        if not length.isdigit():
            return 411, "An upload must say its size (Content-Length)."
        size = int(length)
        # multipart framing adds a little to the file itself; allow for it so a file at the limit passes
        if size > self.policy.upload_limit + 64 * 1024:
            limit_mb = self.policy.upload_limit / 1024 / 1024
            return 413, (
                f"This upload is larger than the limit of {limit_mb:g} MB ({self.policy.upload_limit} bytes; "
                "serve --max-upload-mb)."
            )
        wait = self.uploads.take(size)
        if wait is not None:
            budget_mb = self.policy.upload_window_budget / 1024 / 1024
            minutes = UPLOAD_WINDOW_S / 60
            return 429, (
                f"Too much uploaded: at most {budget_mb:g} MB per {minutes:g} minutes. "
                f"Try again in {wait:.0f} s."
            )
        return None


def _top_level_navigation(scope: Scope, headers: Mapping[str, str]) -> bool:
    """A link followed or an address typed: the user lands on the page, which is harmless."""
    return (
        scope.get("method") in ("GET", "HEAD")
        and headers.get("sec-fetch-mode") == "navigate"
        and headers.get("sec-fetch-dest", "document") == "document"
    )


def _plain_curl_form(content_type: str, headers: Mapping[str, str]) -> bool:
    """``curl -d '{...}'`` (form type, no browser marks): how Ollama's documentation sends JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/x-www-form-urlencoded" and not any(
        mark in headers for mark in _BROWSER_MARKS
    )


def _with_frame_headers(send: Send) -> Send:
    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(name, value) for name, value in _FRAME_HEADERS if name not in present]
            if extra:
                message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


async def refuse(scope: Scope, send: Send, path: str, status: int, message: str) -> None:
    """Answer ``status`` in the shape the path's clients read (OpenAI, Ollama, or plain text for the page)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/api" or path.startswith("/api/"):
        body = json.dumps({"error": message}).encode("utf-8")
        content_type = b"application/json"
    elif path == "/v1/messages" or path.startswith("/v1/messages/"):
        kind = "permission_error" if status == 403 else "invalid_request_error"  # Anthropic's error shape
        body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode("utf-8")
        content_type = b"application/json"
    elif path == "/v1" or path.startswith("/v1/"):
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": "refused"}
        body = json.dumps({"error": error}).encode("utf-8")
        content_type = b"application/json"
    else:
        body = message.encode("utf-8")
        content_type = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode("latin-1")),
                *_FRAME_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
