"""Knowledge collections with the real all-MiniLM-L6-v2: retrieval quality on a made-up corpus (vectors,
BM25 and their fusion), re-indexing only what changed, re-embedding after a model change, safe keyword
queries, the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.documents import write_docx, write_pdf
from tests.support.embedding_models import MINILM_DIMENSIONS, MINILM_NAME, minilm_folder
from webui.core.embeddings import EmbeddingModels
from webui.core.knowledge import KnowledgeBase, KnowledgeError, KnowledgeStore, ModelEmbedder
from webui.core.knowledge.ranking import fts_query, reciprocal_rank_fusion
from webui.core.models.discovery import ModelEntry

# Made-up topics (so that no model has seen them), one passage each; the questions ask for them in other
# words, the way a user would.
CORPUS: dict[str, str] = {
    "moth.md": "The Zorvath glacier moth spends its summers on the northern ice fields of Keldar. Each autumn "
    "the moths fly nearly four thousand kilometres south, feeding only on rock lichen along the way. Their "
    "wings reflect ultraviolet light, which keeps them cool on the glare of the snow.",
    "railway.txt": "The Quellbrook narrow-gauge railway opened in 1887 to haul slate from the upland quarries "
    "to the harbour. Floods in the spring of 1931 washed away three bridges, and the line was never reopened; "
    "its track bed is now a footpath.",
    "cheese.html": "<html><head><title>Vantris</title></head><body><p>Vantris is a hard ewe's-milk cheese "
    "matured for nine months in salt caves under the town of Orvel. Every week the wheels are rubbed with pear "
    "cider, which gives the rind its amber colour.</p></body></html>",
    "violin.txt": "The crossed-bow technique was devised by the violinist Mirela Sabo in 1903. She held the bow "
    "beneath the strings instead of above them, so that two outer strings could sound at once while the "
    "middle ones stayed silent.",
    "planet.md": "Kethros-4 always turns the same face to its dim red star. The day side is covered by a "
    "shallow ocean of liquid methane, while the night side is a desert of nitrogen frost.",
    "protocol.md": "The Tessaline protocol carries sensor readings over long-range radio. Every frame is "
    "exactly twelve bytes: a two-byte station number, a four-byte timestamp, a four-byte reading and a two-byte "
    "checksum. Stations transmit once every ninety seconds.",
    "festival.txt": "On the longest night of the year the people of Brannock set thousands of paper boats, "
    "each holding a small candle, adrift on the river. The festival marks the return of the sun.",
    "lighthouse.txt": "The keeper of the Hollowmere lighthouse was allowed four litres of whale oil for the lamp "
    "each night, and had to record every drop in the ledger kept by the harbour board.",
    "sorting.md": "The Drelling algorithm orders lists that are already nearly in order. It finds the runs "
    "that are already ascending and merges neighbouring runs pairwise, so a list with few disorders is sorted "
    "in close to linear time.",
    "glaze.txt": "Quinth potters make their famous jade-coloured glaze by mixing copper filings with the ash "
    "of burnt apple wood, then firing the pots in a kiln starved of air.",
    "taxes.txt": "Under the Saltreach fishing statute, a boat's yearly levy is set by the weight of its nets "
    "rather than by its catch, so that crews are not punished for a good season.",
    "apple.md": "Fennick blight is a fungal disease of apple trees. It shows as black rings on the bark of the "
    "trunk and branches. Growers cut away the infected wood in the middle of winter, when the fungus sleeps.",
    "vacuum.txt": "The Ostrava-9 cleaning robot runs for 140 minutes on a full battery and returns to its dock "
    "by itself when the charge falls below ten percent.",
    "kiln-faults.txt": "Brindle kiln controller, fault list. QX-7731: the thermocouple has failed; replace it "
    "before the next firing. QX-7740: the door switch is open. QX-7752: the element relay is stuck closed.",
    "washer-faults.txt": "Pell dishwasher, fault list. RZ-1185: the drain pump is blocked by food waste. "
    "RZ-1190: the water inlet valve did not open. RZ-1204: the heater did not reach temperature.",
    "beetles.md": "Farmers in the Marrowind valley raise copper beetles in clay jars. The beetles eat barley "
    "husks and are ground into a red dye that is used for the valley's wedding cloth.",
}
QUESTIONS: list[tuple[str, str]] = [
    ("Which insect travels very far every year and lives on lichen?", "moth.md"),
    ("Why did the small slate train stop running?", "railway.txt"),
    ("How is that sheep cheese aged and what is its crust washed with?", "cheese.html"),
    ("Who invented playing with the bow under the strings?", "violin.txt"),
    ("What fills the sea on the tidally locked world?", "planet.md"),
    ("How big is each message in the radio telemetry standard?", "protocol.md"),
    ("What do people float on the water at the midwinter celebration?", "festival.txt"),
    ("How much fuel could the beacon keeper burn in a night?", "lighthouse.txt"),
    ("What is a fast way to sort data that is almost sorted already?", "sorting.md"),
    ("How do the potters get a green finish on their pottery?", "glaze.txt"),
    ("How are fishermen taxed?", "taxes.txt"),
    ("My orchard trees have dark circles on the trunk, what is it and how do I treat it?", "apple.md"),
    ("How long does the robot vacuum last on one charge?", "vacuum.txt"),
    ("Where does the red colour for bridal fabric come from?", "beetles.md"),
    ("What does error QX-7731 mean?", "kiln-faults.txt"),
    ("RZ-1185 showing, what do I do", "washer-faults.txt"),
]


class CountingEmbedder:
    """An Embedder around the real model that counts the texts it embeds (and can claim another name)."""

    def __init__(self, inner: ModelEmbedder, name: str | None = None) -> None:
        self.inner = inner
        self.name = name
        self.count = 0

    @property
    def model(self) -> str:
        return self.name or self.inner.model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.count += len(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def minilm_models() -> Iterator[EmbeddingModels]:
    folder = minilm_folder()
    entry = ModelEntry(MINILM_NAME, folder, "folder", 0)
    models = EmbeddingModels(lambda name: entry if name == MINILM_NAME else None, MINILM_NAME)
    yield models
    models.close()


@pytest.fixture
def embedder(minilm_models: EmbeddingModels) -> CountingEmbedder:
    return CountingEmbedder(ModelEmbedder(minilm_models))


@pytest.fixture
def base(tmp_path: Path, embedder: CountingEmbedder) -> Iterator[KnowledgeBase]:
    store = KnowledgeStore(tmp_path / "knowledge.sqlite3")
    yield KnowledgeBase(store, embedder)
    store.close()


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in CORPUS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus_base(tmp_path_factory: pytest.TempPathFactory, minilm_models: EmbeddingModels) -> KnowledgeBase:
    root = tmp_path_factory.mktemp("corpus")
    base = KnowledgeBase(KnowledgeStore(root / "knowledge.sqlite3"), ModelEmbedder(minilm_models))
    report = base.add_paths("made-up", [write_corpus(root / "docs")])
    assert report.failed == [] and len(report.added) == len(CORPUS)
    return base


def top3_hits(base: KnowledgeBase, mode: str) -> tuple[int, float, list[str]]:
    """(questions answered in the top 3, mean reciprocal rank over the top 10, the misses)."""
    hits, reciprocal, misses = 0, 0.0, []
    for question, wanted in QUESTIONS:
        names = [p.document for p in base.search("made-up", question, 10, mode)]  # type: ignore[arg-type]
        rank = names.index(wanted) + 1 if wanted in names else None
        reciprocal += 1 / rank if rank else 0.0
        if rank is not None and rank <= 3:
            hits += 1
        else:
            misses.append(f"{question!r} -> {names[:3]} (want {wanted}, rank {rank})")
    return hits, reciprocal / len(QUESTIONS), misses


def test_every_question_finds_its_passage_in_the_top_three(corpus_base: KnowledgeBase) -> None:
    assert len(CORPUS) >= 10 and len(QUESTIONS) >= 10
    hits, _, misses = top3_hits(corpus_base, "hybrid")
    assert hits == len(QUESTIONS), misses


def test_hybrid_is_at_least_as_good_as_either_ranker_alone(
    corpus_base: KnowledgeBase, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {mode: top3_hits(corpus_base, mode) for mode in ("vector", "keyword", "hybrid")}
    with capsys.disabled():
        for mode, (hits, mrr, _) in results.items():
            print(f"\n{mode:>8}: top-3 {hits}/{len(QUESTIONS)}, MRR@10 {mrr:.3f}", end="")
        print()
    hybrid_hits, hybrid_mrr, _ = results["hybrid"]
    for mode in ("vector", "keyword"):
        assert hybrid_hits >= results[mode][0], results
    assert hybrid_mrr >= results["keyword"][1], results


def test_results_carry_document_page_chunk_and_ranks(corpus_base: KnowledgeBase) -> None:
    [best] = corpus_base.search("made-up", "twelve byte frames of the Tessaline radio protocol", 1)
    assert best.document == "protocol.md" and best.page is None
    assert "twelve bytes" in best.text and best.chunk_id > 0
    assert best.vector_rank == 1 and best.keyword_rank == 1 and best.score > 0
    stored = corpus_base.store.stored_document(best.document_id)
    assert stored.text[best.start : best.end] == best.text


def test_pdf_pages_are_found_and_cited_by_page(base: KnowledgeBase, tmp_path: Path) -> None:
    colours = ["red", "orange", "yellow", "green", "blue", "indigo", "violet", "white", "black", "grey"]
    pages = [
        f"Ledger page {n}. The harbour of Port {chr(65 + n % 26)}{n} received {n * 37} barrels of "
        f"{colours[n % 10]} paint from the island of Tamsk-{n} in the year {1700 + n}."
        for n in range(1, 31)
    ]
    write_pdf(tmp_path / "ledger.pdf", pages)
    report = base.add_paths("ledger", [tmp_path / "ledger.pdf"])
    assert report.added == ["ledger.pdf"] and report.failed == []
    for n in (1, 17, 30):
        [best] = base.search("ledger", f"How many barrels came from the island of Tamsk-{n}?", 1)
        assert best.page == n and f"{n * 37} barrels" in best.text


def test_only_what_changed_is_embedded_again(
    base: KnowledgeBase, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    (folder / "deeper").mkdir(parents=True)
    (folder / "a.txt").write_text("Alpha notes about the Quellbrook railway and its slate wagons.")
    (folder / "b.md").write_text("Beta notes on glaze chemistry: copper, ash and reduction firing.")
    (folder / "deeper" / "c.txt").write_text("Gamma notes on the Ostrava-9 robot's battery.")
    (folder / ".hidden.txt").write_text("never read")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    first = base.add_paths("notes", [folder])
    assert sorted(first.added) == ["a.txt", "b.md", "deeper/c.txt"] and first.embedded == embedder.count == 3

    again = base.add_paths("notes", [folder])
    assert again.added == again.updated == again.removed == [] and again.embedded == 0
    assert sorted(again.unchanged) == ["a.txt", "b.md", "deeper/c.txt"] and embedder.count == 3

    (folder / "a.txt").write_text("Alpha notes, rewritten: the railway closed after the floods of 1931.")
    (folder / "deeper" / "c.txt").unlink()
    third = base.add_paths("notes", [folder])
    assert third.updated == ["a.txt"] and third.removed == ["deeper/c.txt"] and third.embedded == 1
    assert embedder.count == 4
    assert sorted(d.name for d in base.store.documents("notes")) == ["a.txt", "b.md"]
    [best] = base.search("notes", "when did the railway close", 1)
    assert best.document == "a.txt" and "1931" in best.text
    # The old text is gone from the keyword index too.
    assert all("slate wagons" not in p.text for p in base.search("notes", "slate wagons", 5, "keyword"))


def test_a_new_embedding_model_embeds_everything_again(
    base: KnowledgeBase, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    base.add_paths("swap", [write_corpus(tmp_path / "docs")])
    assert base.store.collection("swap").embedding_model == MINILM_NAME
    chunks = base.store.collection("swap").chunks
    other = CountingEmbedder(embedder.inner, name="another-model")
    swapped = KnowledgeBase(base.store, other)
    [best] = swapped.search("swap", "How long does the robot vacuum last on one charge?", 1)
    assert best.document == "vacuum.txt"
    assert other.count == chunks + 1  # every passage, then the question
    info = base.store.collection("swap")
    assert (info.embedding_model, info.dimensions) == ("another-model", MINILM_DIMENSIONS)
    swapped.search("swap", "paper boats", 1)
    assert other.count == chunks + 2  # nothing stale any more: only the question


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "NEAR(moth lichen",
        "text:moth",
        "moth*",
        "AND OR NOT",
        "^moth -lichen +glacier",
        "'); DROP TABLE chunks; --",
        "(((",
        "?!.,;",
        "   ",
        "",
        "ünïcödé glacier – “quotes”",
        "a" * 5000,
    ],
)
def test_keyword_search_accepts_any_text(corpus_base: KnowledgeBase, query: str) -> None:
    for mode in ("keyword", "hybrid"):
        corpus_base.search("made-up", query, 3, mode)  # type: ignore[arg-type]
    assert corpus_base.store.collection("made-up").chunks >= len(CORPUS)


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('the "glacier" moth*') == '"glacier" OR "moth"'
    assert fts_query("what is it") == '"what" OR "is" OR "it"'  # only stopwords: keep them
    assert fts_query("?!") is None
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text)")
    conn.execute("INSERT INTO t VALUES ('NEAR the glacier')")
    assert conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (fts_query("NEAR("),)).fetchone() == (1,)


def test_rank_fusion_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion({"vector": [1, 2, 3], "keyword": [3, 4, 1]})
    assert [item for item, _ in fused][:2] == [1, 3]
    assert dict(fused)[1] == pytest.approx(1 / 61 + 1 / 63)


def test_collections_list_remove_and_refuse_bad_names(base: KnowledgeBase, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "docs")
    write_docx(tmp_path / "extra.docx", ["The Saltreach levy depends on the weight of the nets."])
    base.add_paths("Mixed", [folder, tmp_path / "extra.docx"])
    info = base.store.collection("mixed")  # names are matched without case
    assert info.documents == len(CORPUS) + 1 and info.chunks >= info.documents
    assert [c.name for c in base.store.collections()] == ["Mixed"]
    assert base.remove("Mixed", "extra.docx") == ["extra.docx"]
    assert base.remove("Mixed", str(folder / "moth.md")) == ["moth.md"]
    with pytest.raises(KnowledgeError, match="no document"):
        base.remove("Mixed", "missing.txt")
    assert all(p.document != "moth.md" for p in base.search("Mixed", "glacier moth lichen", 5))
    removed = base.remove("Mixed")
    assert len(removed) == len(CORPUS) - 1 and base.store.collections() == []
    with pytest.raises(KnowledgeError):
        base.store.ensure_collection("../escape")
    with pytest.raises(KnowledgeError, match="no knowledge collection"):
        base.search("nothing-here", "anything")


def test_unreadable_files_are_reported_and_the_rest_added(base: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Plain words about lanterns.")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    report = base.add_paths(
        "mixed", [tmp_path / "good.txt", tmp_path / "broken.pdf", tmp_path / "binary.txt"]
    )
    assert report.added == ["good.txt"]
    assert {name for name, _ in report.failed} == {"broken.pdf", "binary.txt"}
    assert all(message for _, message in report.failed)


def test_the_cli_adds_lists_searches_and_removes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from webui.cli import main

    user_data = tmp_path / "user_data"
    (user_data / "models").mkdir(parents=True)
    docs = write_corpus(tmp_path / "docs")
    common = ["--user-data-dir", str(user_data)]

    # No embedding model to be found: refused in words, and no empty collection is left behind.
    assert main(["knowledge", "add", "lore", str(docs), *common]) == 2
    assert "--embedding-model" in capsys.readouterr().err
    assert main(["knowledge", "list", *common]) == 0
    assert "No knowledge collections" in capsys.readouterr().out

    (user_data / "models" / MINILM_NAME).symlink_to(minilm_folder(), target_is_directory=True)

    assert main(["knowledge", "add", "lore", str(docs), *common]) == 0
    out = capsys.readouterr().out
    assert f"added {len(CORPUS)}" in out and MINILM_NAME in out
    assert (user_data / "knowledge.sqlite3").is_file()

    assert main(["knowledge", "list", *common]) == 0
    assert "lore" in capsys.readouterr().out

    assert main(["knowledge", "search", "lore", "How are fishermen taxed?", "--json", *common]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["document"] == "taxes.txt" and "levy" in results[0]["text"]

    assert main(["knowledge", "remove", "lore", "taxes.txt", *common]) == 0
    assert "taxes.txt" in capsys.readouterr().out
    assert main(["knowledge", "list", "lore", *common]) == 0
    listing = capsys.readouterr().out
    assert "taxes.txt" not in listing and "moth.md" in listing

    assert main(["knowledge", "remove", "lore", *common]) == 0
    assert main(["knowledge", "search", "lore", "anything", *common]) == 2
    assert "no knowledge collection" in capsys.readouterr().err


def test_attachments_too_long_go_through_retrieval_with_citations(
    minilm_models: EmbeddingModels, tmp_path: Path
) -> None:
    from webui.core.documents import attach_documents, cited_sources, extract, read_document
    from webui.core.knowledge import attachment_retriever

    pages = [f"{name}: {text}" for name, text in CORPUS.items()]
    attachments = [
        read_document(write_pdf(tmp_path / "almanac.pdf", pages)),
        extract("extra.txt", b"The Brannock festival lasts exactly one night."),
    ]
    embedder = CountingEmbedder(ModelEmbedder(minilm_models))
    retrieve = attachment_retriever(attachments, embedder)

    def count(text: str) -> int:
        return len(text.split())

    roomy = attach_documents(attachments, "How are fishermen taxed?", 100_000, count, retrieve)
    assert roomy.mode == "whole" and embedder.count == 0  # given whole: nothing embedded

    tight = attach_documents(attachments, "How are fishermen taxed?", 300, count, retrieve, top_k=3)
    assert tight.mode == "retrieval" and tight.tokens <= 300
    first = tight.sources[0]
    assert (first.number, first.document, first.page) == (1, "almanac.pdf", 11) and "levy" in first.text
    assert "[1] almanac.pdf, page 11" in tight.text
    same_name = attachment_retriever(
        [extract("n.txt", b"Moths eat lichen."), extract("n.txt", b"Boats float.")], embedder
    )
    assert sorted(p.document for p in same_name("boats", 5)) == ["n.txt", "n.txt (2)"]
    reply = "The levy depends on the weight of the nets [1], not the catch [7]."
    assert cited_sources(reply, tight.sources) == [first]


def test_conversation_collections_are_hidden_from_the_list(base: KnowledgeBase) -> None:
    from webui.core.documents import extract

    document = extract("note.txt", b"The Hollowmere keeper had four litres of oil a night.")
    assert base.add_documents("chat-12", [document], hidden=True).added == ["note.txt"]
    assert base.add_documents("chat-12", [document], hidden=True).unchanged == ["note.txt"]
    report = base.add_uploads(
        "chat-12",
        [
            ("note.txt", b"The Hollowmere keeper had five litres of oil a night."),
            ("bad.pdf", b"%PDF-1.4 junk"),
        ],
        hidden=True,
    )
    assert report.updated == ["note.txt"] and [name for name, _ in report.failed] == ["bad.pdf"]
    assert [d.name for d in base.store.documents("chat-12")] == ["note.txt"]
    assert base.store.collections() == []
    assert [c.name for c in base.store.collections(include_hidden=True)] == ["chat-12"]
    [best] = base.search("chat-12", "how much lamp fuel", 1)
    assert best.document == "note.txt"


def test_searches_see_every_change(base: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("The Zorvath glacier moth eats rock lichen.")
    base.add_paths("live", [tmp_path / "one.txt"])
    assert [p.document for p in base.search("live", "what does the moth eat", 5)] == ["one.txt"]
    (tmp_path / "two.txt").write_text("The Ostrava-9 robot runs for 140 minutes.")
    base.add_paths("live", [tmp_path / "two.txt"])
    assert base.search("live", "robot battery minutes", 1, "vector")[0].document == "two.txt"
    base.remove("live", "two.txt")
    assert [p.document for p in base.search("live", "robot battery minutes", 5, "vector")] == ["one.txt"]
    base.remove("live")
    (tmp_path / "three.txt").write_text("Brannock paper boats drift on the river.")
    base.add_paths("again", [tmp_path / "three.txt"])  # a new collection never reuses the old one's cache
    assert [p.document for p in base.search("again", "boats", 5, "vector")] == ["three.txt"]
