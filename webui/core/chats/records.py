"""The records the conversation store hands out and reads from imports, and their validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webui.core.documents.attach import Source

MODES = ("instruct", "chat", "chat-instruct")  # the same as webui.core.prompts.MODES (a test checks)
ROLES = ("system", "user", "assistant")
DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 40
EXPORT_FORMAT = "palabre-chat"
EXPORT_VERSION = 2  # 2: messages may hold images (base64 PNG) and attached files
TGW_GREETING_MARK = "<|BEGIN-VISIBLE-CHAT|>"  # text-generation-webui's user text for a greeting-only row


class ChatStoreError(ValueError):
    """Unknown conversation or message, invalid argument or import; the message is meant for the user."""


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of a reply and what became of it (status: done, error, rejected, unknown, ...)."""

    id: str
    name: str
    arguments: str
    result: str = ""
    status: str = "done"
    seconds: float | None = None


@dataclass(frozen=True)
class ToolRoundRecord:
    """A step of a reply that used tools: what the model wrote and thought, then the calls it made."""

    text: str
    reasoning: str
    calls: tuple[ToolCallRecord, ...]


def tool_rounds_json(rounds: tuple[ToolRoundRecord, ...]) -> str:
    """The rounds as stored (empty text for a reply without tool calls)."""
    if not rounds:
        return ""
    return json.dumps(
        [
            {
                "text": r.text,
                "reasoning": r.reasoning,
                "calls": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "arguments": c.arguments,
                        "result": c.result,
                        "status": c.status,
                        "seconds": c.seconds,
                    }
                    for c in r.calls
                ],
            }
            for r in rounds
        ],
        ensure_ascii=False,
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatStoreError("A tool step holds a value that is not text.")
    return value


def tool_rounds_from(data: Any) -> tuple[ToolRoundRecord, ...]:
    """Rounds from stored JSON text or an import's list; ChatStoreError when malformed."""
    if data in ("", None):
        return ()
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ChatStoreError("The stored tool steps are not valid JSON.") from exc
    if not isinstance(data, list):
        raise ChatStoreError("Tool steps must be a list.")
    rounds = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("calls", []), list):
            raise ChatStoreError("A tool step must be an object with a list of calls.")
        calls = []
        for call in item.get("calls", []):
            if not isinstance(call, dict):
                raise ChatStoreError("A tool call must be an object.")
            seconds = call.get("seconds")
            calls.append(
                ToolCallRecord(
                    _text(call.get("id", "")),
                    _text(call.get("name", "")),
                    _text(call.get("arguments", "{}")),
                    _text(call.get("result", "")),
                    _text(call.get("status", "done")),
                    float(seconds)
                    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                    else None,
                )
            )
        rounds.append(
            ToolRoundRecord(_text(item.get("text", "")), _text(item.get("reasoning", "")), tuple(calls))
        )
    return tuple(rounds)


@dataclass(frozen=True)
class ImageRef:
    """An image a message shows: the PNG stored once under its SHA-256 (``ChatStore.image`` reads it)."""

    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class GroundingRecord:
    """What a user's message was given with, for the model: its files' text (whole) or the numbered passages
    found for it (from its files and the conversation's collections), and the note the page shows."""

    context: str  # added after the message's text in every prompt (so later turns see what this one did)
    note: str  # "given whole: ..." / "through retrieval: ..." / "3 passages from handbook"
    sources: tuple[Source, ...] = ()  # the numbered passages a reply cites as [n]


@dataclass(frozen=True)
class AttachmentRecord:
    """A file sent with a message (a document): what its chip shows and the text the model is given.

    ``sha256`` names the file's bytes (kept once under it, see ``MediaFiles``); ``text`` is None until the
    file's text has been extracted, and ``tokens`` None until it has been counted.
    """

    name: str
    kind: str
    sha256: str
    size: int = 0
    tokens: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    position: int
    role: str
    content: str  # the active alternative
    alternatives: tuple[str, ...]
    active: int
    model: str | None  # the model that wrote the active alternative
    created_at: float
    # A thinking model's reasoning before the active alternative's answer (``content`` is the answer alone),
    # and how long it thought (None: not measured).
    reasoning: str = ""
    reasoning_seconds: float | None = None
    # The tool calls the reply made before its answer (rounds of calls and their results), in order.
    tool_rounds: tuple[ToolRoundRecord, ...] = ()
    # The images and files sent with the message (every version of its text shares them), in order.
    images: tuple[ImageRef, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = ()
    grounding: GroundingRecord | None = None  # a user's message: what its files and collections added


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    character: str | None
    mode: str
    created_at: float
    updated_at: float
    message_count: int
    parent_id: int | None = None
    branched_from_message: int | None = None


@dataclass(frozen=True)
class Conversation(ConversationSummary):
    """A conversation's summary fields plus its messages, in order."""

    messages: tuple[StoredMessage, ...] = ()


@dataclass(frozen=True)
class AlternativeRecord:
    content: str
    model: str | None
    created_at: float
    reasoning: str = ""
    reasoning_seconds: float | None = None
    tool_rounds: tuple[ToolRoundRecord, ...] = ()


@dataclass(frozen=True)
class MessageRecord:
    """A message with the details of every alternative, as stored or as read from an import."""

    role: str
    alternatives: tuple[AlternativeRecord, ...]
    active: int
    created_at: float
    id: int = 0
    position: int = 0
    images: tuple[ImageRef, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = ()
    grounding: GroundingRecord | None = None

    def public(self) -> StoredMessage:
        shown = self.alternatives[self.active]
        contents = tuple(a.content for a in self.alternatives)
        return StoredMessage(
            self.id,
            self.position,
            self.role,
            shown.content,
            contents,
            self.active,
            shown.model,
            self.created_at,
            shown.reasoning,
            shown.reasoning_seconds,
            shown.tool_rounds,
            self.images,
            self.attachments,
            self.grounding,
        )


def title_from(text: str) -> str:
    """A conversation title from its first user message: one line, at most ~40 characters."""
    line = " ".join(text.split())
    if len(line) <= TITLE_LENGTH:
        return line or DEFAULT_TITLE
    cut = line[:TITLE_LENGTH]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:") + "…"


def check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ChatStoreError(f"Unknown {what} {value!r}; expected one of {', '.join(choices)}.")
    return str(value)


def check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ChatStoreError(f"The {what} must be text, not {type(text).__name__}.")
    return text


def grounding_json(grounding: GroundingRecord) -> tuple[str, str, str]:
    """(context, note, sources as JSON) for the message_grounding table."""
    sources = json.dumps([source.to_dict() for source in grounding.sources], ensure_ascii=False)
    return grounding.context, grounding.note, sources


def grounding_from(context: str, note: str, sources: str) -> GroundingRecord:
    """A stored grounding; sources that cannot be read are left out (the context still reaches the model)."""
    read: list[Source] = []
    try:
        items = json.loads(sources or "[]")
    except ValueError:
        items = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        try:
            page = item.get("page")
            chunk = item.get("chunk_id")
            read.append(
                Source(
                    int(item["number"]),
                    str(item["document"]),
                    int(page) if isinstance(page, int) else None,
                    str(item["text"]),
                    int(chunk) if isinstance(chunk, int) else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return GroundingRecord(context, note, tuple(read))
