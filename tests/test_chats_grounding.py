"""Files and collections in a conversation, through the real Service (SmolLM2 GGUF, llama.cpp) and the real
MiniLM embedding model: a short file is given whole, a 30-page PDF through retrieval (and kept for later
messages), a conversation's and a personality's collections give numbered sources, and all of it is saved with
the message, so a reopened store gives the same prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.documents import pdf_bytes
from tests.support.embedding_models import MINILM_NAME, minilm_folder
from webui.config import PROJECT_ROOT
from webui.core.characters.store import Character
from webui.core.chats.conversation import Conversations, chat_settings_for
from webui.core.chats.grounding import conversation_collection
from webui.core.chats.records import AttachmentRecord
from webui.core.chats.store import ChatStore
from webui.core.documents.attach import cited_sources
from webui.core.documents.extract import extract
from webui.core.knowledge import KNOWLEDGE_FILE
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, Service
from webui.core.templates.store import TemplateStore
from webui.ui.chat_media import document_reader

pytestmark = pytest.mark.slow

PARAMS = GenerationParams(max_new_tokens=8, temperature=0)
INSTRUCT = ChatSettings(mode="instruct")
FACTS = [
    "The lighthouse keeper of Veldmark paints the tower green every spring.",
    "Orrin valley quince jam is cooked with star anise.",
    "The glass bridge over the Tessel gorge carries only bicycles.",
    "Copper beetles of the northern marsh glow after a thunderstorm.",
    "The ferry to Skellan island leaves at seven and at noon.",
    "Marrowind wedding cloth is dyed red with ground beetles.",
]
PLACES = [
    "Veldmark",
    "Orrin",
    "Tessel",
    "Skellan",
    "Marrowind",
    "Oskarvik",
    "Brenna",
    "Quillon",
    "Dastor",
    "Ferrow",
]
CRAFTS = ["basket weaving", "salt drying", "bell casting", "rope making", "amber polishing", "kite building"]


def almanac_page(number: int) -> str:
    """A page about one town and one craft (no two pages alike), about 900 characters."""
    place, craft = PLACES[number % len(PLACES)], CRAFTS[number % len(CRAFTS)]
    lines = [
        f"Chapter {number}: {place} and its {craft}.",
        f"In {place} the {craft} season opens after the {number}th market day of the year.",
        f"Elders of {place} teach {craft} to apprentices in the long hall by the harbour.",
        f"The guild of {place} keeps a ledger of every {craft} order since the old flood.",
        f"Visitors to {place} may watch {craft} on weekday mornings but not on feast days.",
    ]
    return " ".join(lines * 3)


PAGES = [almanac_page(n + 1) for n in range(30)]
PAGES[16] = "The night train to Oskarvik is pulled by a blue steam engine named Greta. " + PAGES[16]
PAGES[23] = "The ferry to Skellan island leaves at seven and at noon. " + PAGES[23]


def attachment(name: str, data: bytes) -> AttachmentRecord:
    """A file as the page keeps it when it is sent (a PDF's text with its pages marked)."""
    kind, text = document_reader()(name, data)
    return AttachmentRecord(name, kind, extract(name, data).sha256, len(data), None, text)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("grounding")
    models = root / "models"
    models.mkdir()
    (models / default_model_path.name).symlink_to(default_model_path)
    (models / MINILM_NAME).symlink_to(minilm_folder(), target_is_directory=True)
    service = Service(
        LoaderRegistry.from_entry_points(),
        models_dir=models,
        presets=PresetStore(PROJECT_ROOT / "presets", root / "presets"),
        templates=TemplateStore(PROJECT_ROOT / "instruction-templates", root / "templates"),
        embedding_model=MINILM_NAME,
        knowledge_path=root / KNOWLEDGE_FILE,
    )
    service.load_model(default_model_path.name, settings={"n_ctx": 2048})
    yield service
    service.close()


@pytest.fixture
def chats(service: Service, tmp_path: Path) -> Iterator[Conversations]:
    with ChatStore(tmp_path / "palabre.db") as store:
        yield Conversations(service, store)


def sent_prompt(chats: Conversations, conversation_id: int, text: str, **kwargs: object) -> str:
    reply = chats.send(conversation_id, text, INSTRUCT, PARAMS, **kwargs)  # type: ignore[arg-type]
    list(reply)  # the reply is written and saved
    return reply.stream.prompt.text  # type: ignore[union-attr]


def test_a_short_file_is_given_whole(chats: Conversations) -> None:
    conversation = chats.start()
    note = attachment("note.txt", b"The spare key hangs behind the barometer.")
    prompt = sent_prompt(chats, conversation.id, "Where is the key?", attachments=[note])
    assert (
        "Where is the key?" in prompt and "hangs behind the barometer" in prompt and "ATTACHMENTS" in prompt
    )
    question = chats.store.get(conversation.id).messages[0]
    assert question.grounding is not None and question.grounding.note.startswith("given whole: note.txt")
    assert question.content == "Where is the key?"  # what the user wrote, apart from what it was given


def test_a_long_pdf_goes_through_retrieval_and_stays_for_later_messages(chats: Conversations) -> None:
    conversation = chats.start()
    pdf = attachment("almanac.pdf", pdf_bytes(PAGES))
    prompt = sent_prompt(chats, conversation.id, "Which engine pulls the night train?", attachments=[pdf])
    question = chats.store.get(conversation.id).messages[0]
    assert question.grounding is not None and "through retrieval" in question.grounding.note
    sources = question.grounding.sources
    assert sources and sources[0].document == "almanac.pdf" and sources[0].page == 17
    assert "[1] almanac.pdf, page 17" in prompt and "Greta" in prompt
    assert prompt.count("ordinary week") < 30  # not the whole almanac
    assert chats.service.count_tokens(prompt) <= 2048

    # A later message of the same conversation is answered from the same file.
    later = sent_prompt(chats, conversation.id, "Which island does the ferry go to?")
    assert "seven and at noon" in later.split("Which island does the ferry go to?")[-1]
    assert chats.service.knowledge is not None
    hidden = conversation_collection(conversation)
    assert hidden not in [c.name for c in chats.service.knowledge.store.collections()]  # not listed
    assert chats.service.knowledge.store.find_collection(hidden) is not None

    # The saved prompt text comes back the same from a reopened store (nothing recomputed).
    reopened = ChatStore(chats.store.path)
    again = reopened.get(conversation.id).messages[0].grounding
    assert again == question.grounding
    reopened.close()

    chats.delete(conversation.id)  # its kept files go with it
    assert chats.service.knowledge.store.find_collection(hidden) is None


def test_the_conversations_and_the_personalitys_collections_give_numbered_sources(
    chats: Conversations,
) -> None:
    knowledge = chats.service.knowledge
    assert knowledge is not None
    knowledge.add_documents("travel", [extract("ferries.txt", FACTS[4].encode())])
    knowledge.add_documents("crafts", [extract("cloth.txt", FACTS[5].encode())])

    conversation = chats.start()
    chats.store.set_knowledge(conversation.id, ["travel"])
    assert chats.store.knowledge(conversation.id) == ["travel"]
    prompt = sent_prompt(chats, conversation.id, "When does the ferry to Skellan leave?")
    assert "[1] ferries.txt" in prompt and "cite it as [n]" in prompt
    sources = chats.store.get(conversation.id).messages[0].grounding.sources  # type: ignore[union-attr]
    assert [s.document for s in cited_sources("At seven and noon [1].", sources)] == ["ferries.txt"]

    weaver = Character(name="Weaver", knowledge=["crafts"])
    settings = chat_settings_for(weaver, mode="instruct")
    other = chats.start()
    reply = chats.send(other.id, "What colours the wedding cloth?", settings, PARAMS)
    list(reply)
    assert "[1] cloth.txt" in reply.stream.prompt.text  # type: ignore[union-attr]


def test_a_message_without_files_or_collections_is_sent_as_written(chats: Conversations) -> None:
    conversation = chats.start()
    prompt = sent_prompt(chats, conversation.id, "Hello there")
    assert "SOURCES" not in prompt and "ATTACHMENTS" not in prompt
    assert chats.store.get(conversation.id).messages[0].grounding is None
