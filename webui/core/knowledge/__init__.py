"""Knowledge collections: documents searched by meaning (vectors) and by words (BM25), fused by rank."""

from webui.core.knowledge.library import (
    AddReport,
    Embedder,
    KnowledgeBase,
    ModelEmbedder,
    Passage,
    attachment_retriever,
)
from webui.core.knowledge.store import (
    KNOWLEDGE_FILE,
    CollectionInfo,
    KnowledgeError,
    KnowledgeStore,
    StoredDocument,
)

__all__ = [
    "KNOWLEDGE_FILE",
    "AddReport",
    "CollectionInfo",
    "Embedder",
    "KnowledgeBase",
    "KnowledgeError",
    "KnowledgeStore",
    "ModelEmbedder",
    "Passage",
    "StoredDocument",
    "attachment_retriever",
]
