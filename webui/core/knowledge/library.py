"""Knowledge collections at work: add files and folders (re-reading only what changed), keep vectors in step
with the embedding model, and search by meaning and by words at once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from webui.core.documents.chunk import CHUNK_OVERLAP, CHUNK_SIZE, chunk_document
from webui.core.documents.extract import (
    MAX_FILE_BYTES,
    SUPPORTED_SUFFIXES,
    Document,
    DocumentError,
    extract,
    kind_of,
    read_document,
)
from webui.core.embeddings import EmbeddingError, EmbeddingModels
from webui.core.knowledge.ranking import from_blobs, fts_query, nearest, reciprocal_rank_fusion, to_blob
from webui.core.knowledge.store import ChunkRow, KnowledgeError, KnowledgeStore, StoredDocument

SearchMode = Literal["hybrid", "vector", "keyword"]
UPLOAD = "upload:"  # the origin of a document given as bytes, before its name
CANDIDATES = 50  # each ranker's list length before fusion
EMBED_BATCH = 64


class Embedder(Protocol):
    """Texts in, one vector each out; ``model`` names what made them (vectors of another model are stale)."""

    @property
    def model(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class ModelEmbedder:
    """The process's embedding model (``EmbeddingModels``) as an Embedder: the named model, else the loaded
    or default one."""

    def __init__(self, models: EmbeddingModels, name: str | None = None) -> None:
        self.models = models
        self.name = name

    @property
    def model(self) -> str:
        return self.models.resolve(self.name).name

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.models.embed(list(texts), self.name, normalize=True).vectors


@dataclass(frozen=True)
class Passage:
    """A search result: a passage of a document, where it is (page, characters) and how it ranked."""

    chunk_id: int
    document_id: int
    document: str
    page: int | None
    start: int
    end: int
    text: str
    score: float  # the fused score (or the one ranker's score in a single mode)
    vector_rank: int | None = None  # 1 = nearest; None: not among the candidates
    keyword_rank: int | None = None


@dataclass
class AddReport:
    """What adding files did: names added, replaced, left alone (same bytes) and dropped, problems met, and
    how many passages were embedded."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, message)
    embedded: int = 0
    # Why passages were stored without vectors (no embedding model): found by words until one is loaded.
    not_embedded: str = ""


Progress = Callable[[str], None]


