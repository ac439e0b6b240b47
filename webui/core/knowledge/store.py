"""Knowledge collections on disk: one SQLite file (``user_data/knowledge.sqlite3``) beside the chats database,
holding documents, their passages, the passages' vectors (float32 BLOBs, with the embedding model that made
them) and an FTS5 index over the passages for BM25.

Every change is one transaction, so a crash leaves a document either wholly in or wholly out. The vectors are
searched by brute force in numpy (this Python's sqlite3 cannot load sqlite-vec).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from webui.core.documents.chunk import Chunk
from webui.core.documents.extract import Document, Section
from webui.core.paths import InvalidNameError, validate_name
from webui.core.sqlite_tx import locked_transaction

KNOWLEDGE_FILE = "knowledge.sqlite3"
BUSY_TIMEOUT_S = 10.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS collections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: searches cache vectors by id and revision
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        hidden INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        embedding_model TEXT,
        dimensions INTEGER,
        revision INTEGER NOT NULL DEFAULT 0  -- bumped by every change, so searches can cache vectors
    )""",
    """CREATE TABLE IF NOT EXISTS documents (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        origin TEXT NOT NULL,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        added REAL NOT NULL,
        text TEXT NOT NULL,
        sections TEXT NOT NULL,
        UNIQUE (collection_id, origin)
    )""",
    """CREATE TABLE IF NOT EXISTS chunks (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        text TEXT NOT NULL,
        page INTEGER,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id)",
    """CREATE TABLE IF NOT EXISTS vectors (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        dimensions INTEGER NOT NULL,
        vector BLOB NOT NULL
    )""",
    # An external-content index: the text lives once, in chunks; triggers keep the index in step. Porter
    # stemming lets "engines" find "engine".
    """CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
)


class KnowledgeError(ValueError):
    """A refusal meant for the user: unknown collection, bad name, unusable database."""


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    hidden: bool
    created: float
    embedding_model: str | None
    dimensions: int | None
    documents: int
    chunks: int
    revision: int  # changes whenever the collection's documents or vectors do


@dataclass(frozen=True)
class StoredDocument:
    id: int
    name: str
    origin: str
    kind: str
    sha256: str
    size: int
    added: float
    chunks: int


@dataclass(frozen=True)
class ChunkRow:
    """A stored passage with the document it comes from."""

    id: int
    document_id: int
    document: str  # the document's name
    origin: str
    seq: int
    text: str
    page: int | None
    start: int
    end: int


