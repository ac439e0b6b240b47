"""The conversation store: every chat in one SQLite database (``user_data/palabre.db``), never lost.

Model: a conversation holds messages in positions 0, 1, 2, ...; a message keeps every alternative (the
regenerated replies, or "swipes") and which one is shown; an alternative written by a thinking model keeps its
reasoning (and how long it took) apart from its answer, so the answer alone is what is edited, copied and sent
back to the model. A branch is a new conversation holding copies of the
messages up to the one it was branched from, and remembers where it came from.

Durability: the database runs in WAL mode with ``synchronous=FULL`` and every write is one transaction. WAL with
``synchronous=NORMAL`` already survives a crash or ``kill -9`` of the process (a committed transaction sits in the
WAL file, in the OS page cache); FULL also fsyncs the WAL on each commit, so a committed message survives a power
loss or a kernel crash too. Measured cost on the build machine's ext4 disk: ``append`` 0.3 -> 0.9 ms,
``set_content`` of a growing 7 KB reply 0.3 -> 0.55 ms; far below anything a person or a model notices. A streamed
reply should still be saved a few times a second, not per token.

Concurrency: one connection per store, shared by every thread behind a lock (``check_same_thread=False``), so
each call is atomic for the threads of one process; several processes may open the same file at once: writes
start with ``BEGIN IMMEDIATE`` and wait for each other up to ``busy_timeout``.

Images and files: a message's images (``ImageRef``) and sent files (``AttachmentRecord``) are rows naming a
SHA-256; the bytes are kept once per hash beside the database (``MediaFiles``: ``images/``, ``attachments/``),
written before the message that names them is committed.

Search: titles and message contents (every alternative) are matched case-insensitively with Python's
``str.casefold`` registered as an SQL function, so "ÉTÉ" finds "été" and no LIKE wildcard needs escaping
(a full scan: ~90 ms over 20,000 messages, 11 MB of text).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from itertools import groupby
from pathlib import Path
from types import EllipsisType
from typing import Any

from webui.core.chats.imports import export_message, number_or_none, palabre_messages, tgw_messages
from webui.core.chats.media_files import MediaFiles, check_attachment
from webui.core.chats.records import (
    DEFAULT_TITLE,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MODES,
    ROLES,
    TGW_GREETING_MARK,
    TITLE_LENGTH,
    AlternativeRecord,
    AttachmentRecord,
    ChatStoreError,
    Conversation,
    ConversationSummary,
    GroundingRecord,
    ImageRef,
    MessageRecord,
    StoredMessage,
    ToolRoundRecord,
    check_choice,
    check_text,
    grounding_json,
    title_from,
    tool_rounds_from,
    tool_rounds_json,
)
from webui.core.chats.schema import ALTERNATIVE_COLUMNS, MIGRATIONS, SUMMARY_SQL, with_media
from webui.core.media import Image
from webui.core.sqlite_tx import locked_transaction

__all__ = [
    "DEFAULT_TITLE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MODES",
    "ROLES",
    "TGW_GREETING_MARK",
    "TITLE_LENGTH",
    "AttachmentRecord",
    "ChatStore",
    "ChatStoreError",
    "Conversation",
    "ConversationSummary",
    "ImageRef",
    "StoredMessage",
    "title_from",
]

BUSY_TIMEOUT_S = 30.0


def _fold(text: object) -> str | None:
    return text.casefold() if isinstance(text, str) else None


def _check_character(character: object) -> str | None:
    if character is not None and (not isinstance(character, str) or not character.strip()):
        raise ChatStoreError(f"A character must be a non-empty name or None, not {character!r}.")
    return character


def _check_seconds(seconds: object) -> float | None:
    """A reasoning duration: a number of seconds from 0, or None (not measured)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < float("inf"):
        raise ChatStoreError(f"A reasoning duration is a number of seconds from 0, not {seconds!r}.")
    return float(seconds)


