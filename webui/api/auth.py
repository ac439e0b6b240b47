"""Who may use the server: API keys, admin keys, the page's password, CORS and the bind-address check.

- ``/v1/*`` and ``/api/*`` need an API key (``Authorization: Bearer KEY`` or ``x-api-key: KEY``) when any is
  configured; an admin key counts as an API key too.
- Every request gets ``request.state.admin``: True when no admin key is configured or the request carries one.
  Routes that load or unload models check it (403 without it). ``request.state.client`` names the key (a
  digest prefix, None without a key): a non-admin may stop and see only its own key's generations.
- The page (every other path) asks for HTTP Basic auth when a page user/password is configured.
- ``/health`` and the OpenAPI schema stay public: they reveal nothing a key protects.

Keys are compared in constant time (on their SHA-256 digests, so not even the length leaks) and never printed,
logged or echoed in an error. The module imports no web framework, so the CLI can use the parsing helpers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from webui.config import AppConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIXES = ("/v1", "/api")
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/api-docs", "/api-docs/oauth2-redirect"})
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
REALM = "Palabre"


class AuthConfigError(ValueError):
    """An auth option that cannot be used as given; the message is meant for the user."""


# -- parsing (used by the CLI) --------------------------------------------------------------------------------


def collect_keys(flags: Iterable[str] | None, env_value: str | None, *, what: str) -> tuple[str, ...]:
    """Keys from repeated flags plus a comma-separated environment variable, blanks dropped, order kept."""
    keys: list[str] = []
    for raw in [*(flags or ()), *(env_value or "").split(",")]:
        key = raw.strip()
        if not key:
            continue
        if any(ch.isspace() for ch in key):
            raise AuthConfigError(f"An {what} must not contain spaces.")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def parse_page_auth(user: str | None, password: str | None, combined: str | None) -> tuple[str, str] | None:
    """(user, password) from ``--page-user/--page-password`` or one ``USER:PASS``; None when not set."""
    if combined:
        if user or password:
            raise AuthConfigError("Give either --page-auth USER:PASS or --page-user and --page-password.")
        user, sep, password = combined.partition(":")
        if not sep:
            raise AuthConfigError("--page-auth expects USER:PASS.")
    if not user and not password:
        return None
    if not user or not password:
        raise AuthConfigError(
            "The page needs both a user name (--page-user) and a password (--page-password)."
        )
    if ":" in user:
        raise AuthConfigError("The page user name must not contain ':'.")
    return user, password


def allowed_hosts(flags: Iterable[str] | None, env_value: str | None) -> tuple[str, ...]:
    """``--allowed-host`` names plus a comma-separated environment variable; a malformed one is refused."""
    from webui.api.web_policy import split_host

    names: list[str] = []
    for raw in [*(flags or ()), *(env_value or "").split(",")]:
        name = raw.strip().lower()
        if not name:
            continue
        if name != "*" and (split_host(name) is None or "/" in name or any(ch.isspace() for ch in name)):
            raise AuthConfigError(f"--allowed-host expects NAME or NAME:PORT, not {raw.strip()!r}.")
        if name not in names:
            names.append(name)
    return tuple(names)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; any other name or address counts as exposed."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_problem(config: AppConfig) -> str | None:
    """Why ``serve`` must not start on this address with this protection, or None when it may."""
    if config.admin_keys and config.page_auth is None and not config.open_page:
        # The page loads, unloads and deletes models with no key: an admin key alone would protect nothing.
        return (
            "admin keys protect loading and unloading through the API, but the page does the same without a "
            "key. Set a page password (--page-user USER --page-password PASS, or --page-auth USER:PASS), or "
            "pass --open-page to let whoever opens the page manage models."
        )
    if is_loopback(config.host) or config.insecure:
        return None
    missing = []
    if not config.api_keys:
        missing.append("an API key (--api-key KEY or PALABRE_API_KEYS)")
    if config.page_auth is None:
        missing.append("a page password (--page-user USER --page-password PASS, or --page-auth USER:PASS)")
    if not missing:
        return None
    return (
        f"refusing to serve on {config.host}, which other machines can reach, without "
        f"{' and '.join(missing)}. Add them, or pass --insecure to serve unprotected."
    )


# -- checking requests -----------------------------------------------------------------------------------------


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


@dataclass(frozen=True)
class AccessPolicy:
    """The configured secrets, kept only as SHA-256 digests."""

    api_required: bool = False  # True when API keys are configured (admin keys alone leave the API open)
    api_digests: tuple[bytes, ...] = ()  # API and admin keys: both may use the API
    admin_digests: tuple[bytes, ...] = ()
    page_digest: bytes | None = None  # of "user:password"

    @classmethod
    def from_config(cls, config: AppConfig) -> AccessPolicy:
        page = f"{config.page_auth[0]}:{config.page_auth[1]}" if config.page_auth else None
        return cls(
            api_required=bool(config.api_keys),
            api_digests=tuple(_digest(k) for k in (*config.api_keys, *config.admin_keys)),
            admin_digests=tuple(_digest(k) for k in config.admin_keys),
            page_digest=_digest(page) if page is not None else None,
        )

    def is_api_key(self, key: str | None) -> bool:
        return key is not None and _matches(_digest(key), self.api_digests)

    def is_admin(self, key: str | None) -> bool:
        if not self.admin_digests:
            return True
        return key is not None and _matches(_digest(key), self.admin_digests)

    def page_allowed(self, authorization: str | None) -> bool:
        if self.page_digest is None:
            return True
        credentials = _basic_credentials(authorization)
        return credentials is not None and hmac.compare_digest(_digest(credentials), self.page_digest)


def _matches(digest: bytes, digests: Sequence[bytes]) -> bool:
    """Compare against every key without stopping early, so timing says nothing about which matched."""
    found = False
    for candidate in digests:
        found |= hmac.compare_digest(digest, candidate)
    return found


def _basic_credentials(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def request_headers(scope: Scope) -> dict[str, str]:
    """An ASGI request's headers by lower-case name (a repeated header: its last value)."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())
    }


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY``, else ``x-api-key: KEY``."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip() or None


