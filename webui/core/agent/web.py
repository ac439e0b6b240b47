"""The fetch-a-web-page tool (off unless the user turns it on): public http(s) pages as text, capped.

The URL is model output. Every host is resolved first and refused when any of its addresses is not public
(loopback, private, link-local such as the 169.254.169.254 metadata service, multicast, reserved); the
connection then goes to the vetted address itself, so a second DNS answer cannot swap it (DNS rebinding).
Redirects are followed by hand, each target vetted the same way. Bodies are read up to a size cap within a
time budget, and only text (HTML is turned into its text).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from webui.core.agent.base import ToolError, ToolSpec, string_argument

BODY_LIMIT = 1024 * 1024  # bytes read from a response
TIME_LIMIT_S = 20.0  # for the whole fetch, redirects included
MAX_REDIRECTS = 5
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/ld+json")
USER_AGENT = "Palabre/1.0 (fetch tool)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to
Resolver = Callable[[str, int], list[str]]
# (address, port), timeout -> a connected socket
Connector = Callable[[tuple[str, int], float], socket.socket]


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"Cannot resolve {host}: {exc.strerror}.") from exc
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


class _Text(HTMLParser):
    """The visible text of an HTML page (scripts and styles left out)."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BREAKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "title"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self.skipping += 1
        if tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self.skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        body = "\n".join(line for line in lines if line)
        return f"# {self.title.strip()}\n\n{body}" if self.title.strip() else body


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser.text()


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


class FetchPage:
    """Fetch a public web page as text. ``resolver`` and ``connector`` are the network (tests replace them)."""

    spec = ToolSpec(
        name="fetch_page",
        description="Fetch a public web page (http or https) and return its text.",
        parameters={
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The page's http(s) URL."}},
            "required": ["url"],
        },
        read_only=True,
    )

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        body_limit: int = BODY_LIMIT,
        time_limit: float = TIME_LIMIT_S,
        allowed: Callable[[Address], bool] = is_public,
    ) -> None:
        self.resolver = resolver
        self.connector = connector
        self.body_limit = body_limit
        self.time_limit = time_limit
        self.allowed = allowed

    @staticmethod
    def _target(url: str) -> _Target:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise ToolError("Only http and https URLs can be fetched.")
        if not parts.hostname:
            raise ToolError("The URL has no host.")
        if parts.username or parts.password:
            raise ToolError("URLs with a user name or password are not fetched.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ToolError("The URL's port is not valid.") from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return _Target(parts.scheme, parts.hostname, port, path)

    def vet(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; ToolError when any address it resolves to is not public."""
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [str(literal)] if literal is not None else self.resolver(host, port)
        if not addresses:
            raise ToolError(f"{host} has no address.")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not self.allowed(address):
                raise ToolError(f"{host} is a private, loopback or link-local address ({address}): refused.")
        return addresses[0]

    def _request(self, target: _Target, deadline: float) -> http.client.HTTPResponse:
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
        connection.request(
            "GET",
            target.path,
            headers={"User-Agent": USER_AGENT, "Accept": "text/html, text/plain, application/json;q=0.9"},
        )
        return connection.getresponse()

    def fetch(self, url: str) -> str:
        deadline = time.monotonic() + self.time_limit
        target = self._target(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._request(target, deadline)
            except ToolError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                raise ToolError(f"Cannot fetch {url}: {exc}.") from exc
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise ToolError(f"A redirect ({response.status}) without a Location.")
                    base = f"{target.scheme}://{target.host}:{target.port}{target.path}"
                    url = urljoin(base, location)
                    target = self._target(url)
                    continue
                return self._body(url, response, deadline)
            finally:
                response.close()
        raise ToolError(f"More than {MAX_REDIRECTS} redirects.")

    def _body(self, url: str, response: http.client.HTTPResponse, deadline: float) -> str:
        kind = (response.getheader("Content-Type") or "text/plain").lower()
        if not kind.startswith(TEXT_TYPES):
            raise ToolError(f"{url} is not text ({kind.split(';')[0]}).")
        data = bytearray()
        while len(data) <= self.body_limit:
            if time.monotonic() > deadline:
                raise ToolError(f"{url} took longer than {self.time_limit:.0f} s.")
            piece = response.read(min(65536, self.body_limit + 1 - len(data)))
            if not piece:
                break
            data += piece
        cut = len(data) > self.body_limit
        charset = response.headers.get_content_charset() or "utf-8"
        try:
            text = bytes(data[: self.body_limit]).decode(charset, errors="replace")
        except LookupError:
            text = bytes(data[: self.body_limit]).decode("utf-8", errors="replace")
        if "html" in kind:
            text = html_to_text(text)
        status = "" if response.status == 200 else f"HTTP {response.status} {response.reason}\n"
        return status + text + (f"\n[… cut at {self.body_limit} bytes]" if cut else "")

    def run(self, arguments: Mapping[str, Any]) -> str:
        return self.fetch(string_argument(arguments, "url"))
