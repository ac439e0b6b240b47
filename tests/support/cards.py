"""Character Card V2 test data: the sample card file, and a PNG card written the way other tools write them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

DATA = Path(__file__).parent.parent / "data" / "characters"
CARD_FILE = DATA / "card_v2_lighthouse.json"


def avatar_image() -> Image.Image:
    """A 24x16 RGBA image whose every pixel differs, so any re-encoding that changes pixels shows."""
    image = Image.new("RGBA", (24, 16))
    image.putdata([(x * 10, y * 15, (x * y) % 256, 255 - x) for y in range(16) for x in range(24)])
    return image


def write_card_png(path: Path, card: dict[str, Any], image: Image.Image | None = None) -> None:
    """Write ``card`` into a PNG's "chara" text chunk (base64 JSON) over ``image`` (the avatar by default)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "palabre-tests")
    info.add_text("chara", base64.b64encode(json.dumps(card).encode("utf-8")).decode("ascii"))
    (image or avatar_image()).save(path, format="PNG", pnginfo=info)
