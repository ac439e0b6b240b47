"""The records the conversation store hands out and reads from imports, and their validation."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("instruct", "chat", "chat-instruct")  # the same as webui.core.prompts.MODES (a test checks)
ROLES = ("system", "user", "assistant")
DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 40
EXPORT_FORMAT = "palabre-chat"
EXPORT_VERSION = 1
TGW_GREETING_MARK = "<|BEGIN-VISIBLE-CHAT|>"  # text-generation-webui's user text for a greeting-only row


class ChatStoreError(ValueError):
    """Unknown conversation or message, invalid argument or import; the message is meant for the user."""


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


@dataclass(frozen=True)
class MessageRecord:
    """A message with the details of every alternative, as stored or as read from an import."""

    role: str
    alternatives: tuple[AlternativeRecord, ...]
    active: int
    created_at: float
    id: int = 0
    position: int = 0

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
