"""Text out of a user's file: plain text, Markdown, code, CSV, JSON, HTML, PDF (per page) and DOCX.

Every refusal is a ``DocumentError`` whose message can be shown as it is: a corrupt or password-protected PDF,
a binary file with a text name, a file over the size caps. pypdf and python-docx are imported only when a
file of their kind is read, so importing this module stays cheap.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 50 * 1024 * 1024  # the page's default upload cap
MAX_TEXT_CHARS = 5_000_000  # about 1.2 M tokens: far past any context, and still quick to chunk
MAX_PDF_PAGES = 5_000
MAX_DOCX_UNZIPPED = 200 * 1024 * 1024  # a zip bomb's XML would otherwise be inflated in memory

TEXT_KINDS = {
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
_CODE_SUFFIX_LIST = (
    ".py .pyi .js .mjs .cjs .ts .tsx .jsx .java .kt .c .h .cc .cpp .hpp .cs .go .rs .rb .php .swift .scala "
    ".sh .bash .zsh .ps1 .sql .r .lua .pl .m .hs .ml .ex .exs .erl .clj .dart .jl .toml .yaml .yml .ini .cfg "
    ".conf .xml .css .scss .vue .svelte .tex .bat .cmake .gradle .proto .graphql .dockerfile .makefile"
)
CODE_SUFFIXES = frozenset(_CODE_SUFFIX_LIST.split())
BINARY_KINDS = {".pdf": "pdf", ".docx": "docx"}
SUPPORTED_SUFFIXES = frozenset(TEXT_KINDS) | CODE_SUFFIXES | frozenset(BINARY_KINDS)


class DocumentError(ValueError):
    """A file that cannot be read as a document, with a message meant for the user."""


@dataclass(frozen=True)
class Section:
    """A stretch of ``Document.text``: a PDF page (``page`` counts from 1) or the whole of another file."""

    start: int
    end: int
    page: int | None = None


@dataclass(frozen=True)
class Document:
    """A file's text, with the sections citations point into."""

    name: str
    kind: str  # text, markdown, code, csv, json, html, pdf, docx
    sha256: str  # of the file's bytes: the same bytes are never read twice
    text: str
    sections: tuple[Section, ...]
    size: int  # bytes

    @property
    def pages(self) -> int | None:
        """How many pages a PDF has; None for other kinds."""
        return len(self.sections) if self.kind == "pdf" else None

    def page_at(self, offset: int) -> int | None:
        """The page holding character ``offset`` (None outside PDFs)."""
        for section in self.sections:
            if section.start <= offset < section.end or offset == section.end == len(self.text):
                return section.page
        return None

    def section_text(self, section: Section) -> str:
        return self.text[section.start : section.end]


def kind_of(name: str) -> str | None:
    """The kind a file name says (None: a suffix Palabre does not read)."""
    lower = name.lower()
    suffix = Path(lower).suffix
    if suffix in BINARY_KINDS:
        return BINARY_KINDS[suffix]
    if suffix in TEXT_KINDS:
        return TEXT_KINDS[suffix]
    if suffix in CODE_SUFFIXES or Path(lower).name in {"dockerfile", "makefile", "readme", "license"}:
        return "code" if suffix else "text"
    return None