def client_id(key: str | None) -> str | None:
    """Who a request comes from, for owning its generations: the first 16 hex digits of its key's SHA-256
    (never the key itself, which must not reach logs or answers); None without a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16] if key else None


def path_kind(path: str) -> str:
    """Which protection ``path`` gets: "public", "api" or "page"."""
    if path in PUBLIC_PATHS:
        return "public"
    if any(path == prefix or path.startswith(prefix + "/") for prefix in API_PREFIXES):
        return "api"
    return "page"


def _key_error_body(path: str, message: str) -> bytes:
    if path.startswith("/api"):
        body: dict[str, Any] = {"error": message}  # Ollama's shape: its clients read a string here
    elif path == "/v1/messages" or path.startswith("/v1/messages/"):
        body = {"type": "error", "error": {"type": "authentication_error", "message": message}}  # Anthropic's
    else:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    return json.dumps(body).encode("utf-8")


class AccessControl:
    """Pure ASGI middleware: API keys on the API, Basic auth on the page, ``state.admin`` on every request.

    Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
    """

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = request_headers(scope)
        key = presented_key(headers)
        state = scope.setdefault("state", {})
        state["admin"] = self.policy.is_admin(key)
        state["client"] = client_id(key)  # the owner of the generations this request starts
        path = scope.get("path", "")
        kind = path_kind(path)
        if kind == "api" and self.policy.api_required and not self.policy.is_api_key(key):
            message = (
                "Invalid API key."
                if key
                else "Missing API key: send it as 'Authorization: Bearer KEY' (or an 'x-api-key' header)."
            )
            await _refuse(scope, send, _key_error_body(path, message), "application/json", "Bearer")
            return
        if kind == "page" and not self.policy.page_allowed(headers.get("authorization")):
            body = b"This Palabre page needs a user name and password."
            await _refuse(scope, send, body, "text/plain; charset=utf-8", f'Basic realm="{REALM}"')
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, body: bytes, content_type: str, challenge: str) -> None:
    """A 401 (for a websocket: a close before accepting, which the server turns into a 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"www-authenticate", challenge.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_access_control(app: FastAPI, config: AppConfig) -> None:
    """Add the auth middleware; when origins are configured, CORS outside it (so preflights need no key and
    refusals still carry CORS headers); and the web policy (Host, Origin, content type) outside both."""
    from webui.api.web_policy import WebPolicy, WebPolicyMiddleware

    app.add_middleware(AccessControl, policy=AccessPolicy.from_config(config))
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["*"],
        )
    # Outermost (added last): a foreign Host or Origin is refused before anything else sees the request.
    app.add_middleware(WebPolicyMiddleware, policy=WebPolicy.from_config(config))
