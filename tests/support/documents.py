"""Documents written by the tests: a small real PDF writer (text pages in Helvetica, one page per string),
DOCX through python-docx, and an encrypted copy of a PDF through pypdf."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

LINE_WIDTH = 90  # characters per line at 10 pt Helvetica on a Letter page with 1-inch margins
LINES_PER_PAGE = 60


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_stream(text: str) -> bytes:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, LINE_WIDTH) or [""]
    if len(lines) > LINES_PER_PAGE:
        raise ValueError(f"A page holds at most {LINES_PER_PAGE} lines; this one needs {len(lines)}.")
    body = [b"BT", b"/F1 10 Tf", b"12 TL", b"72 720 Td"]
    for line in lines:
        body.append(_pdf_string(line) + b" Tj T*")
    body.append(b"ET")
    return b"\n".join(body)


def pdf_bytes(pages: Sequence[str]) -> bytes:
    """A valid PDF with one page per string (a text layer in standard Helvetica, WinAnsi encoding)."""
    if not pages:
        raise ValueError("A PDF needs at least one page.")
    count = len(pages)
    # Objects: 1 catalog, 2 page tree, 3 font, then for each page its page object and content stream.
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(count))
        + f"] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, text in enumerate(pages):
        stream = _page_stream(text)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_pdf(path: Path, pages: Sequence[str]) -> Path:
    """Write a PDF with one page per string of ``pages``; the path."""
    path.write_bytes(pdf_bytes(pages))
    return path


def write_encrypted_pdf(path: Path, pages: Sequence[str], password: str = "secret") -> Path:
    """A PDF that opens only with ``password`` (AES-256, as current PDF software writes)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def write_docx(
    path: Path, paragraphs: Sequence[str], tables: Sequence[Sequence[Sequence[str]]] = (), heading: str = ""
) -> Path:
    """A Word document: an optional heading, the paragraphs, then each table (rows of cell texts)."""
    import docx

    document = docx.Document()
    if heading:
        document.add_heading(heading, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    for rows in tables:
        table = document.add_table(rows=len(rows), cols=max(len(row) for row in rows))
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                table.cell(r, c).text = cell
    document.save(str(path))
    return path
