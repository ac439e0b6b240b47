"""Documents: text out of every kind of file (written by the test), refusals as clear messages, passages
that keep their pages, the whole-or-retrieval choice for attachments, and citations read back."""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path

import pytest

from tests.support.documents import pdf_bytes, write_docx, write_encrypted_pdf, write_pdf
from webui.core.documents import (
    Document,
    DocumentError,
    Section,
    Source,
    attach_documents,
    chunk_document,
    cited_sources,
    extract,
    format_whole,
    parse_citations,
    read_document,
)
from webui.core.documents.chunk import split_spans
from webui.core.documents.extract import decode_text


def words(text: str) -> int:
    """A stand-in token counter: one token a word (the policy only needs a monotone count)."""
    return len(text.split())


# -- extraction ---------------------------------------------------------------------------------------------


def test_plain_text_markdown_code_csv_and_json(tmp_path: Path) -> None:
    files = {
        "notes.txt": ("Line one\r\nLine two\n", "text", "Line one\nLine two\n"),
        "readme.md": ("# Title\n\nSome *text*.", "markdown", "# Title\n\nSome *text*."),
        "tool.py": ("def f():\n    return 1\n", "code", "def f():\n    return 1\n"),
        "table.csv": ("name,age\nAda,36\n", "csv", "name,age\nAda,36\n"),
        "data.json": ('{"a": [1, 2]}', "json", '{"a": [1, 2]}'),
        "Dockerfile": ("FROM python:3.11\n", "text", "FROM python:3.11\n"),
    }
    for name, (content, kind, text) in files.items():
        (tmp_path / name).write_bytes(content.encode())
        document = read_document(tmp_path / name)
        assert (document.name, document.kind, document.text) == (name, kind, text)
        assert document.sections == (Section(0, len(text), None),) and document.pages is None
        assert document.size == len(content.encode())
    import hashlib

    assert (
        read_document(tmp_path / "notes.txt").sha256 == hashlib.sha256(b"Line one\r\nLine two\n").hexdigest()
    )


def test_encodings_utf8_bom_utf16_and_windows_1252() -> None:
    assert extract("a.txt", "\ufeffcafé".encode()).text == "café"
    assert extract("b.txt", "naïve ☕".encode("utf-16")).text == "naïve ☕"
    assert extract("c.txt", "résumé – “quoted”".encode("cp1252")).text == "résumé – “quoted”"


def test_html_is_read_as_its_visible_text() -> None:
    html = (
        "<html><head><title>Guide</title><style>p{color:red}</style></head><body><script>alert(1)</script>"
        "<h1>Start</h1><p>First &amp; second.</p><ul><li>one</li><li>two</li></ul></body></html>"
    )
    document = extract("guide.html", html.encode())
    assert document.kind == "html"
    assert document.text == "# Guide\n\nStart\nFirst & second.\none\ntwo"


def test_pdf_keeps_its_pages(tmp_path: Path) -> None:
    pages = [f"Page {n} says the secret number is {n * 111} (not {n})." for n in range(1, 31)]
    document = read_document(write_pdf(tmp_path / "facts.pdf", pages))
    assert document.kind == "pdf" and document.pages == 30
    for n, section in enumerate(document.sections, start=1):
        assert section.page == n
        assert document.section_text(section) == pages[n - 1]
        assert document.page_at(section.start) == n
    assert document.text == "\n\n".join(pages)
    # A PDF is known by its first bytes, whatever its name says.
    assert extract("download", pdf_bytes(["Hello PDF"])).kind == "pdf"


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    path = write_docx(
        tmp_path / "report.docx",
        ["The harvest was early.", "Prices rose by a third."],
        tables=[[["Crop", "Tonnes"], ["Barley", "120"], ["Rye", "120"]]],
        heading="Harvest report",
    )
    document = read_document(path)
    assert document.kind == "docx"
    assert document.text == (
        "Harvest report\nThe harvest was early.\nPrices rose by a third.\nCrop | Tonnes\nBarley | 120\nRye | 120"
    )


# -- refusals -----------------------------------------------------------------------------------------------


