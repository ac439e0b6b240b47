"""Images as they travel from the page or an API to a loader: decoded, checked and re-encoded once.

Every image is decoded with Pillow and written again as PNG before anything else sees it, so a loader never
parses the sender's bytes (a crafted file, an embedded script, a polyglot) and never opens a URL or a path.
The SHA-256 of the re-encoded bytes names the image: chats store each image once under it, and loaders may
use it as a cache key (an image already evaluated is not encoded again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "Image",
    "ImageError",
    "ModelCannotSeeError",
    "cannot_see",
    "decode_image",
    "image_from_base64",
    "image_from_data_url",
]

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # what a sender may upload for one image, before decoding
MAX_IMAGE_PIXELS = 40_000_000  # about 6300 x 6300: more is a decompression bomb for a chat model
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I
)


class ImageError(ValueError):
    """An image could not be used; the message says why, for the user."""


@dataclass(frozen=True)
class Image:
    """A checked image: PNG bytes written by Pillow, named by their SHA-256."""

    data: bytes
    sha256: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        """The image as a ``data:`` URL (what an OpenAI-compatible server takes)."""
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")

    def pil(self) -> object:
        """The image as a Pillow image in RGB (what Transformers processors take)."""
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self.data)) as opened:
            return opened.convert("RGB")


def decode_image(
    raw: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image:
    """Decode ``raw`` (PNG, JPEG, GIF, WebP, BMP...) and re-encode it as PNG; raises ImageError."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if not raw:
        raise ImageError("The image is empty.")
    if len(raw) > max_bytes:
        raise ImageError(
            f"The image is {len(raw) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(raw)) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels."
                    )
                opened.seek(0)  # an animation: its first frame
                opened.load()
                mode = (
                    "RGBA" if opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info else "RGB"
                )
                picture = opened.convert(mode)
    except ImageError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageError(f"The image is too large to decode safely ({exc}).") from None
    except UnidentifiedImageError:
        raise ImageError("The data is not an image this server reads (PNG, JPEG, GIF, WebP, BMP).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"The image could not be decoded ({type(exc).__name__}: {exc}).") from None
    out = io.BytesIO()
    picture.save(out, format="PNG")
    data = out.getvalue()
    return Image(data=data, sha256=hashlib.sha256(data).hexdigest(), width=width, height=height)


def image_from_base64(text: str, **limits: int) -> Image:
    """An image sent as base64 text (Ollama's ``images``; an Anthropic ``base64`` source)."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("The image is not valid base64.") from None
    return decode_image(raw, **limits)


def image_from_data_url(url: str, **limits: int) -> Image:
    """An image sent as a ``data:`` URL (OpenAI's ``image_url``); only base64 data URLs are images."""
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise ImageError("An image URL must be a base64 data: URL (data:image/png;base64,...).")
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise ImageError(f"The data: URL holds {mime}, not an image.")
    return image_from_base64(url[match.end() :], **limits)


class ModelCannotSeeError(ImageError):
    """Images were sent to a model that cannot take them; the message names the model and what it lacks."""

    def __init__(self, model: str, missing: str) -> None:
        super().__init__(f"{model} cannot see images: {missing}")
        self.model = model
        self.missing = missing


# ModelFacts.extra key under which a loaded model says how it sees images, or why it cannot.
VISION_FACT = "vision"
NO_VISION = "it is a text-only model. Load a vision model to send images."


def cannot_see(name: str, extra: dict[str, str]) -> ModelCannotSeeError:
    """The error for images sent to the model ``name`` whose facts' ``extra`` may say what it lacks."""
    return ModelCannotSeeError(name, extra.get(VISION_FACT) or NO_VISION)
