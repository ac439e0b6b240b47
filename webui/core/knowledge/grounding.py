"""Collections in a chat: the passages of a conversation's (or personality's) collections that best answer
the user's message, numbered as sources for the prompt, and the note that says where they came from.

Without an embedding model the words alone still find passages (BM25), and the note says so: a chat never
fails because the embedding model is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webui.core.documents.attach import Source, format_sources, number_passages
from webui.core.embeddings import EmbeddingError
from webui.core.knowledge.library import KnowledgeBase, Passage
from webui.core.knowledge.store import KnowledgeError

TOP_K = 5


@dataclass(frozen=True)
class Grounding:
    """The sources found for one question: the prompt text to add and what the page shows."""

    text: str  # the instruction to cite and the numbered sources ("" when nothing was found)
    sources: tuple[Source, ...]
    note: str  # for the user: which collections were searched, how, and what was found


def search_collections(
    knowledge: KnowledgeBase, collections: Sequence[str], question: str, top_k: int = TOP_K
) -> Grounding:
    """The ``top_k`` passages of ``collections`` best matching ``question``, numbered."""
    names = list(dict.fromkeys(name for name in collections if name))
    if not names or not question.strip():
        return Grounding("", (), "")
    found: list[Passage] = []
    problems: list[str] = []
    words_only = ""
    for name in names:
        try:
            found += knowledge.search(name, question, top_k=top_k)
        except EmbeddingError as exc:  # no embedding model: search by words
            words_only = str(exc)
            try:
                found += knowledge.search(name, question, top_k=top_k, mode="keyword")
            except KnowledgeError as again:
                problems.append(str(again))
        except KnowledgeError as exc:  # a collection deleted since it was chosen
            problems.append(str(exc))
    # Fused scores of different collections are alike (reciprocal ranks): the best of all come first.
    best = sorted(found, key=lambda p: p.score, reverse=True)[:top_k]
    sources = tuple(number_passages(best))
    searched = ", ".join(names)
    if sources:
        documents = ", ".join(dict.fromkeys(s.document for s in sources))
        note = f"{len(sources)} passage{'s' if len(sources) != 1 else ''} from {searched} ({documents})"
    else:
        note = f"nothing found in {searched}"
    if words_only:
        note += " — searched by words only (no embedding model)"
    if problems:
        note += " — " + "; ".join(problems)
    return Grounding(format_sources(sources) if sources else "", sources, note)


def grounded_text(question: str, grounding: Grounding) -> str:
    """The user's message as the model sees it: the message, then the sources it should answer from."""
    return f"{question}\n\n{grounding.text}" if grounding.text else question
