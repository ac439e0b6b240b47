"""The fetch-a-web-page tool (off unless the user turns it on): public http(s) pages as text, capped.

The URL is model output. Every host is resolved first and refused when any of its addresses is not public
(loopback, private, link-local such as the 169.254.169.254 metadata service, multicast, reserved); the
connection then goes to the vetted address itself, so a second DNS answer cannot swap it (DNS rebinding).
Redirects are followed by hand, each target vetted the same way. Bodies are read up to a size cap within a
time budget, and only text (HTML is turned into its text). The vetting is webui.core.public_http's, shared with
the API's remote images.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from typing import Any

from webui.core.agent.base import ToolError, ToolSpec, string_argument
from webui.core.public_http import (
    Address,
    Connector,
    FetchError,
    PublicHttp,
    Resolver,
    direct_connector,
    is_public,
    system_resolver,
)

__all__ = ["FetchPage", "direct_connector", "html_to_text", "is_public", "system_resolver"]

BODY_LIMIT = 1024 * 1024  # bytes read from a response
TIME_LIMIT_S = 20.0  # for the whole fetch, redirects included
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/ld+json")
USER_AGENT = "Palabre/1.0 (fetch tool)"
ACCEPT = "text/html, text/plain, application/json;q=0.9"


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

    @property
    def _http(self) -> PublicHttp:
        return PublicHttp(
            resolver=self.resolver,
            connector=self.connector,
            time_limit=self.time_limit,
            user_agent=USER_AGENT,
            allowed=self.allowed,
        )

    def vet(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; ToolError when any address it resolves to is not public."""
        try:
            return self._http.vet(host, port)
        except FetchError as exc:
            raise ToolError(str(exc)) from exc

    def fetch(self, url: str) -> str:
        try:
            return self._http.get(url, self._body, accept=ACCEPT)
        except FetchError as exc:
            raise ToolError(str(exc)) from exc

    def _body(self, url: str, response: http.client.HTTPResponse, deadline: float) -> str:
        kind = (response.getheader("Content-Type") or "text/plain").lower()
        if not kind.startswith(TEXT_TYPES):
            raise ToolError(f"{url} is not text ({kind.split(';')[0]}).")
        data, cut = self._http.read_capped(url, response, deadline, self.body_limit)
        charset = response.headers.get_content_charset() or "utf-8"
        try:
            text = data.decode(charset, errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")
        if "html" in kind:
            text = html_to_text(text)
        status = "" if response.status == 200 else f"HTTP {response.status} {response.reason}\n"
        return status + text + (f"\n[… cut at {self.body_limit} bytes]" if cut else "")

    def run(self, arguments: Mapping[str, Any]) -> str:
        return self.fetch(string_argument(arguments, "url"))
