"""A thinking model's reasoning in stored conversations: kept apart from the answer (per version of a reply), with
how long the model thought; an older database gains it in place; exports and imports keep it; and the next
turn's prompt never holds an earlier turn's reasoning."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader, ScriptedModel
from tests.support.thinking import THINKING_CHATML, THINKING_TEMPLATE_NAME
from webui.config import PROJECT_ROOT
from webui.core.chats.conversation import Conversations, ReplyParts, SavedReply, history_of
from webui.core.chats.store import ChatStore, ChatStoreError
from webui.core.loader import Chunk
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, Service
from webui.core.templates.store import TemplateStore

THINKING = ChatSettings(mode="instruct", template=THINKING_TEMPLATE_NAME)
PARAMS = GenerationParams()

# The schema Palabre wrote before reasoning was stored (user_version 1), as an older release left it on disk.
SCHEMA_1 = (
    """CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        auto_title INTEGER NOT NULL DEFAULT 1, character TEXT,
        mode TEXT NOT NULL CHECK (mode IN ('instruct', 'chat', 'chat-instruct')),
        created_at REAL NOT NULL, updated_at REAL NOT NULL,
        parent_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL, branched_from_message INTEGER)""",
    "CREATE INDEX conversations_by_update ON conversations (updated_at DESC, id DESC)",
    "CREATE INDEX conversations_by_character ON conversations (character, updated_at DESC)",
    """CREATE TABLE messages (id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        active INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, UNIQUE (conversation_id, position))""",
    """CREATE TABLE alternatives (message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        alt_index INTEGER NOT NULL, content TEXT NOT NULL, model TEXT, created_at REAL NOT NULL,
        PRIMARY KEY (message_id, alt_index)) WITHOUT ROWID""",
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    with ChatStore(tmp_path / "palabre.db") as opened:
        yield opened


@pytest.fixture
def chats(tmp_path: Path) -> Iterator[Conversations]:
    """A scripted model that reasons ("Let me see. The user greets me.") and then answers ("Hello there.")
    through the thinking ChatML template (the reply opens inside <think>)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "thinker.gguf").write_text("Let me see.| The user| greets me.|</think>|\n\n|Hello| there|.")
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates")
    templates.save(THINKING_TEMPLATE_NAME, THINKING_CHATML)
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=models,
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=templates,
    )
    service.load_model("thinker.gguf", "scripted")
    with ChatStore(tmp_path / "palabre.db") as opened:
        yield Conversations(service, opened)
    service.close()


def scripted(chats: Conversations) -> ScriptedModel:
    model = chats.service.engine.require_model().model
    assert isinstance(model, ScriptedModel)
    return model


# -- the database ----------------------------------------------------------------------------------------


def test_an_older_database_gains_reasoning_in_place_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "palabre.db"
    with sqlite3.connect(db) as raw:
        for statement in SCHEMA_1:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO conversations VALUES (1, 'Old chat', 0, NULL, 'instruct', 1.0, 2.0, NULL, NULL)"
        )
        raw.execute("INSERT INTO messages VALUES (1, 1, 0, 'user', 0, 1.0)")
        raw.execute("INSERT INTO messages VALUES (2, 1, 1, 'assistant', 1, 1.5)")
        raw.execute("INSERT INTO alternatives VALUES (1, 0, 'Hi?', NULL, 1.0)")
        raw.execute("INSERT INTO alternatives VALUES (2, 0, 'Hello.', 'old-model', 1.5)")
        raw.execute("INSERT INTO alternatives VALUES (2, 1, 'Hi there.', 'old-model', 1.7)")
        raw.execute("PRAGMA user_version = 1")
    raw.close()

    with ChatStore(db) as store:
        old = store.get(1)
        assert old.title == "Old chat"
        assert [(m.role, m.content, m.alternatives) for m in old.messages] == [
            ("user", "Hi?", ("Hi?",)),
            ("assistant", "Hi there.", ("Hello.", "Hi there.")),
        ]
        assert [(m.reasoning, m.reasoning_seconds) for m in old.messages] == [("", None), ("", None)]
        # The migrated database takes reasoning from now on, in the old conversation too.
        reply = store.add_alternative(2, "Bonjour.", reasoning="French, then.", reasoning_seconds=1.5)
        assert (reply.content, reply.reasoning, reply.reasoning_seconds) == ("Bonjour.", "French, then.", 1.5)
    with ChatStore(db) as reopened:
        assert reopened.get(1).messages[-1].reasoning == "French, then."
        assert reopened.get(1).messages[-1].alternatives == ("Hello.", "Hi there.", "Bonjour.")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 5  # on to 5: grounding, collections (17)
    raw.close()