class ChatStore:
    """Conversations in one SQLite file; safe to share between threads and between processes."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(db_path)
        self.media = MediaFiles(self.path.parent)
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ChatStoreError(f"Cannot open the chat database {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise ChatStoreError(f"The chat database {self.path} cannot use write-ahead logging.")
            conn.execute("PRAGMA synchronous = FULL")  # see the module docstring for why FULL
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("palabre_fold", 1, _fold, deterministic=True)
            self._migrate(conn)
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise ChatStoreError(f"{self.path} is not a usable chat database: {exc}") from exc
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise ChatStoreError(
                    f"The chat database {self.path} was written by a newer Palabre "
                    f"(schema {version}, this one knows {len(MIGRATIONS)})."
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- plumbing ------------------------------------------------------------------------------------------

    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        """One transaction under the lock: IMMEDIATE for writes, a plain BEGIN for a consistent read."""
        return locked_transaction(self._lock, self._conn, begin, ChatStoreError, f"chat database {self.path}")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN")

    @staticmethod
    def _touch(conn: sqlite3.Connection, conversation_id: int) -> None:
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))

    @staticmethod
    def _summary(conn: sqlite3.Connection, conversation_id: int) -> ConversationSummary:
        row = conn.execute(f"{SUMMARY_SQL} WHERE c.id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ChatStoreError(f"There is no conversation with id {conversation_id}.")
        return ConversationSummary(*row)

    @staticmethod
    def _messages(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[MessageRecord]:
        rows = conn.execute(
            f"""SELECT m.id, m.position, m.role, m.active, m.created_at, a.content, a.model, a.created_at,
            a.reasoning, a.reasoning_seconds, a.tool_rounds FROM messages m JOIN alternatives a ON a.message_id = m.id
            WHERE {where} ORDER BY m.position, a.alt_index""",
            args,
        ).fetchall()
        messages = []
        for (message_id, position, role, active, created_at), group in groupby(rows, lambda r: r[:5]):
            alternatives = tuple(
                AlternativeRecord(row[5], row[6], row[7], row[8], row[9], tool_rounds_from(row[10]))
                for row in group
            )
            active = min(active, len(alternatives) - 1)
            messages.append(MessageRecord(role, alternatives, active, created_at, message_id, position))
        return with_media(conn, messages, where, args)

    def _message(self, conn: sqlite3.Connection, message_id: int) -> StoredMessage:
        found = self._messages(conn, "m.id = ?", (message_id,))
        if not found:
            raise ChatStoreError(f"There is no message with id {message_id}.")
        return found[0].public()

    @staticmethod
    def _owner(conn: sqlite3.Connection, message_id: int) -> tuple[int, int]:
        """(conversation id, active index) of a message."""
        row = conn.execute(
            "SELECT conversation_id, active FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise ChatStoreError(f"There is no message with id {message_id}.")
        return row[0], row[1]

    @staticmethod
    def _insert_conversation(
        conn: sqlite3.Connection,
        *,
        title: str | None,
        character: str | None,
        mode: str,
        created_at: float | None = None,
        parent: tuple[int, int] | None = None,
    ) -> int:
        now = time.time()
        cursor = conn.execute(
            """INSERT INTO conversations (title, auto_title, character, mode, created_at, updated_at,
            parent_id, branched_from_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                title if title is not None else DEFAULT_TITLE,
                int(title is None),
                character,
                mode,
                created_at if created_at is not None else now,
                now,
                *(parent or (None, None)),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def _insert_message(conn: sqlite3.Connection, conversation_id: int, message: MessageRecord) -> int:
        """Append ``message`` after the conversation's last one (inside the caller's write transaction)."""
        position = conn.execute(
            "SELECT coalesce(max(position) + 1, 0) FROM messages WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()[0]
        cursor = conn.execute(
            "INSERT INTO messages (conversation_id, position, role, active, created_at) VALUES (?, ?, ?, ?, ?)",
            (conversation_id, position, message.role, message.active, message.created_at),
        )
        message_id = cursor.lastrowid
        assert message_id is not None
        conn.executemany(
            f"INSERT INTO alternatives {ALTERNATIVE_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    message_id,
                    i,
                    a.content,
                    a.model,
                    a.created_at,
                    a.reasoning,
                    a.reasoning_seconds,
                    tool_rounds_json(a.tool_rounds),
                )
                for i, a in enumerate(message.alternatives)
            ],
        )
        conn.executemany(
            "INSERT INTO message_images (message_id, slot, sha256, width, height) VALUES (?, ?, ?, ?, ?)",
            [(message_id, i, r.sha256, r.width, r.height) for i, r in enumerate(message.images)],
        )
        conn.executemany(
            """INSERT INTO message_attachments (message_id, slot, name, kind, sha256, size, tokens, text)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (message_id, i, a.name, a.kind, a.sha256, a.size, a.tokens, a.text)
                for i, a in enumerate(message.attachments)
            ],
        )
        if message.grounding is not None:
            conn.execute(
                "INSERT INTO message_grounding (message_id, context, note, sources) VALUES (?, ?, ?, ?)",
                (message_id, *grounding_json(message.grounding)),
            )
        text = message.alternatives[message.active].content
        if message.role == "user" and text.strip():  # the first user message names an untitled conversation
            conn.execute(
                "UPDATE conversations SET title = ?, auto_title = 0 WHERE id = ? AND auto_title = 1",
                (title_from(text), conversation_id),
            )
        return message_id

    # -- conversations -------------------------------------------------------------------------------------

    def create(
        self, *, character: str | None = None, mode: str = "instruct", title: str | None = None
    ) -> ConversationSummary:
        """A new empty conversation; without a title it takes one from its first user message."""
        character, mode = _check_character(character), check_choice(mode, MODES, "chat mode")
        if title is not None:
            title = check_text(title, "title").strip() or DEFAULT_TITLE
        with self._transaction() as conn:
            conversation_id = self._insert_conversation(conn, title=title, character=character, mode=mode)
            return self._summary(conn, conversation_id)

    def conversations(
        self,
        *,
        character: str | EllipsisType | None = ...,
        search: str | None = None,
        limit: int = 200,
    ) -> list[ConversationSummary]:
        """Conversations, most recently changed first.

        ``character=...`` lists all, ``None`` only instruct-mode ones (no character), a name only that
        character's. ``search`` keeps those whose title or any message (any alternative) contains it,
        ignoring case.
        """
        clauses: list[str] = []
        args: list[Any] = []
        if character is None:
            clauses.append("c.character IS NULL")
        elif not isinstance(character, EllipsisType):
            clauses.append("c.character = ?")
            args.append(character)
        needle = _fold(search.strip()) if isinstance(search, str) else None
        if needle:
            clauses.append(
                """(instr(palabre_fold(c.title), ?) > 0 OR EXISTS (SELECT 1 FROM messages m
                JOIN alternatives a ON a.message_id = m.id
                WHERE m.conversation_id = c.id AND instr(palabre_fold(a.content), ?) > 0))"""
            )
            args += [needle, needle]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as conn:
            rows = conn.execute(
                f"{SUMMARY_SQL}{where} ORDER BY c.updated_at DESC, c.id DESC LIMIT ?", (*args, max(limit, 0))
            ).fetchall()
        return [ConversationSummary(*row) for row in rows]

    def get(self, conversation_id: int) -> Conversation:
        """The conversation with all its messages, in order."""
        with self._read() as conn:
            summary = self._summary(conn, conversation_id)
            messages = self._messages(conn, "m.conversation_id = ?", (conversation_id,))
        return Conversation(**asdict(summary), messages=tuple(m.public() for m in messages))

    def get_message(self, message_id: int) -> StoredMessage:
        with self._read() as conn:
            return self._message(conn, message_id)

    def knowledge(self, conversation_id: int) -> list[str]:
        """The document collections the conversation answers from (chosen in the Chat tab)."""
        with self._read() as conn:
            self._summary(conn, conversation_id)
            row = conn.execute(
                "SELECT knowledge FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        try:
            names = json.loads(row[0]) if row and row[0] else []
        except ValueError:
            names = []
        return [str(name) for name in names if isinstance(name, str)] if isinstance(names, list) else []

    def set_knowledge(self, conversation_id: int, names: Sequence[str]) -> None:
        """Choose the collections the conversation answers from (none: an empty list)."""
        chosen = list(dict.fromkeys(check_text(name, "collection name").strip() for name in names))
        with self._transaction() as conn:
            self._summary(conn, conversation_id)
            conn.execute(
                "UPDATE conversations SET knowledge = ? WHERE id = ?",
                (json.dumps([n for n in chosen if n]) if any(chosen) else "", conversation_id),
            )

    def rename(self, conversation_id: int, title: str) -> None:
        title = check_text(title, "title").strip()
        if not title:
            raise ChatStoreError("A conversation title must not be empty.")
        with self._transaction() as conn:
            self._summary(conn, conversation_id)
            conn.execute(
                "UPDATE conversations SET title = ?, auto_title = 0, updated_at = ? WHERE id = ?",
                (title, time.time(), conversation_id),
            )

    def delete(self, conversation_id: int) -> None:
        """Delete the conversation and its messages; its branches stay (they no longer name a parent)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount == 0:
                raise ChatStoreError(f"There is no conversation with id {conversation_id}.")

    def branch(self, conversation_id: int, message_id: int) -> ConversationSummary:
        """A new conversation holding copies of the messages up to and including ``message_id``."""
        with self._transaction() as conn:
            source = self._summary(conn, conversation_id)
            owner, _ = self._owner(conn, message_id)
            if owner != conversation_id:
                raise ChatStoreError(f"Message {message_id} is not part of conversation {conversation_id}.")
            auto = conn.execute(
                "SELECT auto_title FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            new_id = self._insert_conversation(
                conn,
                title=None if auto[0] else f"{source.title} (branch)",
                character=source.character,
                mode=source.mode,
                parent=(conversation_id, message_id),
            )
            last = conn.execute("SELECT position FROM messages WHERE id = ?", (message_id,)).fetchone()[0]
            where = "m.conversation_id = ? AND m.position <= ?"
            for message in self._messages(conn, where, (conversation_id, last)):
                self._insert_message(conn, new_id, message)
            return self._summary(conn, new_id)

    # -- messages ------------------------------------------------------------------------------------------

    def append(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        reasoning: str = "",
        reasoning_seconds: float | None = None,
        tool_rounds: tuple[ToolRoundRecord, ...] = (),
        images: Sequence[Image] = (),
        attachments: Sequence[AttachmentRecord] = (),
        grounding: GroundingRecord | None = None,
    ) -> StoredMessage:
        """Add a message at the end of the conversation (a reply with the reasoning before its answer, and
        the tool calls it made before that; a user's message with the images and files sent with it).

        Each image is kept once under its SHA-256 before the message is committed; an attachment's bytes, if
        kept, were kept with ``media.put_attachment``."""
        role, content = check_choice(role, ROLES, "message role"), check_text(content, "message")
        reasoning, seconds = check_text(reasoning, "reasoning"), _check_seconds(reasoning_seconds)
        refs = tuple(self._keep_image(image) for image in images)
        files = tuple(check_attachment(a) for a in attachments)
        now = time.time()
        with self._transaction() as conn:
            self._summary(conn, conversation_id)
            alternative = AlternativeRecord(content, model, now, reasoning, seconds, tool_rounds)
            message = MessageRecord(
                role, (alternative,), 0, now, images=refs, attachments=files, grounding=grounding
            )
            message_id = self._insert_message(conn, conversation_id, message)
            self._touch(conn, conversation_id)
            return self._message(conn, message_id)

    def _keep_image(self, image: object) -> ImageRef:
        if not isinstance(image, Image):
            raise ChatStoreError(f"An image must be a checked media.Image, not {type(image).__name__}.")
        self.media.put_image(image)
        return ImageRef(image.sha256, image.width, image.height)

    def image(self, ref: ImageRef) -> Image:
        """The image a message names (ChatStoreError when its file is missing or damaged)."""
        return self.media.image(ref)

    def prune_media(self, *, older_than_s: float = 3600.0) -> int:
        """Delete the image and attachment files no message names any more (their conversations were
        deleted), once older than ``older_than_s``; returns how many were deleted."""
        with self._read() as conn:
            images = {row[0] for row in conn.execute("SELECT DISTINCT sha256 FROM message_images")}
            files = {row[0] for row in conn.execute("SELECT DISTINCT sha256 FROM message_attachments")}
        return self.media.prune(images, files, older_than_s=older_than_s)

    def add_alternative(
        self,
        message_id: int,
        content: str,
        *,
        model: str | None = None,
        reasoning: str = "",
        reasoning_seconds: float | None = None,
        tool_rounds: tuple[ToolRoundRecord, ...] = (),
    ) -> StoredMessage:
        """Keep a new version of the message (a regenerated reply, with its own reasoning) and show it."""
        content = check_text(content, "message")
        reasoning, seconds = check_text(reasoning, "reasoning"), _check_seconds(reasoning_seconds)
        with self._transaction() as conn:
            conversation_id, _ = self._owner(conn, message_id)
            index = conn.execute(
                "SELECT max(alt_index) + 1 FROM alternatives WHERE message_id = ?", (message_id,)
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO alternatives {ALTERNATIVE_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    index,
                    content,
                    model,
                    time.time(),
                    reasoning,
                    seconds,
                    tool_rounds_json(tool_rounds),
                ),
            )
            conn.execute("UPDATE messages SET active = ? WHERE id = ?", (index, message_id))
            self._touch(conn, conversation_id)
            return self._message(conn, message_id)

    def set_content(
        self,
        message_id: int,
        content: str,
        *,
        reasoning: str | None = None,
        reasoning_seconds: float | None = None,
        tool_rounds: tuple[ToolRoundRecord, ...] | None = None,
    ) -> StoredMessage:
        """Replace the text of the shown alternative (an edit, or a streamed reply saved so far).

        The answer alone changes unless ``reasoning`` is given: then the reasoning and its duration are
        replaced too (a streamed reply saving what it has thought so far)."""
        content = check_text(content, "message")
        seconds = _check_seconds(reasoning_seconds)
        with self._transaction() as conn:
            conversation_id, active = self._owner(conn, message_id)
            if reasoning is None:
                conn.execute(
                    "UPDATE alternatives SET content = ? WHERE message_id = ? AND alt_index = ?",
                    (content, message_id, active),
                )
            else:
                conn.execute(
                    """UPDATE alternatives SET content = ?, reasoning = ?, reasoning_seconds = ?
                    WHERE message_id = ? AND alt_index = ?""",
                    (content, check_text(reasoning, "reasoning"), seconds, message_id, active),
                )
            if tool_rounds is not None:
                conn.execute(
                    "UPDATE alternatives SET tool_rounds = ? WHERE message_id = ? AND alt_index = ?",
                    (tool_rounds_json(tool_rounds), message_id, active),
                )
            self._touch(conn, conversation_id)
            return self._message(conn, message_id)

    def select_alternative(self, message_id: int, index: int) -> StoredMessage:
        """Show alternative ``index`` (0-based) of the message."""
        with self._transaction() as conn:
            conversation_id, _ = self._owner(conn, message_id)
            count = conn.execute(
                "SELECT count(*) FROM alternatives WHERE message_id = ?", (message_id,)
            ).fetchone()[0]
            if not isinstance(index, int) or not 0 <= index < count:
                raise ChatStoreError(f"Message {message_id} has versions 0 to {count - 1}, not {index!r}.")
            conn.execute("UPDATE messages SET active = ? WHERE id = ?", (index, message_id))
            self._touch(conn, conversation_id)
            return self._message(conn, message_id)

    def truncate(self, conversation_id: int, from_position: int) -> None:
        """Delete the messages at ``from_position`` and after ("remove last", "regenerate from here")."""
        if not isinstance(from_position, int) or from_position < 0:
            raise ChatStoreError(f"A message position is a number from 0, not {from_position!r}.")
        with self._transaction() as conn:
            self._summary(conn, conversation_id)
            conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                (conversation_id, from_position),
            )
            self._touch(conn, conversation_id)

    # -- import / export -----------------------------------------------------------------------------------

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """Palabre's own JSON for the conversation, every alternative included."""
        with self._read() as conn:
            summary = self._summary(conn, conversation_id)
            messages = self._messages(conn, "m.conversation_id = ?", (conversation_id,))

        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": summary.title,
            "character": summary.character,
            "mode": summary.mode,
            "created_at": summary.created_at,
            "updated_at": summary.updated_at,
            "messages": [export_message(m, self.media) for m in messages],
        }

    def import_json(
        self, data: Mapping[str, Any], *, character: str | None = None, mode: str | None = None
    ) -> ConversationSummary:
        """A new conversation from Palabre's JSON or text-generation-webui's history JSON.

        ``character`` (and ``mode``) override what the file says; a text-generation-webui history names
        neither, so it becomes an instruct chat unless a character is given.
        """
        character = _check_character(character)
        if not isinstance(data, Mapping):
            raise ChatStoreError(f"A chat file holds a JSON object, not {type(data).__name__}.")
        title: str | None = None
        created_at: float | None = None
        images: dict[str, Image] = {}  # every image the file holds, decoded again, by SHA-256
        if data.get("format") == EXPORT_FORMAT:
            version = data.get("version")
            if not isinstance(version, int) or version < 1:
                raise ChatStoreError(f"This Palabre chat file has an invalid version {version!r}.")
            if version > EXPORT_VERSION:
                raise ChatStoreError(
                    f"This chat file was written by a newer Palabre (format version {version})."
                )
            messages = palabre_messages(data.get("messages"), images)
            raw_title = data.get("title")
            title = raw_title.strip() or None if isinstance(raw_title, str) else None
            character = character if character is not None else _check_character(data.get("character"))
            mode = mode or data.get("mode") or ("chat" if character else "instruct")
            created_at = number_or_none(data.get("created_at"))
        elif "internal" in data or "visible" in data or "data" in data:
            messages = tgw_messages(data)
            mode = mode or ("chat" if character else "instruct")
        else:
            raise ChatStoreError(
                "This is not a chat history: expected Palabre's chat JSON "
                f'({{"format": "{EXPORT_FORMAT}", ...}}) or text-generation-webui\'s history JSON '
                '({"internal": [[user, bot], ...], "visible": [...]}).'
            )
        mode = check_choice(mode, MODES, "chat mode")
        for image in images.values():  # kept before the messages that name them are committed
            self.media.put_image(image)
        with self._transaction() as conn:
            conversation_id = self._insert_conversation(
                conn, title=title, character=character, mode=mode, created_at=created_at
            )
            for message in messages:
                self._insert_message(conn, conversation_id, message)
            return self._summary(conn, conversation_id)

    # -- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; later calls raise ChatStoreError. Closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
