"""The conversation store's SQLite schema: its migrations, in order, the column lists its queries share, and
the reading of messages' images and files."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from webui.core.chats.records import AttachmentRecord, ImageRef, MessageRecord, grounding_from

# Migrations, in order: entry i takes the schema from user_version i to i + 1. Never edit a released entry;
# append a new one. Each runs in the same transaction as the user_version bump.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            auto_title INTEGER NOT NULL DEFAULT 1,  -- 1: the title still follows the first user message
            character TEXT,                         -- NULL: instruct mode, no character
            mode TEXT NOT NULL CHECK (mode IN ('instruct', 'chat', 'chat-instruct')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            parent_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            branched_from_message INTEGER           -- a message id of the parent; it may be gone since
        )""",
        "CREATE INDEX conversations_by_update ON conversations (updated_at DESC, id DESC)",
        "CREATE INDEX conversations_by_character ON conversations (character, updated_at DESC)",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            active INTEGER NOT NULL DEFAULT 0,      -- the alt_index of the alternative shown
            created_at REAL NOT NULL,
            UNIQUE (conversation_id, position)
        )""",
        """CREATE TABLE alternatives (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            alt_index INTEGER NOT NULL,
            content TEXT NOT NULL,
            model TEXT,                             -- the model that wrote it; NULL for people and imports
            created_at REAL NOT NULL,
            PRIMARY KEY (message_id, alt_index)
        ) WITHOUT ROWID""",
    ),
    (  # 2: a thinking model's reasoning, kept apart from the answer, and how long it thought
        "ALTER TABLE alternatives ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''",
        # NULL: not measured (no reasoning, or reasoning imported without its duration)
        "ALTER TABLE alternatives ADD COLUMN reasoning_seconds REAL",
    ),
    (  # 3: the tool calls a reply made before its answer, with their results (JSON; '' for none)
        "ALTER TABLE alternatives ADD COLUMN tool_rounds TEXT NOT NULL DEFAULT ''",
    ),
    (  # 4: the images a message shows and the files sent with it (their bytes kept apart, by SHA-256)
        """CREATE TABLE message_images (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            slot INTEGER NOT NULL,                  -- the order in the message
            sha256 TEXT NOT NULL,                   -- of the PNG in images/<sha256>.png
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            PRIMARY KEY (message_id, slot)
        ) WITHOUT ROWID""",
        "CREATE INDEX message_images_by_hash ON message_images (sha256)",
        """CREATE TABLE message_attachments (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            slot INTEGER NOT NULL,
            name TEXT NOT NULL,                     -- the file's name as sent
            kind TEXT NOT NULL,                     -- pdf, docx, markdown, text, code, ...
            sha256 TEXT NOT NULL,                   -- of the file's bytes (attachments/<sha256> when kept)
            size INTEGER NOT NULL DEFAULT 0,        -- bytes
            tokens INTEGER,                         -- NULL: not counted
            text TEXT,                              -- NULL: not extracted
            PRIMARY KEY (message_id, slot)
        ) WITHOUT ROWID""",
    ),
    (  # 5: what a user's message was given with (its files whole, or passages found for it) and the
        # document collections a conversation answers from (a JSON list of names; '' for none)
        """CREATE TABLE message_grounding (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            context TEXT NOT NULL,                  -- added after the message's text for the model
            note TEXT NOT NULL,                     -- what the page says was given, and how
            sources TEXT NOT NULL                   -- JSON: the numbered passages a reply cites as [n]
        )""",
        "ALTER TABLE conversations ADD COLUMN knowledge TEXT NOT NULL DEFAULT ''",
    ),
)


ALTERNATIVE_COLUMNS = (
    "(message_id, alt_index, content, model, created_at, reasoning, reasoning_seconds, tool_rounds)"
)

SUMMARY_SQL = """SELECT c.id, c.title, c.character, c.mode, c.created_at, c.updated_at,
    (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), c.parent_id, c.branched_from_message
    FROM conversations c"""


def with_media(
    conn: sqlite3.Connection, messages: list[MessageRecord], where: str, args: tuple[Any, ...]
) -> list[MessageRecord]:
    """``messages`` (those ``where`` picks) with their images and files."""
    chosen = f"SELECT m.id FROM messages m WHERE {where}"
    images: dict[int, list[ImageRef]] = {}
    for message_id, sha256, width, height in conn.execute(
        f"""SELECT message_id, sha256, width, height FROM message_images
        WHERE message_id IN ({chosen}) ORDER BY message_id, slot""",
        args,
    ):
        images.setdefault(message_id, []).append(ImageRef(sha256, width, height))
    files: dict[int, list[AttachmentRecord]] = {}
    for message_id, *fields in conn.execute(
        f"""SELECT message_id, name, kind, sha256, size, tokens, text FROM message_attachments
        WHERE message_id IN ({chosen}) ORDER BY message_id, slot""",
        args,
    ):
        files.setdefault(message_id, []).append(AttachmentRecord(*fields))
    groundings = {
        message_id: grounding_from(context, note, sources)
        for message_id, context, note, sources in conn.execute(
            f"""SELECT message_id, context, note, sources FROM message_grounding
            WHERE message_id IN ({chosen})""",
            args,
        )
    }
    if not images and not files and not groundings:
        return messages
    return [
        replace(
            m,
            images=tuple(images.get(m.id, ())),
            attachments=tuple(files.get(m.id, ())),
            grounding=groundings.get(m.id),
        )
        for m in messages
    ]