def test_each_version_of_a_reply_keeps_its_own_reasoning(store: ChatStore) -> None:
    conversation = store.create()
    store.append(conversation.id, "user", "Name a colour")
    first = store.append(
        conversation.id, "assistant", "Blue", model="m", reasoning="Skies are blue.", reasoning_seconds=2.0
    )
    assert (first.content, first.reasoning, first.reasoning_seconds) == ("Blue", "Skies are blue.", 2.0)
    second = store.add_alternative(first.id, "Red", reasoning="Roses are red.", reasoning_seconds=0.5)
    assert (second.content, second.reasoning, second.reasoning_seconds) == ("Red", "Roses are red.", 0.5)
    third = store.add_alternative(first.id, "Green")  # a version written without thinking
    assert (third.reasoning, third.reasoning_seconds) == ("", None)
    back = store.select_alternative(first.id, 0)
    assert (back.content, back.reasoning, back.reasoning_seconds) == ("Blue", "Skies are blue.", 2.0)
    # An edit changes the answer alone; a streamed save replaces both.
    edited = store.set_content(first.id, "Blue, like the sky")
    assert (edited.content, edited.reasoning, edited.reasoning_seconds) == (
        "Blue, like the sky",
        "Skies are blue.",
        2.0,
    )
    streamed = store.set_content(first.id, "Navy", reasoning="Darker.", reasoning_seconds=3.0)
    assert (streamed.content, streamed.reasoning, streamed.reasoning_seconds) == ("Navy", "Darker.", 3.0)
    # A branch copies every version with its reasoning.
    branch = store.get(store.branch(conversation.id, first.id).id)
    assert branch.messages[-1].reasoning == "Darker."
    assert store.get(branch.id).messages[-1].alternatives == ("Navy", "Red", "Green")
    assert store.select_alternative(branch.messages[-1].id, 1).reasoning == "Roses are red."


def test_reasoning_arguments_are_checked(store: ChatStore) -> None:
    conversation = store.create()
    with pytest.raises(ChatStoreError, match="reasoning"):
        store.append(conversation.id, "assistant", "x", reasoning=3)  # type: ignore[arg-type]
    with pytest.raises(ChatStoreError, match="seconds"):
        store.append(conversation.id, "assistant", "x", reasoning="y", reasoning_seconds=-1.0)
    with pytest.raises(ChatStoreError, match="seconds"):
        store.append(conversation.id, "assistant", "x", reasoning="y", reasoning_seconds=float("nan"))
    assert store.get(conversation.id).messages == ()


def test_export_and_import_keep_the_reasoning(store: ChatStore) -> None:
    conversation = store.create()
    store.append(conversation.id, "user", "Name a colour")
    reply = store.append(
        conversation.id, "assistant", "Blue", reasoning="Skies are blue.", reasoning_seconds=2.0
    )
    store.add_alternative(reply.id, "Green")
    exported = json.loads(json.dumps(store.export_json(conversation.id)))
    alternatives = exported["messages"][1]["alternatives"]
    assert alternatives[0]["reasoning"] == "Skies are blue." and alternatives[0]["reasoning_seconds"] == 2.0
    assert "reasoning" not in alternatives[1]  # a version without reasoning stays as before
    imported = store.get(store.import_json(exported).id)
    again = imported.messages[1]
    assert (again.content, again.reasoning, again.alternatives) == ("Green", "", ("Blue", "Green"))
    assert store.select_alternative(again.id, 0).reasoning_seconds == 2.0
    assert store.get_message(again.id).reasoning == "Skies are blue."
    # A file without reasoning (an older export) imports as before; a bad reasoning is refused.
    for alternative in alternatives:
        alternative.pop("reasoning", None)
        alternative.pop("reasoning_seconds", None)
    assert store.get(store.import_json(exported).id).messages[1].reasoning == ""
    alternatives[0]["reasoning"] = ["not", "text"]
    with pytest.raises(ChatStoreError, match="reasoning"):
        store.import_json(exported)