def test_damaged_pdf_and_docx_files_never_escape_as_other_errors(tmp_path: Path) -> None:
    import logging
    import random

    rng = random.Random(17)
    docx_bytes = write_docx(tmp_path / "ok.docx", ["A paragraph.", "Another."], [[["a", "b"]]]).read_bytes()
    logging.disable(logging.WARNING)  # pypdf warns about every repair it makes
    try:
        for good, name in (
            (pdf_bytes([f"Page {n} text" for n in range(4)]), "m.pdf"),
            (docx_bytes, "m.docx"),
        ):
            for _ in range(150):
                data = bytearray(good)
                for _ in range(rng.randint(1, 30)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                if rng.random() < 0.3:
                    data = data[: rng.randrange(len(data))]
                try:
                    extract(name, bytes(data))
                except DocumentError as exc:
                    assert str(exc).startswith(name)
    finally:
        logging.disable(logging.NOTSET)


def test_a_corrupt_pdf_is_refused_in_words(tmp_path: Path) -> None:
    good = pdf_bytes(["Some text that will be cut off"])
    for data in (b"%PDF-1.7\n garbage garbage", good[: len(good) // 2], b"%PDF-" + bytes(range(256)) * 50):
        with pytest.raises(DocumentError, match=r"broken\.pdf is not a readable PDF"):
            extract("broken.pdf", data)


def test_an_encrypted_pdf_is_refused_in_words(tmp_path: Path) -> None:
    path = write_encrypted_pdf(tmp_path / "locked.pdf", ["Top secret"])
    with pytest.raises(DocumentError, match=r"locked\.pdf is password-protected"):
        read_document(path)


def test_a_pdf_without_text_says_so() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        extract("scan.pdf", pdf_bytes(["", ""]))


def test_binary_with_a_text_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DocumentError, match=r"photo\.txt is not a text file"):
        read_document(tmp_path / "photo.txt")
    with pytest.raises(DocumentError, match="not a text file"):
        decode_text("noise.md", bytes(range(1, 32)) * 100)  # no NUL, but mostly control characters


def test_damaged_docx_and_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="not a readable DOCX"):
        extract("memo.docx", b"PK\x03\x04 not really a zip")
    archive = tmp_path / "empty.docx"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("hello.txt", "no word document here")
    with pytest.raises(DocumentError, match="not a readable DOCX"):
        read_document(archive)
    with pytest.raises(DocumentError, match="not valid JSON"):
        extract("data.json", b'{"a": ')


def test_size_caps(tmp_path: Path) -> None:
    big = tmp_path / "huge.txt"
    big.write_bytes(b"word " * 300_000)  # 1.5 MB
    with pytest.raises(DocumentError, match=r"huge\.txt is 1\.4 MB, over the 1 MB"):
        read_document(big, max_bytes=1024 * 1024)
    assert read_document(big).text.startswith("word word")
    with pytest.raises(DocumentError, match="characters of text"):
        extract("long.txt", b"x" * 5_000_001)


def test_unsupported_kinds_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"not \.exe"):
        extract("setup.exe", b"MZ")
    with pytest.raises(DocumentError, match="Cannot read"):
        read_document(tmp_path / "missing.txt")
    with pytest.raises(DocumentError, match="holds no text"):
        extract("blank.txt", b"  \n\n ")


# -- chunking -----------------------------------------------------------------------------------------------


def test_chunks_overlap_cut_at_boundaries_and_cover_the_text() -> None:
    sentences = [f"Sentence number {n} tells a small fact about item {n}." for n in range(200)]
    text = " ".join(sentences)
    document = extract("facts.txt", text.encode())
    chunks = chunk_document(document, size=300, overlap=60)
    assert len(chunks) > 30
    for chunk in chunks:
        assert len(chunk.text) <= 300 and chunk.text == text[chunk.start : chunk.end]
        assert chunk.text.endswith(".") or chunk is chunks[-1]  # cut after a sentence
        assert chunk.page is None
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they overlap
        assert before.end - after.start <= 60
        assert text[after.start - 1] == " "  # never starting mid-word
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())


def test_chunks_never_cross_pages_and_know_their_page(tmp_path: Path) -> None:
    pages = [" ".join(f"Page {n} line {i} of filler text." for i in range(40)) for n in range(1, 6)]
    document = read_document(write_pdf(tmp_path / "book.pdf", pages))
    chunks = chunk_document(document, size=500, overlap=50)
    assert {chunk.page for chunk in chunks} == {1, 2, 3, 4, 5}
    for chunk in chunks:
        assert f"Page {chunk.page} line" in chunk.text
        assert all(f"Page {n} " not in chunk.text for n in range(1, 6) if n != chunk.page)