class KnowledgeBase:
    """Named collections of documents in a KnowledgeStore, embedded by one Embedder."""

    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        *,
        chunk_size: int = CHUNK_SIZE,
        chunk_overlap: int = CHUNK_OVERLAP,
        max_file_bytes: int = MAX_FILE_BYTES,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.max_file_bytes = max_file_bytes
        self.count_tokens = count_tokens
        # (collection id, model) -> (revision, chunk ids, normalised matrix): a search reads the vectors
        # from SQLite only after the collection changed.
        self._matrices: dict[tuple[int, str], tuple[int, list[int], npt.NDArray[np.float32]]] = {}

    @classmethod
    def in_memory(cls, embedder: Embedder, **options: Any) -> KnowledgeBase:
        """A throw-away knowledge base (a conversation's attachments)."""
        return cls(KnowledgeStore(":memory:"), embedder, **options)

    # -- adding --------------------------------------------------------------------------------------------

    def add_paths(
        self, collection: str, paths: Iterable[Path], *, progress: Progress | None = None
    ) -> AddReport:
        """Add files and folders (folders recursively, files of supported kinds, hidden ones skipped). A file
        already there with the same bytes is left alone; a changed one is read again; a folder added again
        drops the documents of files no longer in it."""
        self.store.ensure_collection(collection)
        report = AddReport()
        self._refresh_if_possible(collection, report)
        stored = {doc.origin: doc for doc in self.store.documents(collection)}
        for path in paths:
            path = Path(path).expanduser().resolve()
            if path.is_dir():
                files = list(_folder_files(path))
                for file, name in files:
                    self._add_file(collection, file, name, stored, report, progress)
                seen = {str(file) for file, _ in files}
                gone = [doc for origin, doc in stored.items() if _under(origin, path) and origin not in seen]
                self.store.remove_documents([doc.id for doc in gone])
                report.removed += [doc.name for doc in gone]
            elif path.is_file():
                self._add_file(collection, path, path.name, stored, report, progress)
            else:
                report.failed.append((str(path), f"{path} does not exist."))
        return report

    def add_documents(
        self, collection: str, documents: Sequence[Document], *, hidden: bool = False
    ) -> AddReport:
        """Add documents already extracted (uploads, attachments), known by name: the same name with the same
        bytes is left alone, with other bytes replaced."""
        self.store.ensure_collection(collection, hidden=hidden)
        report = AddReport()
        self._refresh_if_possible(collection, report)
        stored = {doc.origin: doc for doc in self.store.documents(collection)}
        for document in documents:
            origin = f"{UPLOAD}{document.name}"
            previous = stored.get(origin)
            if previous is not None and previous.sha256 == document.sha256:
                report.unchanged.append(document.name)
                continue
            self._put(collection, origin, document, report)
            (report.updated if previous is not None else report.added).append(document.name)
        return report

    def add_uploads(
        self, collection: str, files: Sequence[tuple[str, bytes]], *, hidden: bool = False
    ) -> AddReport:
        """Add files given as (name, bytes), as the page receives them; unreadable ones are reported in
        ``failed`` and the others added."""
        documents: list[Document] = []
        failed: list[tuple[str, str]] = []
        for name, data in files:
            try:
                documents.append(extract(name, data, max_bytes=self.max_file_bytes))
            except DocumentError as exc:
                failed.append((name, str(exc)))
        report = self.add_documents(collection, documents, hidden=hidden)
        report.failed += failed
        return report

    def _add_file(
        self,
        collection: str,
        path: Path,
        name: str,
        stored: Mapping[str, StoredDocument],
        report: AddReport,
        progress: Progress | None,
    ) -> None:
        origin = str(path)
        previous = stored.get(origin)
        try:
            document = read_document(path, max_bytes=self.max_file_bytes)
        except DocumentError as exc:
            report.failed.append((name, str(exc)))
            return
        if previous is not None and previous.sha256 == document.sha256:
            report.unchanged.append(name)
            return
        if progress is not None:
            progress(name)
        document = dataclasses.replace(document, name=name)  # the path inside the folder added
        self._put(collection, origin, document, report)
        (report.updated if previous is not None else report.added).append(name)

    def _put(self, collection: str, origin: str, document: Document, report: AddReport) -> None:
        chunks = chunk_document(document, self.chunk_size, self.chunk_overlap, self.count_tokens)
        try:
            model: str | None = self.embedder.model
            vectors = self._embed([chunk.text for chunk in chunks])
        except EmbeddingError as exc:  # kept all the same: searched by words, embedded once a model is there
            report.not_embedded = str(exc)
            self.store.put_document(collection, origin, document, chunks, None, None, 0)
            return
        report.embedded += len(vectors)
        dimensions = len(vectors[0]) if vectors else 0
        self.store.put_document(
            collection, origin, document, chunks, [to_blob(v) for v in vectors], model, dimensions
        )

    def _refresh_if_possible(self, collection: str, report: AddReport) -> None:
        """Embed what an earlier model (or none) left without vectors, when an embedding model is there."""
        try:
            self.refresh_vectors(collection, report)
        except EmbeddingError as exc:
            report.not_embedded = str(exc)

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            vectors += self.embedder.embed(texts[start : start + EMBED_BATCH])
        return vectors

    def refresh_vectors(self, collection: str, report: AddReport | None = None) -> int:
        """Embed again every passage whose vector another model made (the embedding model changed); how many."""
        model = self.embedder.model
        stale = self.store.chunks_without_vectors(collection, model)
        if not stale:
            return 0
        vectors = self._embed([row.text for row in stale])
        dimensions = len(vectors[0])
        self.store.replace_vectors(
            collection,
            model,
            dimensions,
            [(row.id, to_blob(v)) for row, v in zip(stale, vectors, strict=True)],
        )
        if report is not None:
            report.embedded += len(vectors)
        return len(vectors)

    def _matrix(self, collection: str) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The collection's chunk ids and their normalised vectors from the current model (cached by
        revision)."""
        info = self.store.collection(collection)
        model = self.embedder.model
        cached = self._matrices.get((info.id, model))
        if cached is not None and cached[0] == info.revision:
            return cached[1], cached[2]
        ids, blobs, dimensions = self.store.vectors(collection, model)
        matrix = from_blobs(blobs, dimensions)
        self._matrices[(info.id, model)] = (info.revision, ids, matrix)
        return ids, matrix

    # -- removing ------------------------------------------------------------------------------------------

    def remove(self, collection: str, document: str | None = None) -> list[str]:
        """Drop a document (its name, or the path it was added from) or, with none named, the collection;
        the names removed."""
        return remove_documents(self.store, collection, document)

    # -- searching -----------------------------------------------------------------------------------------

    def search(
        self, collection: str, query: str, top_k: int = 5, mode: SearchMode = "hybrid"
    ) -> list[Passage]:
        """The ``top_k`` passages best matching ``query``: by vector similarity, by BM25 over the words, or
        both fused by reciprocal rank."""
        if top_k < 1 or not query.strip():
            return []
        vector_ranked: list[tuple[int, float]] = []
        keyword_ranked: list[tuple[int, float]] = []
        if mode in ("hybrid", "vector"):
            self.refresh_vectors(collection)
            ids, matrix = self._matrix(collection)
            if ids:
                query_vector = self.embedder.embed([query])[0]
                vector_ranked = [
                    (ids[row], score) for row, score in nearest(matrix, query_vector, CANDIDATES)
                ]
        if mode in ("hybrid", "keyword"):
            match = fts_query(query)
            if match is not None:
                keyword_ranked = self.store.keyword_search(collection, match, CANDIDATES)
        vector_rank = {chunk_id: rank for rank, (chunk_id, _) in enumerate(vector_ranked, start=1)}
        keyword_rank = {chunk_id: rank for rank, (chunk_id, _) in enumerate(keyword_ranked, start=1)}
        if mode == "vector":
            ranked = vector_ranked
        elif mode == "keyword":
            ranked = keyword_ranked
        else:
            ranked = reciprocal_rank_fusion(
                {"vector": [c for c, _ in vector_ranked], "keyword": [c for c, _ in keyword_ranked]}
            )
        ranked = ranked[:top_k]
        rows = self.store.chunk_rows([chunk_id for chunk_id, _ in ranked])
        return [
            _passage(rows[chunk_id], score, vector_rank.get(chunk_id), keyword_rank.get(chunk_id))
            for chunk_id, score in ranked
            if chunk_id in rows
        ]


def remove_documents(store: KnowledgeStore, collection: str, document: str | None = None) -> list[str]:
    """Drop a document of ``collection`` (its name, the path it was added from, or a folder added: every
    document under it) or, with none named, the whole collection; the names removed."""
    if document is None:
        names = [doc.name for doc in store.documents(collection)]
        store.delete_collection(collection)
        return names
    wanted = document.strip()
    resolved = Path(wanted).expanduser().resolve() if wanted else None
    matches = [
        doc
        for doc in store.documents(collection)
        if doc.name == wanted
        or (resolved is not None and (doc.origin == str(resolved) or _under(doc.origin, resolved)))
    ]
    if not matches:
        raise KnowledgeError(f"The collection {collection!r} has no document {document!r}.")
    store.remove_documents([doc.id for doc in matches])
    return [doc.name for doc in matches]


def _passage(row: ChunkRow, score: float, vector_rank: int | None, keyword_rank: int | None) -> Passage:
    return Passage(
        row.id,
        row.document_id,
        row.document,
        row.page,
        row.start,
        row.end,
        row.text,
        score,
        vector_rank,
        keyword_rank,
    )


def _under(origin: str, folder: Path) -> bool:
    """Whether the file ``origin`` (an absolute path; uploads are not) lies inside ``folder``."""
    if origin.startswith(UPLOAD):
        return False
    return Path(origin).is_relative_to(folder) and Path(origin) != folder


def _folder_files(folder: Path) -> Iterable[tuple[Path, str]]:
    """(file, name relative to ``folder``) for the readable files below it, hidden files and folders left out,
    links leading out of it not followed."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if file.startswith("."):
                continue
            path = Path(root) / file
            if Path(file).suffix.lower() not in SUPPORTED_SUFFIXES and kind_of(file) is None:
                continue
            resolved = path.resolve()
            if not resolved.is_relative_to(folder):
                continue
            yield resolved, path.relative_to(folder).as_posix()


def attachment_retriever(
    documents: Sequence[Document], embedder: Embedder, **options: Any
) -> Callable[[str, int], list[Passage]]:
    """A search over ``documents`` alone (a conversation's attachments), indexed in memory on first use, so
    that attachments given whole are never embedded."""
    built: list[KnowledgeBase] = []

    def retrieve(question: str, top_k: int) -> list[Passage]:
        if not built:
            base = KnowledgeBase.in_memory(embedder, **options)
            base.add_documents("attachments", _distinct_names(documents))
            built.append(base)
        return built[0].search("attachments", question, top_k)

    return retrieve


def _distinct_names(documents: Sequence[Document]) -> list[Document]:
    """The documents, a name met again becoming "name (2)" (documents are known by name in a collection)."""
    seen: set[str] = set()
    named: list[Document] = []
    for document in documents:
        name, number = document.name, 1
        while name in seen:
            number += 1
            name = f"{document.name} ({number})"
        seen.add(name)
        named.append(dataclasses.replace(document, name=name))
    return named