class KnowledgeStore:
    """Collections in one SQLite file (or ``":memory:"`` for a throw-away one); safe to share between
    threads."""

    def __init__(self, db_path: Path | str) -> None:
        self.path = db_path
        self._lock = threading.RLock()
        memory = str(db_path) == ":memory:"
        if not memory:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise KnowledgeError(f"Cannot open the knowledge database {db_path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not memory:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            with self._transaction() as tx:
                for statement in _SCHEMA:
                    tx.execute(statement)
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise KnowledgeError(f"{db_path} is not a usable knowledge database: {exc}") from exc
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        return locked_transaction(
            self._lock, self._conn, begin, KnowledgeError, f"knowledge database {self.path}"
        )

    # -- collections ---------------------------------------------------------------------------------------

    def ensure_collection(self, name: str, *, hidden: bool = False) -> CollectionInfo:
        """The collection ``name``, created when new."""
        try:
            validate_name(name, what="collection name")
        except InvalidNameError as exc:
            raise KnowledgeError(str(exc)) from exc
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO collections(name, hidden, created) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
                (name, int(hidden), time.time()),
            )
        return self.collection(name)

    def find_collection(self, name: str) -> CollectionInfo | None:
        with self._transaction("BEGIN") as tx:
            rows = self._collection_rows(tx, "WHERE c.name = ?", (name,))
        return rows[0] if rows else None

    def collection(self, name: str) -> CollectionInfo:
        found = self.find_collection(name)
        if found is None:
            raise KnowledgeError(f"There is no knowledge collection named {name!r}.")
        return found

    def collections(self, *, include_hidden: bool = False) -> list[CollectionInfo]:
        where = "" if include_hidden else "WHERE c.hidden = 0"
        with self._transaction("BEGIN") as tx:
            return self._collection_rows(tx, where, ())

    @staticmethod
    def _collection_rows(
        tx: sqlite3.Connection, where: str, args: tuple[object, ...]
    ) -> list[CollectionInfo]:
        rows = tx.execute(
            f"""SELECT c.id, c.name, c.hidden, c.created, c.embedding_model, c.dimensions,
                (SELECT COUNT(*) FROM documents d WHERE d.collection_id = c.id),
                (SELECT COUNT(*) FROM chunks k JOIN documents d ON d.id = k.document_id
                 WHERE d.collection_id = c.id),
                c.revision
            FROM collections c {where} ORDER BY c.name COLLATE NOCASE""",
            args,
        ).fetchall()
        return [CollectionInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def delete_collection(self, name: str) -> bool:
        with self._transaction() as tx:
            return tx.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount > 0

    # -- documents -----------------------------------------------------------------------------------------

    def documents(self, collection: str) -> list[StoredDocument]:
        info = self.collection(collection)
        with self._transaction("BEGIN") as tx:
            rows = tx.execute(
                """SELECT d.id, d.name, d.origin, d.kind, d.sha256, d.size, d.added,
                    (SELECT COUNT(*) FROM chunks k WHERE k.document_id = d.id)
                FROM documents d WHERE d.collection_id = ? ORDER BY d.name, d.id""",
                (info.id,),
            ).fetchall()
        return [StoredDocument(*row) for row in rows]

    def stored_document(self, document_id: int) -> Document:
        """The extracted document as it was added (its text and sections, for citations)."""
        with self._transaction("BEGIN") as tx:
            row = tx.execute(
                "SELECT name, kind, sha256, text, sections, size FROM documents WHERE id = ?", (document_id,)
            ).fetchone()
        if row is None:
            raise KnowledgeError(f"There is no document {document_id}.")
        sections = tuple(Section(*values) for values in json.loads(row[4]))
        return Document(row[0], row[1], row[2], row[3], sections, row[5])

    def put_document(
        self,
        collection: str,
        origin: str,
        document: Document,
        chunks: Sequence[Chunk],
        vectors: Sequence[bytes] | None,
        model: str | None,
        dimensions: int,
    ) -> int:
        """Store ``document`` at ``origin`` (replacing what was there) with its chunks and their vectors, made
        by ``model``; the collection's model becomes ``model``. ``vectors`` None: the chunks wait for an
        embedding model (found by words meanwhile). The new document's id."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError("One vector per chunk.")
        info = self.collection(collection)
        sections = json.dumps([[s.start, s.end, s.page] for s in document.sections])
        with self._transaction() as tx:
            tx.execute("DELETE FROM documents WHERE collection_id = ? AND origin = ?", (info.id, origin))
            document_id = int(
                tx.execute(
                    """INSERT INTO documents(collection_id, name, origin, kind, sha256, size, added, text,
                        sections) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        info.id,
                        document.name,
                        origin,
                        document.kind,
                        document.sha256,
                        document.size,
                        time.time(),
                        document.text,
                        sections,
                    ),
                ).lastrowid
                or 0
            )
            for index, chunk in enumerate(chunks):
                chunk_id = tx.execute(
                    """INSERT INTO chunks(document_id, seq, text, page, start, "end")
                    VALUES (?, ?, ?, ?, ?, ?)""",
                    (document_id, chunk.index, chunk.text, chunk.page, chunk.start, chunk.end),
                ).lastrowid
                if vectors is not None:
                    tx.execute(
                        "INSERT INTO vectors(chunk_id, model, dimensions, vector) VALUES (?, ?, ?, ?)",
                        (chunk_id, model, dimensions, vectors[index]),
                    )
            if model is not None:
                tx.execute(
                    "UPDATE collections SET embedding_model = ?, dimensions = ?, revision = revision + 1 "
                    "WHERE id = ?",
                    (model, dimensions, info.id),
                )
            else:
                tx.execute("UPDATE collections SET revision = revision + 1 WHERE id = ?", (info.id,))
        return document_id

    def remove_documents(self, document_ids: Sequence[int]) -> int:
        with self._transaction() as tx:
            removed = 0
            for document_id in document_ids:
                tx.execute(
                    """UPDATE collections SET revision = revision + 1
                    WHERE id = (SELECT collection_id FROM documents WHERE id = ?)""",
                    (document_id,),
                )
                removed += tx.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount
            return removed

    # -- passages and vectors ------------------------------------------------------------------------------

    def chunks(self, collection: str) -> list[ChunkRow]:
        info = self.collection(collection)
        with self._transaction("BEGIN") as tx:
            rows = tx.execute(
                _CHUNK_SELECT + " WHERE d.collection_id = ? ORDER BY k.id", (info.id,)
            ).fetchall()
        return [ChunkRow(*row) for row in rows]

    def chunks_without_vectors(self, collection: str, model: str) -> list[ChunkRow]:
        """The collection's passages that have no vector from ``model`` (another model made theirs)."""
        info = self.collection(collection)
        with self._transaction("BEGIN") as tx:
            rows = tx.execute(
                _CHUNK_SELECT
                + """ LEFT JOIN vectors v ON v.chunk_id = k.id AND v.model = ?
                WHERE d.collection_id = ? AND v.chunk_id IS NULL ORDER BY k.id""",
                (model, info.id),
            ).fetchall()
        return [ChunkRow(*row) for row in rows]

    def chunk_rows(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        found: dict[int, ChunkRow] = {}
        with self._transaction("BEGIN") as tx:
            for start in range(0, len(chunk_ids), 500):  # SQLite caps the number of bound parameters
                part = list(chunk_ids[start : start + 500])
                marks = ",".join("?" * len(part))
                for row in tx.execute(_CHUNK_SELECT + f" WHERE k.id IN ({marks})", part):
                    found[row[0]] = ChunkRow(*row)
        return found

    def vectors(self, collection: str, model: str) -> tuple[list[int], list[bytes], int]:
        """The chunk ids and vectors ``model`` made for the collection, and their size."""
        info = self.collection(collection)
        with self._transaction("BEGIN") as tx:
            rows = tx.execute(
                """SELECT v.chunk_id, v.vector, v.dimensions FROM vectors v
                JOIN chunks k ON k.id = v.chunk_id JOIN documents d ON d.id = k.document_id
                WHERE d.collection_id = ? AND v.model = ? ORDER BY v.chunk_id""",
                (info.id, model),
            ).fetchall()
        dimensions = {row[2] for row in rows}
        if len(dimensions) > 1:
            raise KnowledgeError(
                f"The collection {collection!r} holds vectors of several sizes from {model}."
            )
        return [row[0] for row in rows], [row[1] for row in rows], dimensions.pop() if dimensions else 0

    def replace_vectors(
        self, collection: str, model: str, dimensions: int, vectors: Sequence[tuple[int, bytes]]
    ) -> None:
        """Give chunks new vectors from ``model`` (after the embedding model changed)."""
        info = self.collection(collection)
        with self._transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO vectors(chunk_id, model, dimensions, vector) VALUES (?, ?, ?, ?)",
                [(chunk_id, model, dimensions, vector) for chunk_id, vector in vectors],
            )
            tx.execute(
                "UPDATE collections SET embedding_model = ?, dimensions = ?, revision = revision + 1 WHERE id = ?",
                (model, dimensions, info.id),
            )

    def keyword_search(self, collection: str, match: str, limit: int) -> list[tuple[int, float]]:
        """(chunk id, BM25) best first for an FTS5 MATCH expression (build it with ``ranking.fts_query``);
        FTS5's bm25() is lower-is-better, so the score returned is its negation."""
        info = self.collection(collection)
        with self._transaction("BEGIN") as tx:
            rows = tx.execute(
                """SELECT chunks_fts.rowid, bm25(chunks_fts) AS score FROM chunks_fts
                JOIN chunks k ON k.id = chunks_fts.rowid JOIN documents d ON d.id = k.document_id
                WHERE chunks_fts MATCH ? AND d.collection_id = ? ORDER BY score LIMIT ?""",
                (match, info.id, limit),
            ).fetchall()
        return [(int(row[0]), -float(row[1])) for row in rows]


_CHUNK_SELECT = """SELECT k.id, d.id, d.name, d.origin, k.seq, k.text, k.page, k.start, k."end"
    FROM chunks k JOIN documents d ON d.id = k.document_id"""
