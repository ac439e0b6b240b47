"""Collections in a chat: the sources found for a question, across collections, with the real MiniLM model;
and by words alone when no embedding model is loaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.embedding_models import MINILM_NAME, minilm_folder
from webui.core.documents.attach import cited_sources
from webui.core.documents.extract import extract
from webui.core.embeddings import EmbeddingModels
from webui.core.knowledge import KnowledgeBase, KnowledgeStore, ModelEmbedder
from webui.core.knowledge.grounding import grounded_text, search_collections
from webui.core.models.discovery import ModelEntry

pytestmark = pytest.mark.slow

GARDEN = {
    "roses.txt": "Climbing roses are pruned in late winter, cutting side shoots back to three buds.",
    "tomatoes.txt": "Tomato seedlings are hardened off for ten days before they are planted outside.",
}
KITCHEN = {
    "bread.txt": "A sourdough starter is fed with equal weights of rye flour and water every morning.",
    "stock.txt": "Fish stock simmers for no more than twenty minutes or it turns bitter.",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeStore]:
    store = KnowledgeStore(tmp_path_factory.mktemp("grounding") / "knowledge.sqlite3")
    entry = ModelEntry(MINILM_NAME, minilm_folder(), "folder", 0)
    models = EmbeddingModels(lambda name: entry if name == MINILM_NAME else None, MINILM_NAME)
    base = KnowledgeBase(store, ModelEmbedder(models))
    for collection, files in (("garden", GARDEN), ("kitchen", KITCHEN)):
        base.add_documents(collection, [extract(name, text.encode()) for name, text in files.items()])
    yield store
    models.close()
    store.close()


@pytest.fixture(scope="module")
def base(store: KnowledgeStore) -> KnowledgeBase:
    entry = ModelEntry(MINILM_NAME, minilm_folder(), "folder", 0)
    return KnowledgeBase(store, ModelEmbedder(EmbeddingModels(lambda name: entry, MINILM_NAME)))


def test_the_best_passages_of_every_chosen_collection_are_numbered(base: KnowledgeBase) -> None:
    found = search_collections(base, ["garden", "kitchen"], "How often do I feed my sourdough starter?", 2)
    assert [s.number for s in found.sources] == [1, 2]
    assert found.sources[0].document == "bread.txt"
    assert "[1] bread.txt" in found.text and "cite it as [n]" in found.text
    assert "garden, kitchen" in found.note and "bread.txt" in found.note
    question = "How often do I feed my sourdough starter?"
    assert grounded_text(question, found).startswith(question + "\n\n")
    # A reply citing [1] and a number never supplied keeps the real one only.
    assert [s.document for s in cited_sources("Every morning [1][7].", found.sources)] == ["bread.txt"]


def test_only_the_chosen_collections_are_searched(base: KnowledgeBase) -> None:
    found = search_collections(base, ["garden"], "How often do I feed my sourdough starter?", 4)
    assert {s.document for s in found.sources} <= set(GARDEN)


def test_without_an_embedding_model_the_words_still_find_passages(store: KnowledgeStore) -> None:
    no_model = KnowledgeBase(store, ModelEmbedder(EmbeddingModels(lambda name: None)))
    found = search_collections(no_model, ["kitchen"], "fish stock bitter", 3)
    assert found.sources and found.sources[0].document == "stock.txt"
    assert "words only" in found.note


def test_a_deleted_collection_or_an_empty_question_never_fails(base: KnowledgeBase) -> None:
    found = search_collections(base, ["gone", "garden"], "pruning roses in winter", 3)
    assert found.sources[0].document == "roses.txt" and "gone" in found.note
    empty = search_collections(base, ["garden"], "   ")
    assert empty.text == "" and empty.sources == () and grounded_text("hi", empty) == "hi"
    nothing = search_collections(base, [], "roses")
    assert nothing.sources == ()


def test_the_store_file_is_shared(tmp_path: Path) -> None:
    """Two knowledge bases on one file (the page's and the CLI's) see the same collections."""
    first = KnowledgeStore(tmp_path / "k.sqlite3")
    first.ensure_collection("notes")
    second = KnowledgeStore(tmp_path / "k.sqlite3")
    assert [c.name for c in second.collections()] == ["notes"]
    first.close()
    second.close()


def test_documents_added_without_an_embedding_model_are_embedded_once_one_is_there(tmp_path: Path) -> None:
    store = KnowledgeStore(tmp_path / "knowledge.sqlite3")
    no_model = KnowledgeBase(store, ModelEmbedder(EmbeddingModels(lambda name: None)))
    report = no_model.add_documents("later", [extract(n, t.encode()) for n, t in KITCHEN.items()])
    assert report.added == list(KITCHEN) and report.embedded == 0 and "embedding model" in report.not_embedded
    assert (
        search_collections(no_model, ["later"], "sourdough starter rye", 1).sources[0].document == "bread.txt"
    )

    entry = ModelEntry(MINILM_NAME, minilm_folder(), "folder", 0)
    models = EmbeddingModels(lambda name: entry, MINILM_NAME)
    with_model = KnowledgeBase(store, ModelEmbedder(models))
    assert with_model.refresh_vectors("later") == store.collection("later").chunks > 0
    found = search_collections(with_model, ["later"], "How do I keep my bread culture alive?", 1)
    assert found.sources[0].document == "bread.txt" and "words only" not in found.note
    models.close()
    store.close()
