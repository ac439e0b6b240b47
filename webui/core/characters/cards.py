"""Character Card V2 (SillyTavern / chub.ai) as JSON and as PNG, plus V1 and Pygmalion cards on import.

A card is ``{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}``; in a PNG the card is the
base64 of its UTF-8 JSON in a ``tEXt`` chunk with the keyword ``chara`` (``ccv3`` for V3 cards, read when
``chara`` is missing). PNG files are walked chunk by chunk here (no imaging library): reading checks the
structure and CRCs, writing inserts a fresh ``chara`` chunk before ``IEND`` and leaves every other byte of the
image as it was, so the avatar's pixels survive exactly. This module works on plain dicts; the mapping to
and from a personality lives in ``characters.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
import zlib
from typing import Any

from webui.core.safe_load import load_json

CARD_SPEC = "chara_card_v2"
CARD_SPEC_VERSION = "2.0"
MAX_CARD_BYTES = 20 * 1024 * 1024  # a card or avatar larger than this is refused before it is parsed
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")  # text chunks that hold a card; stripped from avatars, rewritten on export
TEXT_FIELDS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "creator",
    "character_version",
)
LIST_FIELDS = ("alternate_greetings", "tags")
DICT_FIELDS = ("character_book", "extensions")
CARD_FIELDS = TEXT_FIELDS + LIST_FIELDS + DICT_FIELDS
_V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_PYGMALION = {  # Pygmalion / old text-generation-webui JSON -> card field
    "char_name": "name",
    "char_persona": "description",
    "world_scenario": "scenario",
    "char_greeting": "first_mes",
    "example_dialogue": "mes_example",
}


class CardError(ValueError):
    """A card that cannot be read or written; the message says what is wrong with it."""


def is_card(obj: Any) -> bool:
    """True for a V2/V3 card, a V1 card (flat fields, no spec) or a Pygmalion character JSON."""
    if not isinstance(obj, dict):
        return False
    if "spec" in obj:
        return True
    if "context" in obj or "greeting" in obj:
        return False  # a Palabre / text-generation-webui personality
    return "char_name" in obj or ("name" in obj and any(key in obj for key in _V1_FIELDS[1:]))


def card_data(obj: Any) -> dict[str, Any]:
    """The ``data`` dict of a card (V1 and Pygmalion cards are lifted to V2 field names); CardError if broken."""
    if not isinstance(obj, dict):
        raise CardError(f"A character card must be a JSON object, not {type(obj).__name__}.")
    spec = obj.get("spec")
    if spec is not None:
        if spec not in ("chara_card_v2", "chara_card_v3"):
            raise CardError(f"Unsupported card spec {spec!r}; Palabre reads chara_card_v2 (and v3) cards.")
        data = obj.get("data")
        if not isinstance(data, dict):
            raise CardError(f"The {spec} card has no 'data' object.")
        data = dict(data)
    elif "char_name" in obj:
        data = {_PYGMALION[key]: value for key, value in obj.items() if key in _PYGMALION}
    else:
        data = {key: obj[key] for key in _V1_FIELDS if key in obj}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CardError("The character card has no name.")
    return data


def parse_card_json(raw: bytes | str) -> dict[str, Any]:
    """The card ``data`` from card JSON text; CardError for oversized, non-JSON or nameless cards."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"The card is larger than {MAX_CARD_BYTES // (1024 * 1024)} MB.")
    try:
        obj = load_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"The card is not valid JSON: {exc}") from None
    return card_data(obj)


def card_json(data: dict[str, Any]) -> dict[str, Any]:
    """A complete V2 card around ``data``."""
    return {"spec": CARD_SPEC, "spec_version": CARD_SPEC_VERSION, "data": data}


def compose_context(data: dict[str, Any]) -> str:
    """The personality context a card describes: its system prompt (``{{original}}`` removed), description,
    ``{{char}}'s personality: ...`` and ``Scenario: ...``, each non-empty part separated by a blank line.
    Example dialogue (``mes_example``) is not part of it: ``Character.context_for`` appends it."""

    def text(key: str) -> str:
        value = data.get(key)
        return value.strip() if isinstance(value, str) else ""

    parts = [
        text("system_prompt").replace("{{original}}", "").strip(),
        text("description"),
        f"{{{{char}}}}'s personality: {text('personality')}" if text("personality") else "",
        f"Scenario: {text('scenario')}" if text("scenario") else "",
    ]
    return "\n\n".join(part for part in parts if part)


