"""GET requests to public http(s) hosts only: what the fetch-page tool and remote images share.

A URL given by a model or a client is never trusted. Every host is resolved first and refused when any of its
addresses is not public (loopback, private, link-local such as the 169.254.169.254 metadata service,
multicast, reserved, and IPv4-mapped forms of those); the connection then goes to the vetted address itself,
so a second DNS answer cannot swap it (DNS rebinding). Redirects are followed by hand, each target vetted the
same way (and checked against the caller's host rule). Bodies are read up to a byte cap within a time budget.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

__all__ = [
    "Address",
    "Connector",
    "FetchError",
    "FetchRefused",
    "PublicHttp",
    "Resolver",
    "Target",
    "direct_connector",
    "is_public",
    "system_resolver",
]

T = TypeVar("T")
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to
Resolver = Callable[[str, int], list[str]]
# (address, port), timeout -> a connected socket
Connector = Callable[[tuple[str, int], float], socket.socket]


class FetchError(ValueError):
    """A URL that is refused or cannot be fetched; the message says why, for the user."""


class FetchRefused(FetchError):
    """A URL refused before anything was sent to it (scheme, credentials, host rule, non-public address)."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"Cannot resolve {host}: {exc.strerror}.") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def direct_connector(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def is_public(address: Address) -> bool:
    """Whether ``address`` is on the public internet (not private, loopback, link-local, multicast...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not (
        address.is_multicast or address.is_loopback or address.is_link_local or address.is_reserved
    )


@dataclass(frozen=True)
class Target:
    """Where one request goes: scheme, host (as in the URL), port and path with query."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    @classmethod
    def parse(cls, url: str) -> Target:
        """An http(s) URL's target; FetchError for other schemes, user:password parts or a bad port."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise FetchRefused("Only http and https URLs can be fetched.")
        if not parts.hostname:
            raise FetchError("The URL has no host.")
        if parts.username or parts.password:
            raise FetchRefused("URLs with a user name or password are not fetched.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError("The URL's port is not valid.") from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, path)


class PublicHttp:
    """GET from public hosts. ``resolver`` and ``connector`` are the network (tests replace them);
    ``allowed`` judges each resolved address, ``host_allowed`` each host name (the first URL's and every
    redirect's) before it is resolved."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        time_limit: float = 20.0,
        user_agent: str = "Palabre/1.0",
        allowed: Callable[[Address], bool] = is_public,
        host_allowed: Callable[[str], bool] = lambda host: True,
    ) -> None:
        self.resolver = resolver
        self.connector = connector
        self.time_limit = time_limit
        self.user_agent = user_agent
        self.allowed = allowed
        self.host_allowed = host_allowed

    def vet(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; FetchError when any address it resolves to is not public."""
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        if not addresses:
            raise FetchError(f"{host} has no address.")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not self.allowed(address):
                raise FetchRefused(
                    f"{host} is a private, loopback or link-local address ({address}): refused."
                )
        return addresses[0]

    def _request(self, target: Target, deadline: float, accept: str) -> http.client.HTTPResponse:
        if not self.host_allowed(target.host):
            raise FetchRefused(f"{target.host} is not an allowed host: refused.")
        address = self.vet(target.host, target.port)
        timeout = max(0.1, deadline - time.monotonic())
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        connector = self.connector

        def connect(_: Any, timeout: Any = None, source: Any = None) -> socket.socket:
            return connector((address, target.port), float(timeout or 10.0))

        connection._create_connection = connect  # type: ignore[attr-defined]  # the vetted address, no DNS
        connection.request("GET", target.path, headers={"User-Agent": self.user_agent, "Accept": accept})
        return connection.getresponse()

    def get(
        self, url: str, read: Callable[[str, http.client.HTTPResponse, float], T], *, accept: str = "*/*"
    ) -> T:
        """GET ``url`` following redirects (each target vetted); ``read(url, response, deadline)`` reads
        the final response, which is closed afterwards. FetchError for a refusal or a network failure."""
        deadline = time.monotonic() + self.time_limit
        target = Target.parse(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._request(target, deadline, accept)
            except FetchError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"Cannot fetch {url}: {exc}.") from exc
            try:
                if response.status in REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise FetchError(f"A redirect ({response.status}) without a Location.")
                    url = urljoin(target.url, location)
                    target = Target.parse(url)
                    continue
                return read(url, response, deadline)
            finally:
                response.close()
        raise FetchError(f"More than {MAX_REDIRECTS} redirects.")

    def read_capped(
        self, url: str, response: http.client.HTTPResponse, deadline: float, limit: int
    ) -> tuple[bytes, bool]:
        """Up to ``limit`` bytes of the body, and whether there was more; FetchError past the deadline."""
        data = bytearray()
        try:
            while len(data) <= limit:
                if time.monotonic() > deadline:
                    raise FetchError(f"{url} took longer than {self.time_limit:g} s.")
                piece = response.read(min(65536, limit + 1 - len(data)))
                if not piece:
                    break
                data += piece
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"Cannot read {url}: {exc}.") from exc
        return bytes(data[:limit]), len(data) > limit
