"""Split a document into overlapping passages for retrieval, never across a PDF page (so each passage has
one page to cite), cutting at paragraph, line, sentence or word ends where one is near."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from webui.core.documents.extract import Document

CHUNK_SIZE = 1000  # characters, as Open WebUI's default
CHUNK_OVERLAP = 100
# Where a cut may fall, best first: a cut looks back at most half a chunk for one of these.
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    """A passage: ``text`` is ``document.text[start:end]``; ``page`` counts from 1 (PDFs only)."""

    index: int
    text: str
    start: int
    end: int
    page: int | None


def chunk_document(
    document: Document,
    size: int = CHUNK_SIZE,
    overlap: int = CHUNK_OVERLAP,
    count_tokens: TokenCounter | None = None,
) -> list[Chunk]:
    """The document's passages in order. ``size`` and ``overlap`` are characters, or tokens when
    ``count_tokens`` is given."""
    chunks: list[Chunk] = []
    for section in document.sections:
        for start, end in split_spans(document.section_text(section), size, overlap, count_tokens):
            text = document.text[section.start + start : section.start + end]
            chunks.append(Chunk(len(chunks), text, section.start + start, section.start + end, section.page))
    return chunks


def split_spans(
    text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP, count_tokens: TokenCounter | None = None
) -> Iterator[tuple[int, int]]:
    """(start, end) character spans covering ``text``'s non-blank parts, each at most ``size`` long (in
    characters or counted tokens), each starting ``overlap`` before the previous one's end."""
    if size < 1:
        raise ValueError("The chunk size must be at least 1.")
    if not 0 <= overlap < size:
        raise ValueError("The chunk overlap must be at least 0 and less than the chunk size.")
    measure = count_tokens or len
    start = _skip_space(text, 0)
    while start < len(text):
        end = _fitting_end(text, start, size, measure)
        if end < len(text):
            end = _break_before(text, start, end)
        stripped_end = len(text[:end].rstrip())
        if stripped_end > start:
            yield start, stripped_end
        if end >= len(text):
            return
        next_start = _overlap_start(text, start, end, overlap, measure)
        start = _skip_space(text, max(next_start, start + 1))


def _fitting_end(text: str, start: int, size: int, measure: TokenCounter) -> int:
    """The furthest end with ``measure(text[start:end]) <= size`` (binary search: measures grow with end)."""
    if measure is len:
        return min(len(text), start + size)
    if measure(text[start:]) <= size:
        return len(text)
    low, high = start + 1, len(text)  # one character always goes, so the split always moves on
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[start:middle]) <= size:
            low = middle
        else:
            high = middle - 1
    return low


def _break_before(text: str, start: int, end: int) -> int:
    """A cut at a natural boundary in the second half of ``text[start:end]``, else ``end`` itself."""
    floor = start + (end - start) // 2
    for mark in _BREAKS:
        found = text.rfind(mark, floor, end)
        if found > start:
            return found + len(mark)
    return end


def _overlap_start(text: str, start: int, end: int, overlap: int, measure: TokenCounter) -> int:
    """Where the next passage begins: ``overlap`` back from ``end``, moved forward to a word start."""
    if overlap == 0:
        return end
    if measure is len:
        back = max(start + 1, end - overlap)
    else:
        low, high = start + 1, end  # the earliest start whose tail up to end fits the overlap
        while low < high:
            middle = (low + high) // 2
            if measure(text[middle:end]) <= overlap:
                high = middle
            else:
                low = middle + 1
        back = low
    if back > 0 and not text[back - 1].isspace():
        space = text.find(" ", back, end)
        newline = text.find("\n", back, end)
        found = min(p for p in (space, newline, end) if p >= 0)
        back = found
    return back


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index