# ---------------------------------------------------------------------------------------------------------
# PNG


def png_chunks(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a PNG file; CardError if it is not a well-formed PNG."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"The PNG file is larger than {MAX_CARD_BYTES // (1024 * 1024)} MB.")
    if not raw.startswith(PNG_SIGNATURE):
        raise CardError("The file is not a PNG image.")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos < len(raw):
        if pos + 12 > len(raw):
            raise CardError("The PNG file is truncated.")
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind = raw[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(raw):
            raise CardError("The PNG file is truncated.")
        payload = raw[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length : end])
        if zlib.crc32(kind + payload) != crc:
            raise CardError(f"The PNG file is damaged (bad checksum in a {kind.decode('latin-1')} chunk).")
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise CardError("The PNG file is incomplete (no IHDR or IEND chunk).")
    return chunks


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """PNG bytes from (type, payload) chunks."""
    out = [PNG_SIGNATURE]
    for kind, payload in chunks:
        out.append(struct.pack(">I", len(payload)) + kind + payload)
        out.append(struct.pack(">I", zlib.crc32(kind + payload)))
    return b"".join(out)


def _inflate(data: bytes) -> bytes:
    decompressor = zlib.decompressobj()
    out = decompressor.decompress(data, MAX_CARD_BYTES)
    if decompressor.unconsumed_tail:
        raise CardError("A compressed text chunk in the PNG expands beyond the size limit.")
    return out


def _text_chunk(kind: bytes, payload: bytes) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt / zTXt / iTXt chunk, else None."""
    try:
        if kind == b"tEXt":
            key, _, text = payload.partition(b"\0")
            return key.decode("latin-1"), text.decode("latin-1")
        if kind == b"zTXt":
            key, _, rest = payload.partition(b"\0")
            return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
        if kind == b"iTXt":
            key, _, rest = payload.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _language, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            return key.decode("latin-1"), (_inflate(text) if compressed else text).decode("utf-8")
    except (zlib.error, IndexError, UnicodeDecodeError):
        return None
    return None


def read_card_png(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(card data, avatar PNG without its card chunks) from a card PNG; CardError with the reason otherwise."""
    chunks = png_chunks(raw)
    texts: dict[str, str] = {}
    for kind, payload in chunks:
        found = _text_chunk(kind, payload)
        if found is not None and found[0] in CARD_KEYWORDS:
            texts.setdefault(found[0], found[1])
    keyword = next((key for key in CARD_KEYWORDS if key in texts), None)
    if keyword is None:
        raise CardError("The PNG image holds no character card (no 'chara' text chunk).")
    try:
        decoded = base64.b64decode("".join(texts[keyword].split()), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"The PNG's '{keyword}' chunk is not valid base64.") from None
    try:
        data = parse_card_json(decoded.decode("utf-8"))
    except UnicodeDecodeError:
        raise CardError(f"The PNG's '{keyword}' chunk is not UTF-8 JSON.") from None
    return data, strip_card_chunks(chunks)


def strip_card_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """The PNG rebuilt without any text chunk that holds a card."""
    kept = []
    for kind, payload in chunks:
        found = _text_chunk(kind, payload) if kind in (b"tEXt", b"zTXt", b"iTXt") else None
        if found is None or found[0] not in CARD_KEYWORDS:
            kept.append((kind, payload))
    return build_png(kept)


def write_card_png(card: dict[str, Any], avatar_png: bytes) -> bytes:
    """``avatar_png`` with ``card`` in a ``chara`` tEXt chunk (any older card chunk removed)."""
    chunks = png_chunks(avatar_png)
    encoded = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    kept = [
        (kind, payload)
        for kind, payload in chunks
        if (found := _text_chunk(kind, payload)) is None or found[0] not in CARD_KEYWORDS
    ]
    return build_png([*kept[:-1], (b"tEXt", b"chara\0" + encoded), kept[-1]])


def placeholder_png(name: str, size: int = 128) -> bytes:
    """A small square avatar in a colour derived from ``name``, with a lighter centre block."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    base = bytes(64 + byte // 2 for byte in digest[:3])
    light = bytes(min(255, value + 80) for value in base)
    rows = []
    inner = range(size // 4, size - size // 4)
    for y in range(size):
        row = b"".join(light if (y in inner and x in inner) else base for x in range(size))
        rows.append(b"\0" + row)
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return build_png([(b"IHDR", header), (b"IDAT", zlib.compress(b"".join(rows), 9)), (b"IEND", b"")])


def image_suffix(raw: bytes) -> str | None:
    """The file suffix for an avatar image's bytes (PNG, JPEG, GIF, WebP), else None."""
    if raw.startswith(PNG_SIGNATURE):
        return ".png"
    if raw.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ".webp"
    return None


# ---------------------------------------------------------------------------------------------------------
# Cards <-> personality fields (plain dicts; characters.Character validates them)

_SPEAKER = re.compile(r"^\s*(\{\{user\}\}|\{\{char\}\}|<USER>|<BOT>)\s*:\s?", re.IGNORECASE)
PALABRE_EXTENSION = "palabre"  # key in ``extensions`` for Palabre-only settings carried by a card


def format_examples(messages: list[dict[str, str]]) -> str:
    """Messages as ``mes_example`` text: ``<START>``, then ``{{user}}: ...`` / ``{{char}}: ...`` lines."""
    speakers = {"user": "{{user}}: ", "assistant": "{{char}}: "}
    lines = [speakers.get(message["role"], "") + message["content"] for message in messages]
    return "\n".join(["<START>", *lines]) if lines else ""


def parse_examples(text: str) -> list[dict[str, str]]:
    """``mes_example`` text back into messages; lines without a speaker continue the previous message."""
    messages: list[dict[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip().lower() == "<start>":
            continue
        match = _SPEAKER.match(line)
        if match:
            role = "user" if match.group(1).lower() in ("{{user}}", "<user>") else "assistant"
            messages.append({"role": role, "content": line[match.end() :]})
        elif messages:
            messages[-1]["content"] += "\n" + line
    return [{"role": m["role"], "content": m["content"].strip()} for m in messages]


def fields_from_card(data: dict[str, Any], palabre_keys: tuple[str, ...]) -> dict[str, Any]:
    """Personality fields from card ``data``: card fields as they are (a value of an unexpected type goes to
    ``card_extra`` with the unknown keys), ``first_mes`` as ``greeting``, ``context`` composed, and the
    ``palabre_keys`` found in ``extensions.palabre``."""
    typed: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        fits = (
            (key in TEXT_FIELDS and isinstance(value, str))
            or (key in LIST_FIELDS and isinstance(value, list) and all(isinstance(v, str) for v in value))
            or (key in DICT_FIELDS and isinstance(value, dict))
        )
        (typed if fits else extra)[key] = value
    extensions = dict(typed.get("extensions", {}))
    own = extensions.get(PALABRE_EXTENSION)
    if isinstance(own, dict) and set(own) <= set(palabre_keys):
        del extensions[PALABRE_EXTENSION]  # otherwise it is not ours to interpret: kept whole
    else:
        own = {}
    fields = {key: value for key, value in typed.items() if key != "first_mes"}
    fields.update(own, greeting=typed.get("first_mes", ""), extensions=extensions, card_extra=extra)
    fields["context"] = compose_context(typed)
    if own.get("example_messages") and fields.get("mes_example") == format_examples(own["example_messages"]):
        fields["mes_example"] = ""  # written from the example messages on export
    return fields


def card_from_fields(fields: dict[str, Any], palabre: dict[str, Any]) -> dict[str, Any]:
    """A complete V2 card from personality fields (a ``model_dump()``) and the Palabre-only settings to carry
    in ``extensions.palabre``; see characters.py for how ``context`` is written."""
    data = {key: fields.get(key) for key in CARD_FIELDS if key != "first_mes"}
    data["first_mes"] = fields.get("greeting", "")
    context = fields.get("context", "")
    if context.strip() != compose_context(data).strip():
        data.update(description=context, personality="", scenario="", system_prompt="")
    data["mes_example"] = data["mes_example"] or format_examples(fields.get("example_messages") or [])
    data["extensions"] = {**(data["extensions"] or {}), **({PALABRE_EXTENSION: palabre} if palabre else {})}
    if data["character_book"] is None:
        del data["character_book"]
    return card_json({**data, **fields.get("card_extra", {})})


def to_png(raw: bytes) -> bytes | None:
    """A JPEG/GIF/WebP image converted to PNG with Pillow when it is installed, else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except Exception:
        return None
