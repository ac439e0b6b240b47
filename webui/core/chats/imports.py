"""Parsing of imported chat files: Palabre's own JSON and text-generation-webui's history JSON."""

from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Any

from webui.core.chats.media_files import MediaFiles, check_sha256
from webui.core.chats.records import (
    ROLES,
    TGW_GREETING_MARK,
    AlternativeRecord,
    AttachmentRecord,
    ChatStoreError,
    GroundingRecord,
    ImageRef,
    MessageRecord,
    check_choice,
    grounding_from,
    grounding_json,
    tool_rounds_from,
    tool_rounds_json,
)
from webui.core.media import Image, ImageError, image_from_base64


def number_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def export_alternative(alternative: AlternativeRecord) -> dict[str, Any]:
    """One alternative in Palabre's chat JSON (its reasoning only when it has some)."""
    item: dict[str, Any] = {
        "content": alternative.content,
        "model": alternative.model,
        "created_at": alternative.created_at,
    }
    if alternative.reasoning:
        item["reasoning"] = alternative.reasoning
        item["reasoning_seconds"] = alternative.reasoning_seconds
    if alternative.tool_rounds:
        item["tool_rounds"] = json.loads(tool_rounds_json(alternative.tool_rounds))
    return item


def export_message(message: MessageRecord, media: MediaFiles) -> dict[str, Any]:
    """One message in Palabre's chat JSON: every alternative, and its images (base64 PNG) and files."""
    item: dict[str, Any] = {
        "role": message.role,
        "created_at": message.created_at,
        "active": message.active,
        "alternatives": [export_alternative(a) for a in message.alternatives],
    }
    if message.images:
        item["images"] = [_export_image(ref, media) for ref in message.images]
    if message.attachments:
        item["attachments"] = [
            {
                "name": a.name,
                "kind": a.kind,
                "sha256": a.sha256,
                "size": a.size,
                "tokens": a.tokens,
                "text": a.text,
            }
            for a in message.attachments
        ]
    if message.grounding is not None:
        context, note, sources = grounding_json(message.grounding)
        item["grounding"] = {"context": context, "note": note, "sources": json.loads(sources)}
    return item


def _grounding_of(item: Mapping[str, Any], where: str) -> GroundingRecord | None:
    raw = item.get("grounding")
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("context", ""), str):
        raise ChatStoreError(f'{where} has a "grounding" that is not an object with a text "context".')
    sources = raw.get("sources", [])
    return grounding_from(
        str(raw.get("context", "")),
        str(raw.get("note", "")),
        json.dumps(sources if isinstance(sources, list) else []),
    )


def _export_image(ref: ImageRef, media: MediaFiles) -> dict[str, Any]:
    """An image with its PNG as base64 (without "data" when its file is gone: the rest still exports)."""
    item: dict[str, Any] = {"sha256": ref.sha256, "width": ref.width, "height": ref.height}
    with suppress(ChatStoreError):
        item["data"] = base64.b64encode(media.image(ref).data).decode("ascii")
    return item


def _images_of(item: Mapping[str, Any], where: str, found: dict[str, Image]) -> tuple[ImageRef, ...]:
    """A message's images, each decoded and re-encoded again (a file is never trusted); ``found`` gets them."""
    raw = item.get("images", [])
    if not isinstance(raw, list):
        raise ChatStoreError(f'{where} has "images" that are not a list.')
    refs = []
    for number, entry in enumerate(raw, 1):
        if not isinstance(entry, Mapping):
            raise ChatStoreError(f"{where}, image {number}: not an object.")
        data = entry.get("data")
        if data is None:
            continue  # exported without its file (it was gone): nothing to show
        if not isinstance(data, str):
            raise ChatStoreError(f"{where}, image {number}: its data is not base64 text.")
        try:
            image = image_from_base64(data)
        except ImageError as exc:
            raise ChatStoreError(f"{where}, image {number}: {exc}") from None
        found[image.sha256] = image
        refs.append(ImageRef(image.sha256, image.width, image.height))
    return tuple(refs)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _attachments_of(item: Mapping[str, Any], where: str) -> tuple[AttachmentRecord, ...]:
    raw = item.get("attachments", [])
    if not isinstance(raw, list):
        raise ChatStoreError(f'{where} has "attachments" that are not a list.')
    records = []
    for number, entry in enumerate(raw, 1):
        name, kind, text = (
            entry.get(k) if isinstance(entry, Mapping) else None for k in ("name", "kind", "text")
        )
        if not isinstance(entry, Mapping) or not isinstance(name, str) or not isinstance(kind, str):
            raise ChatStoreError(f"{where}, file {number}: a file needs a name and a kind.")
        if text is not None and not isinstance(text, str):
            raise ChatStoreError(f"{where}, file {number}: its text is not text.")
        try:
            sha256 = check_sha256(entry.get("sha256"))
        except ChatStoreError as exc:
            raise ChatStoreError(f"{where}, file {number}: {exc}") from None
        records.append(
            AttachmentRecord(
                name, kind, sha256, _count(entry.get("size")) or 0, _count(entry.get("tokens")), text
            )
        )
    return tuple(records)


def _reasoning_of(alternative: Mapping[str, Any], where: str) -> tuple[str, float | None]:
    reasoning = alternative.get("reasoning", "")
    if not isinstance(reasoning, str):
        raise ChatStoreError(f"{where} has a reasoning that is not text.")
    seconds = number_or_none(alternative.get("reasoning_seconds"))
    return reasoning, seconds if seconds is not None and 0 <= seconds < float("inf") else None


