"""``webui knowledge add | list | search | remove``: knowledge collections from the terminal.

The collections live in ``user_data/knowledge.sqlite3``; the embedding model is the one named with
``--embedding-model``, else the one that embedded the collection, else the only embedding model in
``user_data/models``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from webui.config import AppConfig

MODES = ("hybrid", "vector", "keyword")


def add_knowledge_parser(sub: Any) -> None:
    """The ``knowledge`` subcommand and its four actions (argparse only: nothing heavy is imported)."""
    knowledge = sub.add_parser("knowledge", help="knowledge collections: add documents, search them")
    actions = knowledge.add_subparsers(dest="knowledge_command", required=True)
    add = actions.add_parser("add", help="add files or folders to a collection (created when new)")
    add.add_argument("name", help="the collection")
    add.add_argument("paths", nargs="+", type=Path, help="files or folders (folders are read recursively)")
    add.add_argument("--chunk-size", type=int, default=None, help="characters per passage (default 1000)")
    add.add_argument("--chunk-overlap", type=int, default=None, help="characters shared (default 100)")
    listing = actions.add_parser("list", help="list the collections, or one collection's documents")
    listing.add_argument("name", nargs="?", default=None, help="the collection to list the documents of")
    search = actions.add_parser("search", help="the passages of a collection best matching a question")
    search.add_argument("name", help="the collection")
    search.add_argument("query", help="the question")
    search.add_argument("--top-k", type=int, default=5, help="how many passages (default 5)")
    search.add_argument("--mode", choices=MODES, default="hybrid", help="ranking (default: hybrid)")
    search.add_argument("--json", action="store_true", help="print the passages as JSON")
    remove = actions.add_parser("remove", help="remove a document from a collection, or the collection")
    remove.add_argument("name", help="the collection")
    remove.add_argument("file", nargs="?", default=None, help="the document's name or path (default: all)")
    for action in (add, listing, search, remove):
        action.add_argument("--user-data-dir", type=Path, default=None)
    for action in (add, search):
        action.add_argument(
            "--embedding-model",
            default=None,
            metavar="NAME",
            help="embedding model in user_data/models (default: the collection's, else the only one there)",
        )


def run(config: AppConfig, args: argparse.Namespace) -> int:
    """Do the knowledge action ``args`` asks for; refusals become CliError (one line, exit status 2)."""
    from webui.cli import CliError
    from webui.core.documents import DocumentError
    from webui.core.embeddings import EmbeddingError
    from webui.core.knowledge import KNOWLEDGE_FILE, KnowledgeError, KnowledgeStore

    store = KnowledgeStore(config.user_data_dir / KNOWLEDGE_FILE)
    try:
        if args.knowledge_command == "list":
            return _list(store, args.name)
        if args.knowledge_command == "remove":
            return _remove(store, args.name, args.file)
        if args.knowledge_command == "add":
            return _add(config, store, args)
        return _search(config, store, args)
    except (KnowledgeError, EmbeddingError, DocumentError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()


def _base(config: AppConfig, store: Any, collection: str, wanted: str | None, **options: Any) -> Any:
    """A KnowledgeBase embedding with the model the user means."""
    from webui.core.embeddings import EmbeddingModels, is_embedding_entry, match_entry
    from webui.core.knowledge import KnowledgeBase, ModelEmbedder
    from webui.core.models.discovery import discover_models

    entries = discover_models(config.models_dir)
    found = store.find_collection(collection)
    name = wanted or (found.embedding_model if found is not None else None)
    if not name:
        embedders = [entry.name for entry in entries if is_embedding_entry(entry)]
        if len(embedders) != 1:
            have = f" (there: {', '.join(embedders)})" if embedders else ""
            raise ValueError(
                "Name the embedding model with --embedding-model: a sentence-transformers folder or a GGUF "
                f"file in {config.models_dir}{have}."
            )
        name = embedders[0]
    models = EmbeddingModels(lambda n: match_entry(entries, n), name)
    return KnowledgeBase(store, ModelEmbedder(models), **options)


def _add(config: AppConfig, store: Any, args: argparse.Namespace) -> int:
    options = {
        key: value
        for key, value in (("chunk_size", args.chunk_size), ("chunk_overlap", args.chunk_overlap))
        if value is not None
    }
    base = _base(config, store, args.name, args.embedding_model, **options)
    try:
        report = base.add_paths(
            args.name, args.paths, progress=lambda name: print(f"reading {name}", file=sys.stderr)
        )
    finally:
        base.embedder.models.close()
    for name, message in report.failed:
        print(f"skipped {name}: {message}", file=sys.stderr)
    print(
        f"{args.name}: added {len(report.added)}, updated {len(report.updated)}, unchanged "
        f"{len(report.unchanged)}, removed {len(report.removed)}, failed {len(report.failed)} "
        f"({report.embedded} passages embedded with {base.embedder.model})"
    )
    return 1 if report.failed else 0


def _list(store: Any, name: str | None) -> int:
    if name is None:
        collections = store.collections()
        if not collections:
            print("No knowledge collections yet: webui knowledge add NAME PATH...")
        for c in collections:
            print(
                f"{c.name}  {_count(c.documents, 'document')}  {_count(c.chunks, 'passage')}  {c.embedding_model or '-'}"
            )
        return 0
    for doc in store.documents(name):
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added))
        print(f"{doc.name}  {doc.kind}  {_count(doc.chunks, 'passage')}  {doc.size:,} bytes  added {added}")
    return 0


def _search(config: AppConfig, store: Any, args: argparse.Namespace) -> int:
    store.collection(args.name)  # an unknown collection is refused before any model loads
    base = _base(config, store, args.name, args.embedding_model)
    try:
        passages = base.search(args.name, args.query, args.top_k, args.mode)
    finally:
        base.embedder.models.close()
    if args.json:
        print(json.dumps([passage.__dict__ for passage in passages], ensure_ascii=False, indent=2))
        return 0
    if not passages:
        print("No passage matches.")
    for number, p in enumerate(passages, start=1):
        where = f"{p.document}, page {p.page}" if p.page is not None else p.document
        print(f"[{number}] {where}  (score {p.score:.4f}, chunk {p.chunk_id})")
        print("    " + " ".join(p.text.split())[:400])
    return 0


def _remove(store: Any, name: str, file: str | None) -> int:
    from webui.core.knowledge.library import remove_documents

    removed = remove_documents(store, name, file)
    what = ", ".join(removed) if removed else "no documents"
    print(f"removed {what} from {name}" + ("" if file else f", and the collection {name}"))
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
