"""Documents: text out of files (extract), passages (chunk), and attachments in prompts (attach)."""

from webui.core.documents.attach import (
    AttachmentContext,
    Citation,
    Source,
    attach_documents,
    cited_sources,
    format_sources,
    format_whole,
    parse_citations,
)
from webui.core.documents.chunk import CHUNK_OVERLAP, CHUNK_SIZE, Chunk, chunk_document
from webui.core.documents.extract import Document, DocumentError, Section, extract, read_document

__all__ = [
    "CHUNK_OVERLAP",
    "CHUNK_SIZE",
    "AttachmentContext",
    "Chunk",
    "Citation",
    "Document",
    "DocumentError",
    "Section",
    "Source",
    "attach_documents",
    "chunk_document",
    "cited_sources",
    "extract",
    "format_sources",
    "format_whole",
    "parse_citations",
    "read_document",
]