# text-generation-webui keeps a thinking model's reasoning in the reply's text, in a leading <think> block.
_TGW_THINKING = re.compile(r"\A\s*<think>(.*?)</think>\s*", re.DOTALL)


def split_thinking(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a reply that opens with a ``<think>...</think>`` block; (text, "") otherwise."""
    found = _TGW_THINKING.match(text)
    if found is None:
        return text, ""
    return text[found.end() :], found.group(1).strip()


def palabre_messages(raw: object, images: dict[str, Image] | None = None) -> list[MessageRecord]:
    """The messages of a Palabre chat file; ``images`` gets every image they hold, by SHA-256 (to keep)."""
    found: dict[str, Image] = {} if images is None else images
    if not isinstance(raw, list):
        raise ChatStoreError('A Palabre chat file needs a "messages" list.')
    now = time.time()
    messages: list[MessageRecord] = []
    for number, item in enumerate(raw, 1):
        where = f"Message {number} of the chat file"
        if not isinstance(item, Mapping):
            raise ChatStoreError(f"{where} is not an object.")
        try:
            role = check_choice(item.get("role"), ROLES, "message role")
        except ChatStoreError as exc:
            raise ChatStoreError(f"{where}: {exc}") from None
        raw_alternatives = item.get("alternatives", [item["content"]] if "content" in item else None)
        if not isinstance(raw_alternatives, list) or not raw_alternatives:
            raise ChatStoreError(f'{where} needs a non-empty "alternatives" list (or a "content" text).')
        alternatives: list[AlternativeRecord] = []
        for alternative in raw_alternatives:
            if isinstance(alternative, str):
                alternative = {"content": alternative}
            if not isinstance(alternative, Mapping) or not isinstance(alternative.get("content"), str):
                raise ChatStoreError(f"{where} has an alternative without a text content.")
            model = alternative.get("model")
            if model is not None and not isinstance(model, str):
                raise ChatStoreError(f"{where} names its model with {model!r}, which is not text.")
            reasoning, seconds = _reasoning_of(alternative, where)
            alternatives.append(
                AlternativeRecord(
                    alternative["content"],
                    model,
                    number_or_none(alternative.get("created_at")) or now,
                    reasoning,
                    seconds,
                    tool_rounds_from(alternative.get("tool_rounds")),
                )
            )
        active = item.get("active", 0)
        if not isinstance(active, int) or isinstance(active, bool) or not 0 <= active < len(alternatives):
            raise ChatStoreError(f"{where} shows version {active!r}, but it has {len(alternatives)}.")
        messages.append(
            MessageRecord(
                role,
                tuple(alternatives),
                active,
                number_or_none(item.get("created_at")) or now,
                images=_images_of(item, where, found),
                attachments=_attachments_of(item, where),
                grounding=_grounding_of(item, where),
            )
        )
    return messages


def tgw_rows(data: Mapping[str, Any]) -> list[list[str]]:
    """The [user, bot] rows of a text-generation-webui history: ``internal`` (raw text) when present."""
    rows, escaped = data.get("internal", data.get("data")), False
    if rows is None:  # only the HTML-escaped copy survived: undo the escaping
        rows, escaped = data.get("visible", data.get("data_visible")), True
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) == 2 and all(isinstance(text, str) for text in row) for row in rows
    ):
        raise ChatStoreError(
            'A text-generation-webui history needs "internal": a list of [user message, reply] text pairs.'
        )
    return [[html.unescape(text) for text in row] for row in rows] if escaped else rows


def tgw_message(role: str, text: str, meta: object, now: float) -> MessageRecord:
    """One message; versions (regenerated replies) and timestamps come from the newer "metadata" block."""
    created_at = now
    alternatives = [text]
    active = 0
    if isinstance(meta, Mapping):
        stamp = meta.get("timestamp")
        if isinstance(stamp, str):
            with suppress(ValueError):
                created_at = datetime.strptime(stamp, "%b %d, %Y %H:%M").timestamp()
        versions = meta.get("versions")
        if isinstance(versions, list):
            contents = [
                v["content"] for v in versions if isinstance(v, Mapping) and isinstance(v.get("content"), str)
            ]
            if contents:
                if text not in contents:
                    contents.append(text)
                alternatives, active = contents, contents.index(text)
                chosen = meta.get("current_version_index")
                if isinstance(chosen, int) and 0 <= chosen < len(contents) and contents[chosen] == text:
                    active = chosen
    if role == "assistant":  # the reasoning goes apart from the answer, as Palabre keeps it
        parts = [split_thinking(text) for text in alternatives]
        records = tuple(AlternativeRecord(answer, None, created_at, reasoning) for answer, reasoning in parts)
    else:
        records = tuple(AlternativeRecord(text, None, created_at) for text in alternatives)
    return MessageRecord(role, records, active, created_at)


def tgw_messages(data: Mapping[str, Any]) -> list[MessageRecord]:
    rows = tgw_rows(data)
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    now = time.time()
    messages: list[MessageRecord] = []
    for index, (user, bot) in enumerate(rows):
        if user and user != TGW_GREETING_MARK:
            messages.append(tgw_message("user", user, metadata.get(f"user_{index}"), now))
        if bot:
            messages.append(tgw_message("assistant", bot, metadata.get(f"assistant_{index}"), now))
    return messages