def test_a_text_generation_webui_reply_has_its_think_block_taken_apart(store: ChatStore) -> None:
    history = {
        "internal": [["Hi", "<think>\nThey greet me.\n</think>\n\nHello!"], ["And?", "No thinking here."]],
        "visible": [["Hi", "Hello!"], ["And?", "No thinking here."]],
    }
    messages = store.get(store.import_json(history).id).messages
    assert [(m.role, m.content, m.reasoning) for m in messages] == [
        ("user", "Hi", ""),
        ("assistant", "Hello!", "They greet me."),
        ("user", "And?", ""),
        ("assistant", "No thinking here.", ""),
    ]


# -- replies streamed into the store ------------------------------------------------------------------------


def test_a_thinking_reply_saves_its_answer_apart_and_the_next_prompt_leaves_the_reasoning_out(
    chats: Conversations,
) -> None:
    conversation = chats.store.create()
    reply = chats.send(conversation.id, "Hi?", THINKING, PARAMS)
    chunks = list(reply)
    assert "".join(c.reasoning for c in chunks).strip() == "Let me see. The user greets me."
    assert reply.full_text == "Hello there."
    assert not reply.thinking and reply.reasoning_seconds is not None and reply.reasoning_seconds >= 0
    saved = chats.store.get(conversation.id).messages[-1]
    assert (saved.content, saved.reasoning) == ("Hello there.", "Let me see. The user greets me.")
    assert saved.reasoning_seconds == reply.reasoning_seconds
    assert history_of(chats.store.get(conversation.id))[-1].reasoning == saved.reasoning

    list(chats.send(conversation.id, "And then?", THINKING, PARAMS))
    prompt = scripted(chats).prompts[-1]
    assert "Hello there." in prompt and "The user greets me" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")


def test_regenerate_and_continue_keep_each_version_s_reasoning(chats: Conversations) -> None:
    conversation = chats.store.create()
    list(chats.send(conversation.id, "Hi?", THINKING, PARAMS))
    model = scripted(chats)
    model.pieces = ["Be", " French.", "</think>", "Bonjour", "!"]
    list(chats.regenerate(conversation.id, THINKING, PARAMS))
    last = chats.store.get(conversation.id).messages[-1]
    assert (last.content, last.reasoning) == ("Bonjour!", "Be French.")
    assert "Let me see" not in model.prompts[-1]
    assert chats.store.select_alternative(last.id, 0).reasoning == "Let me see. The user greets me."

    model.pieces = [" Ça va?"]  # continuing the answer: the reasoning before it stays
    list(chats.continue_last(conversation.id, THINKING, PARAMS))
    last = chats.store.get(conversation.id).messages[-1]
    assert last.content.startswith("Hello there.") and last.content.endswith("Ça va?")
    assert last.reasoning == "Let me see. The user greets me."


def test_a_reply_stopped_while_thinking_keeps_its_reasoning(chats: Conversations) -> None:
    model = scripted(chats)
    model.delay = 0.2
    conversation = chats.store.create()
    reply = chats.send(conversation.id, "Hi?", THINKING, PARAMS)
    iterator = iter(reply)
    assert next(iterator).reasoning == "Let me see."
    assert reply.thinking and reply.reasoning_seconds is None
    reply.cancel()
    list(iterator)
    assert not reply.thinking and reply.reasoning_seconds is not None
    saved = chats.store.get(conversation.id).messages[-1]
    assert (saved.role, saved.content, saved.reasoning) == ("assistant", "", "Let me see.")


def test_thinking_time_runs_from_the_first_reasoning_to_the_first_answer_text() -> None:
    now = [100.0]
    saves: list[ReplyParts] = []

    def stream() -> Iterator[Chunk]:
        now[0] = 101.0
        yield Chunk(reasoning="Hmm")
        now[0] = 104.5
        yield Chunk(reasoning=", yes.")
        now[0] = 106.0
        yield Chunk("Yes")
        now[0] = 130.0
        yield Chunk(".", finish_reason="stop")

    def create(parts: ReplyParts) -> object:
        saves.append(parts)
        return type("Saved", (), {"id": 1})()

    def update(message_id: int, parts: ReplyParts) -> object:
        saves.append(parts)
        return type("Saved", (), {"id": message_id})()

    reply = SavedReply(stream(), create, update, clock=lambda: now[0])  # type: ignore[arg-type]
    states = [(reply.thinking, reply.reasoning_seconds) for _ in reply]
    assert states == [(True, None), (True, None), (False, 5.0), (False, 5.0)]
    assert saves[-1] == ReplyParts("Yes.", "Hmm, yes.", 5.0)
