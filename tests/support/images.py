"""Small images for the image tests: a PNG with known pixels, a decompression bomb, and a loopback HTTP server
that serves images and records every request it gets (to prove that a refused URL was never contacted)."""

from __future__ import annotations

import base64
import http.server
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# 3 x 2 pixels, each a different colour: a decoded image that matches these came through intact.
PIXELS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (12, 34, 56)]
SIZE = (3, 2)


def png_bytes(pixels: list[tuple[int, int, int]] = PIXELS, size: tuple[int, int] = SIZE) -> bytes:
    from PIL import Image

    picture = Image.new("RGB", size)
    picture.putdata(pixels)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(out, format="JPEG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def pixels_of(data: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of an encoded image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        raw = opened.convert("RGB").tobytes()
    return [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


@dataclass
class ImageSite:
    """A loopback HTTP server: ``routes`` maps a path to (status, headers, body); ``hits`` lists each path
    requested, in order."""

    port: int
    hits: list[str] = field(default_factory=list)
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)


@contextmanager
def image_site() -> Iterator[ImageSite]:
    site = ImageSite(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            site.hits.append(self.path)
            status, headers, body = site.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"no"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