def test_chunk_size_in_tokens() -> None:
    text = " ".join(f"w{n}" for n in range(1000))
    spans = list(split_spans(text, size=50, overlap=10, count_tokens=words))
    for start, end in spans:
        assert words(text[start:end]) <= 50
    assert words(text[spans[0][0] : spans[0][1]]) == 50
    assert all(words(text[b[0] : a[1]]) <= 10 for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="overlap"):
        list(split_spans(text, size=10, overlap=10))


def test_a_long_word_is_still_cut() -> None:
    spans = list(split_spans("x" * 2500, size=1000, overlap=100))
    assert [end - start for start, end in spans] == [
        1000,
        1000,
        500,
    ]  # no word start to back up to: no overlap


# -- attachments in the prompt ------------------------------------------------------------------------------


class Hit:
    def __init__(self, chunk_id: int, document: str, page: int | None, text: str) -> None:
        self.chunk_id, self.document, self.page, self.text = chunk_id, document, page, text


def test_whole_text_when_it_fits_exactly_and_retrieval_one_token_short() -> None:
    documents = [
        extract("a.txt", ("Alpha beta gamma delta. " + "Filler words here. " * 40).encode()),
        Document(
            "b.pdf", "pdf", "0" * 64, "Page one.\n\nPage two.", (Section(0, 9, 1), Section(11, 20, 2)), 10
        ),
    ]
    whole = format_whole(documents)
    assert whole.startswith("ATTACHMENTS:\n\nName: a.txt\nContents:\n\n=====\nAlpha beta gamma delta. Filler")
    assert "Filler words here.\n=====\n\nName: b.pdf" in whole
    assert "[page 2]\nPage two." in whole
    need = words(whole)
    asked: list[tuple[str, int]] = []

    def retrieve(question: str, k: int) -> list[Hit]:
        asked.append((question, k))
        return [Hit(7, "b.pdf", 2, "Page two."), Hit(3, "a.txt", None, "Alpha beta gamma delta.")]

    fits = attach_documents(documents, "what?", need, words, retrieve)
    assert fits.mode == "whole" and fits.text == whole and fits.sources == () and asked == []
    assert fits.note.startswith("given whole: a.txt, b.pdf")

    short = attach_documents(documents, "what is on page two?", need - 1, words, retrieve)
    assert short.mode == "retrieval" and asked == [("what is on page two?", 5)]
    assert short.note.startswith("through retrieval: 2 passages from a.txt, b.pdf")
    assert [s.label for s in short.sources] == ["b.pdf, page 2", "a.txt"]
    assert "[1] b.pdf, page 2\nPage two." in short.text and "[2] a.txt\nAlpha" in short.text
    assert "cite it as [n]" in short.text and short.tokens == words(short.text) <= need - 1


def test_retrieval_keeps_only_passages_that_fit() -> None:
    documents = [extract("long.txt", ("filler " * 500).encode())]
    hits = [Hit(1, "long.txt", None, "big " * 300), Hit(2, "long.txt", None, "small passage")]
    context = attach_documents(documents, "q", 100, words, lambda q, k: hits)
    assert [s.chunk_id for s in context.sources] == [2] and context.sources[0].number == 1
    nothing = attach_documents(documents, "q", 5, words, lambda q, k: hits)
    assert nothing.mode == "none" and "no passage fits" in nothing.note
    no_search = attach_documents(documents, "q", 100, words)
    assert no_search.mode == "none" and "no search" in no_search.note
    assert attach_documents([], "q", 100, words).mode == "none"


def test_citations_map_to_the_passages_supplied() -> None:
    sources = [
        Source(1, "a.pdf", 3, "first", 11),
        Source(2, "b.md", None, "second", 12),
        Source(3, "c.txt", None, "third", 13),
    ]
    reply = (
        "Barley came first [2]. Rye too [1, 3]; oats [9] were never mentioned [0]. See [link](1) or [1](x). "
        "In code `xs[1]` and\n```\nys[2]\n```\nare indexes. Again [2][3]."
    )
    citations = parse_citations(reply, sources)
    assert [c.number for c in citations] == [2, 1, 3, 2, 3]
    assert reply[citations[0].start : citations[0].end] == "[2]"
    assert [s.chunk_id for s in cited_sources(reply, sources)] == [12, 11, 13]
    assert cited_sources("No citations here.", sources) == []
    assert json.loads(json.dumps(sources[0].to_dict())) == {
        "number": 1,
        "document": "a.pdf",
        "page": 3,
        "text": "first",
        "chunk_id": 11,
    }
