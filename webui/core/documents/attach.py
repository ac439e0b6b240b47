"""Attached documents into a prompt: the whole text when it fits the context budget, else the passages that
best answer the question, numbered as sources the model cites as [n]; and those citations read back out
of the reply. Pure functions: the caller supplies the token counter and the search."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from webui.core.documents.extract import Document

TOP_K = 5
AttachMode = Literal["none", "whole", "retrieval"]
TokenCounter = Callable[[str], int]

CITE_INSTRUCTION = (
    "Answer from the numbered sources below. After each statement taken from a source, cite it as [n] "
    "(for example [2]); cite only the numbers listed here. If the sources do not answer the question, say so."
)


class RetrievedPassage(Protocol):
    """What a search returns (``webui.core.knowledge.Passage`` is one)."""

    @property
    def chunk_id(self) -> int: ...
    @property
    def document(self) -> str: ...
    @property
    def page(self) -> int | None: ...
    @property
    def text(self) -> str: ...


Retrieve = Callable[[str, int], Sequence[RetrievedPassage]]  # (question, how many) -> best first


@dataclass(frozen=True)
class Source:
    """A passage supplied to the model under a number."""

    number: int
    document: str
    page: int | None
    text: str
    chunk_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.document}, page {self.page}" if self.page is not None else self.document

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, to keep with the message that cites it."""
        return asdict(self)


@dataclass(frozen=True)
class AttachmentContext:
    """What goes into the prompt for the attachments, and how it was chosen."""

    mode: AttachMode
    text: str  # "" when there is nothing to add
    note: str  # for the user: "given whole: ..." or "through retrieval: ..."
    sources: tuple[Source, ...] = ()  # the numbered passages (retrieval only)
    tokens: int = 0  # what ``text`` counts


@dataclass(frozen=True)
class Citation:
    """A [n] in a reply that names a supplied source; ``start``/``end`` locate the brackets."""

    number: int
    source: Source
    start: int
    end: int


def format_whole(documents: Sequence[Document]) -> str:
    """The documents' full text, each under its file name (text-generation-webui's ATTACHMENTS block); PDF
    pages are marked so that answers can name them."""
    blocks = ["ATTACHMENTS:"]
    for document in documents:
        if document.kind == "pdf":
            body = "\n\n".join(
                f"[page {section.page}]\n{document.section_text(section)}" for section in document.sections
            )
        else:
            body = document.text
        blocks.append(f"Name: {document.name}\nContents:\n\n=====\n{body.strip()}\n=====")
    return "\n\n".join(blocks)


def number_passages(passages: Sequence[RetrievedPassage]) -> list[Source]:
    return [
        Source(number, p.document, p.page, p.text, p.chunk_id) for number, p in enumerate(passages, start=1)
    ]


def format_sources(sources: Sequence[Source]) -> str:
    """The numbered sources with the instruction to cite them."""
    blocks = [CITE_INSTRUCTION, "SOURCES:"]
    blocks += [f"[{s.number}] {s.label}\n{s.text.strip()}" for s in sources]
    return "\n\n".join(blocks)


def attach_documents(
    documents: Sequence[Document],
    question: str,
    budget_tokens: int,
    count_tokens: TokenCounter,
    retrieve: Retrieve | None = None,
    top_k: int = TOP_K,
) -> AttachmentContext:
    """The attachments' text for a prompt with ``budget_tokens`` left for them: all of it when it fits
    ("given whole"), else up to ``top_k`` passages for ``question`` from ``retrieve`` that fit, best first
    ("through retrieval")."""
    if not documents:
        return AttachmentContext("none", "", "")
    names = ", ".join(d.name for d in documents)
    whole = format_whole(documents)
    whole_tokens = count_tokens(whole)
    if whole_tokens <= budget_tokens:
        return AttachmentContext(
            "whole", whole, f"given whole: {names} ({whole_tokens:,} tokens)", (), whole_tokens
        )
    why = f"too long to give whole: {whole_tokens:,} tokens, {max(budget_tokens, 0):,} available"
    if retrieve is None:
        return AttachmentContext("none", "", f"not given: {names} ({why}, and no search to pick passages)")
    passages = list(retrieve(question, top_k))[:top_k]
    chosen: list[RetrievedPassage] = []
    text, tokens = "", 0
    for passage in passages:
        trial = format_sources(number_passages([*chosen, passage]))
        trial_tokens = count_tokens(trial)
        if trial_tokens > budget_tokens:
            continue  # a shorter passage further down may still fit
        chosen.append(passage)
        text, tokens = trial, trial_tokens
    sources = tuple(number_passages(chosen))
    if not sources:
        return AttachmentContext("none", "", f"not given: {names} ({why}; no passage fits)")
    used = sorted(dict.fromkeys(s.document for s in sources))
    note = (
        f"through retrieval: {len(sources)} passage{'s' if len(sources) != 1 else ''} "
        f"from {', '.join(used)} ({why})"
    )
    return AttachmentContext("retrieval", text, note, sources, tokens)


_CITATION = re.compile(r"\[(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\](?!\()")  # [1], [1, 2], [1;3]; not [1](link)
_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)  # a[1] in code is an index, not a citation


def parse_citations(reply: str, sources: Sequence[Source]) -> list[Citation]:
    """Every [n] in ``reply`` that names a supplied source, in order; numbers never supplied are dropped."""
    by_number = {s.number: s for s in sources}
    masked = _CODE.sub(lambda m: " " * len(m.group(0)), reply)
    found: list[Citation] = []
    for match in _CITATION.finditer(masked):
        for part in re.split(r"[,;]", match.group(1)):
            source = by_number.get(int(part))
            if source is not None:
                found.append(Citation(source.number, source, match.start(), match.end()))
    return found


def cited_sources(reply: str, sources: Sequence[Source]) -> list[Source]:
    """The supplied sources ``reply`` cites, each once, in order of first citation."""
    unique = {c.number: c.source for c in parse_citations(reply, sources)}
    return list(unique.values())
