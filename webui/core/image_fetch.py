"""Where an API request's images may come from: ``data:`` URLs always, http(s) URLs only when the server was
started with ``--allow-image-host`` and only from those hosts, never a path or any other scheme.

No library is ever handed a URL (llama-cpp-python's and Transformers' image loaders would open ``file://``
paths and follow redirects to anywhere): a remote image is fetched here through webui.core.public_http
(public addresses only, checked after DNS resolution and on every redirect, the connection made to the
checked address), with a timeout and a byte cap, then decoded and re-encoded by webui.core.media.
"""

from __future__ import annotations

import fnmatch
import http.client
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from webui.core.media import MAX_IMAGE_BYTES, Image, ImageError, decode_image, image_from_data_url
from webui.core.public_http import (
    Connector,
    FetchError,
    FetchRefused,
    PublicHttp,
    Resolver,
    direct_connector,
    system_resolver,
)

__all__ = [
    "IMAGE_HOST_OPTION",
    "ImageFetcher",
    "ImageSources",
    "ImageUrlRefused",
    "host_matches",
    "normalise_hosts",
]

IMAGE_HOST_OPTION = "--allow-image-host"  # the `serve` option that turns remote images on
TIME_LIMIT_S = 15.0  # for one image, redirects included
USER_AGENT = "Palabre/1.0 (image fetch)"
ACCEPT = "image/png, image/jpeg, image/gif, image/webp, image/bmp;q=0.9, */*;q=0.1"
# Content types an image may come with (servers that do not know the type send octet-stream).
_IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class ImageUrlRefused(ImageError):
    """An image URL this server will not fetch (the message says why, and how to allow it if it can be)."""


def normalise_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    """``--allow-image-host`` values: lower case, without a trailing dot, blanks and repeats left out;
    ValueError for one that is not a host name or pattern (a URL, a path, a port)."""
    kept: list[str] = []
    for raw in hosts:
        for host in raw.split(","):
            host = host.strip().lower().rstrip(".")
            if not host:
                continue
            if any(mark in host for mark in "/:@[] \t"):
                raise ValueError(
                    f"{raw!r} is not a host name: give names such as images.example.com, *.example.com, or *."
                )
            if host not in kept:
                kept.append(host)
    return tuple(kept)


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` is allowed by ``patterns``: an exact name, ``*.example.com`` (its subdomains and
    example.com itself), or ``*`` (any host; the addresses are still checked)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and (host == pattern[2:] or fnmatch.fnmatchcase(host, pattern)):
            return True
    return False


class ImageFetcher:
    """Fetches images over http(s) from ``hosts`` (see host_matches) on public addresses only.

    ``resolver`` and ``connector`` are the network (tests replace them); ``max_bytes`` caps the download,
    ``time_limit`` the whole fetch."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        max_bytes: int = MAX_IMAGE_BYTES,
        time_limit: float = TIME_LIMIT_S,
    ) -> None:
        self.hosts = normalise_hosts(hosts)
        self.max_bytes = max_bytes
        self._http = PublicHttp(
            resolver=resolver,
            connector=connector,
            time_limit=time_limit,
            user_agent=USER_AGENT,
            host_allowed=self.allows,
        )

    def allows(self, host: str) -> bool:
        return host_matches(host, self.hosts)

    def fetch(self, url: str) -> Image:
        """The image at ``url``, decoded and re-encoded; ImageUrlRefused for a host or address that is not
        allowed, ImageError for a failed download or something that is not an image."""
        host = urlsplit(url.strip()).hostname or ""
        if not self.allows(host):
            allowed = ", ".join(self.hosts)
            raise ImageUrlRefused(
                f"Images are fetched only from the hosts this server allows ({allowed}), not from {host!r}: "
                "send the image as a base64 data: URL instead."
            )
        try:
            raw = self._http.get(url, self._read, accept=ACCEPT)
        except FetchRefused as exc:
            raise ImageUrlRefused(f"The image at {url} was not fetched: {exc}") from None
        except FetchError as exc:
            raise ImageError(f"The image at {url} was not fetched: {exc}") from None
        return decode_image(raw, max_bytes=self.max_bytes)

    def _read(self, url: str, response: http.client.HTTPResponse, deadline: float) -> bytes:
        if response.status != 200:
            raise ImageError(
                f"The image at {url} could not be fetched: HTTP {response.status} {response.reason}."
            )
        kind = (
            (response.getheader("Content-Type") or "application/octet-stream").split(";")[0].strip().lower()
        )
        if not kind.startswith(_IMAGE_TYPES):
            raise ImageError(f"{url} is not an image (its server says {kind}).")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise ImageError(
                f"The image at {url} is {int(length) / 2**20:.1f} MiB; the limit is "
                f"{self.max_bytes / 2**20:.0f} MiB."
            )
        data, cut = self._http.read_capped(url, response, deadline, self.max_bytes)
        if cut:
            raise ImageError(f"The image at {url} is larger than {self.max_bytes / 2**20:.0f} MiB: refused.")
        return data


@dataclass(frozen=True)
class ImageSources:
    """How an API request's image URLs are read: ``data:`` URLs always; http(s) URLs through ``fetcher``
    when the server allows remote images (None: refused, saying which option allows them); ``file:``, paths
    and other schemes never."""

    fetcher: ImageFetcher | None = None

    @classmethod
    def for_hosts(cls, hosts: Sequence[str]) -> ImageSources:
        """Data URLs only without ``hosts``; with them, http(s) images from those hosts too."""
        return cls(ImageFetcher(hosts) if hosts else None)

    def read(self, url: str) -> Image:
        """The image ``url`` names; ImageError (ImageUrlRefused for a URL this server will not fetch)."""
        text = url.strip()
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if scheme == "data":
            return image_from_data_url(text)
        shown = text if len(text) <= 120 else text[:117] + "..."
        if scheme in ("http", "https"):
            if self.fetcher is None:
                raise ImageUrlRefused(
                    f"Image URLs are not fetched by this server ({shown}): send the image as a base64 data: "
                    f"URL, or start the server with {IMAGE_HOST_OPTION} HOST to let it fetch images from "
                    "HOST (public addresses only)."
                )
            return self.fetcher.fetch(text)
        if scheme == "file":
            raise ImageUrlRefused(
                f"file: URLs are never read ({shown}): send the image as a base64 data: URL."
            )
        raise ImageUrlRefused(
            f"An image must be a base64 data: URL (data:image/png;base64,...) or an http(s) URL, not {shown!r}."
        )


DATA_URLS_ONLY = ImageSources()  # frozen, no fetcher: nothing but data: URLs