def read_document(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> Document:
    """Read and extract the file at ``path`` (DocumentError for anything that is not a readable document)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise DocumentError(f"{path.name} is not a file.")
        _check_size(path.name, size, max_bytes)
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"Cannot read {path.name}: {exc.strerror or exc}.") from exc
    return extract(path.name, data, max_bytes=max_bytes)


def extract(name: str, data: bytes, *, max_bytes: int = MAX_FILE_BYTES) -> Document:
    """The document in ``data``, a file called ``name`` (its suffix picks the reader; PDF and DOCX content is
    also recognised by its first bytes)."""
    _check_size(name, len(data), max_bytes)
    kind = kind_of(name)
    if data.startswith(b"%PDF-"):
        kind = "pdf"
    if kind is None:
        raise DocumentError(
            f"{name}: Palabre reads text, Markdown, code, CSV, JSON, HTML, PDF and DOCX files, "
            f"not {Path(name).suffix or 'files without a suffix'}."
        )
    if kind == "pdf":
        pages = _pdf_pages(name, data)
    elif kind == "docx":
        pages = [_docx_text(name, data)]
    else:
        text = decode_text(name, data)
        if kind == "html":
            from webui.core.agent.web import html_to_text  # the page fetcher's reader: one HTML-to-text

            text = html_to_text(text)
        elif kind == "json":
            _check_json(name, text)
        pages = [text]
    return _assemble(name, kind, data, pages)


def _check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DocumentError(
            f"{name} is {size / 1048576:.1f} MB, over the {max_bytes / 1048576:.0f} MB a document may have."
        )


def _assemble(name: str, kind: str, data: bytes, pages: list[str]) -> Document:
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        if parts:
            parts.append("\n\n")
            offset += 2
        parts.append(page)
        sections.append(Section(offset, offset + len(page), number if kind == "pdf" else None))
        offset += len(page)
    text = "".join(parts)
    if len(text) > MAX_TEXT_CHARS:
        raise DocumentError(
            f"{name} holds {len(text):,} characters of text, over the {MAX_TEXT_CHARS:,} a document may have."
        )
    if not text.strip():
        if kind == "pdf":
            raise DocumentError(
                f"{name} has no text layer (scanned pages are images, and Palabre does not read images "
                "of text): export it with text, or run OCR on it first."
            )
        raise DocumentError(f"{name} holds no text.")
    return Document(name, kind, hashlib.sha256(data).hexdigest(), text, tuple(sections), len(data))


def decode_text(name: str, data: bytes) -> str:
    """``data`` as text: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252; refused when it
    looks binary (NUL bytes or many control characters)."""
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return _normalise_newlines(data.decode(encoding))
            except UnicodeDecodeError as exc:
                raise DocumentError(f"{name} is not valid UTF-16 text: {exc.reason}.") from exc
    if b"\x00" in data[:65536]:
        raise DocumentError(f"{name} is not a text file (it holds binary data).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # old Windows text files are the usual non-UTF-8 case
    sample = text[:65536]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f")
    if sample and controls / len(sample) > 0.01:
        raise DocumentError(f"{name} is not a text file (it holds binary data).")
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _check_json(name: str, text: str) -> None:
    """A .json file must parse (JSON Lines: every line); the text itself is kept as written."""
    try:
        if name.lower().endswith(".jsonl"):
            for line in text.splitlines():
                if line.strip():
                    json.loads(line)
        else:
            json.loads(text)
    except ValueError as exc:
        raise DocumentError(f"{name} is not valid JSON: {exc}.") from exc


def _pdf_pages(name: str, data: bytes) -> list[str]:
    """Each page's text layer. pypdf raises many kinds of exception on damaged files (its own errors, but
    also KeyError, TypeError, RecursionError...), so any failure while reading becomes a DocumentError."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an owner password alone still lets anyone read
            raise DocumentError(f"{name} is password-protected: save an unprotected copy and add that.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DocumentError(f"{name} has {len(reader.pages):,} pages, over the {MAX_PDF_PAGES:,} read.")
        return [_tidy_page(page.extract_text() or "") for page in reader.pages]
    except DocumentError:
        raise
    except FileNotDecryptedError as exc:
        raise DocumentError(f"{name} is password-protected: save an unprotected copy and add that.") from exc
    except DependencyError as exc:
        raise DocumentError(f"{name} uses encryption this install cannot read: {exc}.") from exc
    except PdfReadError as exc:
        raise DocumentError(f"{name} is not a readable PDF (it may be damaged): {exc}.") from exc
    except Exception as exc:  # see the docstring: damaged PDFs fail in pypdf's internals
        raise DocumentError(
            f"{name} is not a readable PDF (it may be damaged): {type(exc).__name__}."
        ) from exc


def _tidy_page(text: str) -> str:
    lines = [line.rstrip() for line in _normalise_newlines(text).split("\n")]
    return "\n".join(lines).strip()


def _docx_text(name: str, data: bytes) -> str:
    """Paragraphs and tables (rows as cells joined by " | "), in document order."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_DOCX_UNZIPPED:
                raise DocumentError(f"{name} unpacks to more than {MAX_DOCX_UNZIPPED // 1048576} MB.")
    except DocumentError:
        raise
    except Exception as exc:  # BadZipFile, but also NotImplementedError, EOFError... for damaged archives
        raise DocumentError(f"{name} is not a readable DOCX file (it is not a valid zip archive).") from exc
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                blocks.append(_docx_table(block))
            else:
                blocks.append(block.text)
    except DocumentError:
        raise
    except Exception as exc:  # python-docx and lxml fail in many ways on damaged files
        raise DocumentError(f"{name} is not a readable DOCX file: {type(exc).__name__}: {exc}.") from exc
    return "\n".join(blocks).strip()


def _docx_table(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is not previous:  # a merged cell comes back once per grid column it spans
                cells.append(" ".join(cell.text.split()))
            previous = cell._tc
        rows.append(" | ".join(cells))
    return "\n".join(rows)
