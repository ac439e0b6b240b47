"""The conversation store: real SQLite files, real threads, real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.chat_writer import content_for, stream_text
from webui.core.chats.store import (
    DEFAULT_TITLE,
    MODES,
    ChatStore,
    ChatStoreError,
    Conversation,
    StoredMessage,
    title_from,
)

ROOT = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).parent / "support" / "chat_writer.py"
TGW_HISTORY = Path(__file__).with_name("data") / "tgw_history.json"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "user_data" / "palabre.db"


@pytest.fixture
def store(db: Path) -> Any:
    with ChatStore(db) as chat_store:
        yield chat_store


def contents(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


# -- conversations ---------------------------------------------------------------------------------------


def test_create_get_and_defaults(store: ChatStore, db: Path) -> None:
    assert db.is_file()
    summary = store.create()
    assert (summary.title, summary.character, summary.mode, summary.message_count) == (
        DEFAULT_TITLE,
        None,
        "instruct",
        0,
    )
    assert summary.created_at == summary.updated_at
    conversation = store.get(summary.id)
    assert conversation.messages == () and conversation.id == summary.id
    character_chat = store.create(character="Ada", mode="chat", title="With Ada")
    assert (character_chat.character, character_chat.mode, character_chat.title) == (
        "Ada",
        "chat",
        "With Ada",
    )


def test_invalid_arguments_are_readable_errors(store: ChatStore) -> None:
    with pytest.raises(ChatStoreError, match="chat mode"):
        store.create(mode="roleplay")
    with pytest.raises(ChatStoreError, match="character"):
        store.create(character="  ")
    conversation = store.create()
    with pytest.raises(ChatStoreError, match="message role"):
        store.append(conversation.id, "narrator", "Once upon a time")
    with pytest.raises(ChatStoreError, match="no conversation with id 9999"):
        store.get(9999)
    with pytest.raises(ChatStoreError, match="no conversation"):
        store.append(9999, "user", "hi")
    with pytest.raises(ChatStoreError, match="no message with id 9999"):
        store.set_content(9999, "x")
    with pytest.raises(ChatStoreError, match="must not be empty"):
        store.rename(conversation.id, "   ")
    assert isinstance(ChatStoreError("x"), ValueError)


def test_modes_match_the_prompt_builder() -> None:
    from webui.core.prompts import MODES as PROMPT_MODES

    assert MODES == PROMPT_MODES


def test_title_follows_the_first_user_message_unless_set(store: ChatStore) -> None:
    conversation = store.create(character="Ada", mode="chat")
    store.append(conversation.id, "assistant", "Hello! I am Ada.")  # a greeting does not name the chat
    assert store.get(conversation.id).title == DEFAULT_TITLE
    store.append(conversation.id, "user", "  How do\nbirds   fly so far without getting tired at all?  ")
    title = store.get(conversation.id).title
    assert title == "How do birds fly so far without getting…"
    assert len(title) <= 41
    store.append(conversation.id, "user", "A second question")
    assert store.get(conversation.id).title == title

    named = store.create(title="My own title")
    store.append(named.id, "user", "Something else entirely")
    assert store.get(named.id).title == "My own title"

    renamed = store.create()
    store.rename(renamed.id, "Renamed first")
    store.append(renamed.id, "user", "Hello")
    assert store.get(renamed.id).title == "Renamed first"
    assert title_from("short") == "short"
    assert title_from("x" * 100) == "x" * 40 + "…"


def test_listing_is_newest_first_and_filters_by_character(store: ChatStore) -> None:
    first = store.create(title="first")
    second = store.create(character="Ada", mode="chat", title="second")
    third = store.create(character="Bob", mode="chat-instruct", title="third")
    assert [c.id for c in store.conversations()] == [third.id, second.id, first.id]
    store.append(first.id, "user", "bump")  # any write moves a conversation to the top
    listed = store.conversations()
    assert [c.id for c in listed] == [first.id, third.id, second.id]
    assert listed[0].message_count == 1 and listed[0].updated_at > listed[0].created_at
    assert [c.id for c in store.conversations(character=None)] == [first.id]
    assert [c.id for c in store.conversations(character="Ada")] == [second.id]
    assert store.conversations(character="Nobody") == []
    assert len(store.conversations(limit=2)) == 2
    store.rename(second.id, "second, renamed")
    assert store.conversations()[0].id == second.id


def test_rename_and_delete(store: ChatStore, db: Path) -> None:
    keep = store.create(title="keep")
    store.append(keep.id, "user", "stays")
    gone = store.create(title="gone")
    message = store.append(gone.id, "user", "vanishes")
    store.add_alternative(message.id, "vanishes too")
    store.rename(gone.id, "  renamed  ")
    assert store.get(gone.id).title == "renamed"
    store.delete(gone.id)
    with pytest.raises(ChatStoreError):
        store.get(gone.id)
    with pytest.raises(ChatStoreError):
        store.delete(gone.id)
    with pytest.raises(ChatStoreError):
        store.set_content(message.id, "x")
    assert [c.id for c in store.conversations()] == [keep.id]
    with sqlite3.connect(db) as raw:  # the rows are really gone, not hidden
        assert raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        assert raw.execute("SELECT count(*) FROM alternatives").fetchone()[0] == 1


def test_search_by_title_and_any_message_content(store: ChatStore) -> None:
    birds = store.create(title="Birds and migration")
    store.append(birds.id, "user", "How far do swallows fly?")
    cooking = store.create(title="Dinner")
    store.append(cooking.id, "user", "A recipe for the ÉTÉ menu, 100% vegan_style")
    reply = store.append(cooking.id, "assistant", "Try a ratatouille.")
    store.add_alternative(reply.id, "Try a gazpacho.")  # the first version is no longer shown
    other = store.create(character="Ada", mode="chat", title="Other")
    store.append(other.id, "user", "Swallows again")

    def ids(search: str, **kwargs: Any) -> set[int]:
        return {c.id for c in store.conversations(search=search, **kwargs)}

    assert ids("MIGRATION") == {birds.id}
    assert ids("swallows") == {birds.id, other.id}
    assert ids("swallows", character=None) == {birds.id}
    assert ids("été") == {cooking.id}  # case-insensitive beyond ASCII
    assert ids("ratatouille") == {cooking.id}  # every alternative is searched
    assert ids("100%") == {cooking.id}
    assert ids("%") == {cooking.id}  # LIKE wildcards mean themselves
    assert ids("_") == {cooking.id}
    assert ids("nothing like this") == set()
    assert len(store.conversations(search="  ")) == 3


# -- messages --------------------------------------------------------------------------------------------


def test_append_positions_and_models(store: ChatStore) -> None:
    conversation = store.create()
    system = store.append(conversation.id, "system", "Be brief.")
    user = store.append(conversation.id, "user", "Hi")
    reply = store.append(conversation.id, "assistant", "Hello!", model="smollm2-135m")
    assert [m.position for m in (system, user, reply)] == [0, 1, 2]
    assert reply == StoredMessage(
        reply.id, 2, "assistant", "Hello!", ("Hello!",), 0, "smollm2-135m", reply.created_at
    )
    loaded = store.get(conversation.id)
    assert loaded.messages == (system, user, reply)
    assert loaded.message_count == 3
    assert store.get_message(reply.id) == reply
    empty = store.append(conversation.id, "assistant", "")  # a reply about to be streamed
    assert empty.content == "" and empty.position == 3


def test_alternatives_add_select_and_content_follows(store: ChatStore) -> None:
    conversation = store.create()
    store.append(conversation.id, "user", "Tell me a joke")
    reply = store.append(conversation.id, "assistant", "Joke one", model="model-a")
    second = store.add_alternative(reply.id, "Joke two", model="model-b")
    assert (second.content, second.alternatives, second.active, second.model) == (
        "Joke two",
        ("Joke one", "Joke two"),
        1,
        "model-b",
    )
    third = store.add_alternative(reply.id, "Joke three")
    assert third.active == 2 and third.model is None
    back = store.select_alternative(reply.id, 0)
    assert (back.content, back.active, back.model) == ("Joke one", 0, "model-a")
    assert store.get(conversation.id).messages[1].content == "Joke one"
    for bad in (3, -1):
        with pytest.raises(ChatStoreError, match="versions 0 to 2"):
            store.select_alternative(reply.id, bad)
    edited = store.set_content(reply.id, "Joke one, edited")  # edits the shown version only
    assert edited.alternatives == ("Joke one, edited", "Joke two", "Joke three")
    store.select_alternative(reply.id, 2)
    streamed = store.set_content(reply.id, "Joke three, longer")
    assert streamed.alternatives == ("Joke one, edited", "Joke two", "Joke three, longer")
    assert store.get(conversation.id).messages[1] == streamed


def test_every_write_updates_updated_at(store: ChatStore) -> None:
    conversation = store.create()
    message = store.append(conversation.id, "user", "one")
    writes = [
        lambda: store.append(conversation.id, "assistant", "two"),
        lambda: store.add_alternative(message.id, "one bis"),
        lambda: store.select_alternative(message.id, 0),
        lambda: store.set_content(message.id, "one, edited"),
        lambda: store.rename(conversation.id, "renamed"),
        lambda: store.truncate(conversation.id, 1),
    ]
    for write in writes:
        before = store.get(conversation.id).updated_at
        time.sleep(0.002)
        write()
        assert store.get(conversation.id).updated_at > before


def test_truncate_removes_from_a_position(store: ChatStore) -> None:
    conversation = store.create()
    for i in range(5):
        store.append(conversation.id, ("user", "assistant")[i % 2], f"m{i}")
    store.truncate(conversation.id, 3)
    assert [m.content for m in store.get(conversation.id).messages] == ["m0", "m1", "m2"]
    store.truncate(conversation.id, 10)  # nothing there: nothing removed
    assert store.get(conversation.id).message_count == 3
    again = store.append(conversation.id, "assistant", "m3 again")
    assert again.position == 3
    store.truncate(conversation.id, 0)
    assert store.get(conversation.id).messages == ()
    with pytest.raises(ChatStoreError):
        store.truncate(conversation.id, -1)


def test_branch_copies_up_to_a_message_and_is_independent(store: ChatStore) -> None:
    source = store.create(character="Ada", mode="chat-instruct")
    messages = [store.append(source.id, ("user", "assistant")[i % 2], f"m{i}", model="m") for i in range(5)]
    store.add_alternative(messages[1].id, "m1 bis", model="other")
    store.select_alternative(messages[1].id, 0)
    branch = store.branch(source.id, messages[2].id)
    assert branch.id != source.id
    assert (branch.character, branch.mode, branch.message_count) == ("Ada", "chat-instruct", 3)
    assert (branch.parent_id, branch.branched_from_message) == (source.id, messages[2].id)
    assert branch.title == "m0 (branch)"
    copied = store.get(branch.id).messages
    original = store.get(source.id).messages
    assert [(m.role, m.content, m.alternatives, m.active, m.model, m.position) for m in copied] == [
        (m.role, m.content, m.alternatives, m.active, m.model, m.position) for m in original[:3]
    ]
    assert {m.id for m in copied}.isdisjoint(m.id for m in original)

    # independent afterwards, both ways
    store.set_content(copied[2].id, "changed in the branch")
    store.append(branch.id, "assistant", "only in the branch")
    store.add_alternative(original[0].id, "m0 changed in the source")
    assert [m.content for m in store.get(source.id).messages] == [
        "m0 changed in the source",
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert [m.content for m in store.get(branch.id).messages] == [
        "m0",
        "m1",
        "changed in the branch",
        "only in the branch",
    ]
    store.delete(source.id)
    assert store.get(branch.id).parent_id is None
    assert store.get(branch.id).message_count == 4

    other = store.create()
    with pytest.raises(ChatStoreError, match="not part of"):
        store.branch(other.id, copied[0].id)


# -- import / export -------------------------------------------------------------------------------------


def test_export_import_round_trip_keeps_everything(store: ChatStore) -> None:
    conversation = store.create(character="Ada", mode="chat", title="Round trip")
    store.append(conversation.id, "system", 'Context <with> & "quotes" and ünïcödé 🙂')
    store.append(conversation.id, "assistant", "Greeting")
    store.append(conversation.id, "user", "Question\nwith two lines")
    reply = store.append(conversation.id, "assistant", "First", model="model-a")
    store.add_alternative(reply.id, "Second", model="model-b")
    store.add_alternative(reply.id, "Third")
    store.select_alternative(reply.id, 1)

    exported = store.export_json(conversation.id)
    assert exported["format"] == "palabre-chat" and exported["version"] == 2  # 2: images and files (issue 17)
    text = json.dumps(exported)  # plain JSON: survives a file
    imported = store.import_json(json.loads(text))
    assert imported.id != conversation.id
    before, after = store.get(conversation.id), store.get(imported.id)
    assert (after.title, after.character, after.mode, after.created_at) == (
        before.title,
        before.character,
        before.mode,
        before.created_at,
    )
    strip = [
        (m.position, m.role, m.content, m.alternatives, m.active, m.model, m.created_at)
        for m in before.messages
    ]
    assert [
        (m.position, m.role, m.content, m.alternatives, m.active, m.model, m.created_at)
        for m in after.messages
    ] == strip
    again = store.export_json(imported.id)
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in exported.items() if k != "updated_at"
    }

    as_instruct = store.import_json(exported, character="Bob", mode="chat-instruct")
    assert (as_instruct.character, as_instruct.mode) == ("Bob", "chat-instruct")


def test_import_of_a_minimal_palabre_file(store: ChatStore) -> None:
    data = {
        "format": "palabre-chat",
        "version": 1,
        "messages": [
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "alternatives": ["a", "b"]},
        ],
    }
    summary = store.import_json(data)
    conversation = store.get(summary.id)
    assert (summary.title, summary.mode, summary.character) == ("Hi there", "instruct", None)
    assert conversation.messages[1].alternatives == ("a", "b") and conversation.messages[1].active == 0


def test_import_of_a_text_generation_webui_history(store: ChatStore) -> None:
    data = json.loads(TGW_HISTORY.read_text(encoding="utf-8"))
    summary = store.import_json(data, character="Ada")
    conversation = store.get(summary.id)
    assert (summary.character, summary.mode) == ("Ada", "chat")
    assert contents(conversation) == [
        ("assistant", "Hello! I'm Ada. Ask me anything about <math> & logic."),
        ("user", 'Is 2 < 3 & 4 > 1? Tell me "why".'),
        ("assistant", 'Yes: 2 < 3 and 4 > 1, so both hold & the answer is "yes".'),
        ("assistant", "(I'll also add: <b>bold</b> tags are just text here.)"),
        ("user", "Thanks, l'ami!"),
        ("assistant", "De rien — à bientôt."),
    ]
    assert summary.title == 'Is 2 < 3 & 4 > 1? Tell me "why".'
    assert [m.position for m in conversation.messages] == list(range(6))

    instruct = store.import_json({"internal": [["Hi", "Hello"]], "visible": [["Hi", "Hello"]]})
    assert (instruct.character, instruct.mode, instruct.message_count) == (None, "instruct", 2)

    # only the escaped copy: it is unescaped; the old {"data": ...} shape loads too
    visible_only = store.import_json({"visible": data["visible"]})
    assert contents(store.get(visible_only.id)) == contents(conversation)
    legacy = store.import_json({"data": data["internal"], "data_visible": data["visible"]})
    assert contents(store.get(legacy.id)) == contents(conversation)


def test_import_keeps_text_generation_webui_reply_versions(store: ChatStore) -> None:
    data = {
        "internal": [["Name a colour", "Blue"]],
        "visible": [["Name a colour", "Blue"]],
        "metadata": {
            "user_0": {"timestamp": "Jun 24, 2025 14:05"},
            "assistant_0": {
                "timestamp": "Jun 24, 2025 14:06",
                "versions": [
                    {"content": "Red", "visible_content": "Red", "timestamp": "Jun 24, 2025 14:05"},
                    {"content": "Blue", "visible_content": "Blue", "timestamp": "Jun 24, 2025 14:06"},
                ],
                "current_version_index": 1,
            },
        },
    }
    conversation = store.get(store.import_json(data).id)
    reply = conversation.messages[1]
    assert (reply.alternatives, reply.active, reply.content) == (("Red", "Blue"), 1, "Blue")
    assert time.localtime(reply.created_at)[:5] == (2025, 6, 24, 14, 6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([["Hi", "Hello"]], "JSON object"),
        ({}, "not a chat history"),
        ({"name": "Ada", "greeting": "Hi"}, "not a chat history"),
        ({"internal": "Hi"}, "pairs"),
        ({"internal": [["only the user"]]}, "pairs"),
        ({"internal": [["Hi", 3]]}, "pairs"),
        ({"format": "palabre-chat", "version": 3, "messages": []}, "newer Palabre"),
        ({"format": "palabre-chat", "messages": []}, "invalid version"),
        ({"format": "palabre-chat", "version": 1}, '"messages" list'),
        ({"format": "palabre-chat", "version": 1, "messages": ["hi"]}, "not an object"),
        ({"format": "palabre-chat", "version": 1, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"format": "palabre-chat", "version": 1, "messages": [{"role": "user"}]}, "alternatives"),
        (
            {"format": "palabre-chat", "version": 1, "messages": [{"role": "user", "alternatives": []}]},
            "alternatives",
        ),
        (
            {
                "format": "palabre-chat",
                "version": 1,
                "messages": [{"role": "user", "alternatives": [{"text": "x"}]}],
            },
            "text content",
        ),
        (
            {
                "format": "palabre-chat",
                "version": 1,
                "messages": [{"role": "user", "alternatives": ["x"], "active": 1}],
            },
            "shows version 1",
        ),
        ({"format": "palabre-chat", "version": 1, "mode": "roleplay", "messages": []}, "chat mode"),
    ],
)
def test_invalid_imports_are_rejected(store: ChatStore, data: Any, message: str) -> None:
    with pytest.raises(ChatStoreError, match=message):
        store.import_json(data)
    assert store.conversations() == []  # nothing half-imported


# -- the database file -----------------------------------------------------------------------------------


def test_everything_is_there_after_reopening(db: Path) -> None:
    with ChatStore(db) as store:
        first = store.create(character="Ada", mode="chat")
        message = store.append(first.id, "user", "Remember me")
        store.append(first.id, "assistant", "Always", model="m")
        store.add_alternative(message.id, "Remember me, please")
        second = store.create(title="second")
        store.append(second.id, "system", "Be nice")
        store.branch(first.id, message.id)
        expected = [store.get(c.id) for c in store.conversations()]
        listing = store.conversations()
    with ChatStore(db) as reopened:
        assert reopened.conversations() == listing
        assert [reopened.get(c.id) for c in listing] == expected
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert (
                raw.execute("PRAGMA user_version").fetchone()[0] == 5
            )  # 5: grounding and collections (issue 17)


def test_closed_store_and_bad_files(tmp_path: Path, db: Path) -> None:
    store = ChatStore(db)
    store.close()
    store.close()
    with pytest.raises(ChatStoreError, match="closed"):
        store.conversations()
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(ChatStoreError, match="not a usable chat database"):
        ChatStore(not_a_db)
    assert not_a_db.read_bytes().startswith(b"these are my notes")
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(ChatStoreError, match="newer Palabre"):
        ChatStore(newer)


# -- concurrency -----------------------------------------------------------------------------------------


def start_writer(db: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(db), *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_writers_threads_and_processes(store: ChatStore, db: Path) -> None:
    conversations = [store.create(title=f"shared {i}").id for i in range(3)]
    per_writer = 120
    processes = [
        start_writer(
            db, "count", f"p{n}", str(per_writer), ",".join(map(str, conversations)), stdin=subprocess.PIPE
        )
        for n in range(2)
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def thread_writer(tag: str) -> None:
        try:
            go.wait()
            for i in range(per_writer):
                store.append(conversations[i % 3], "user", content_for(tag, i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for thread in threads:
        thread.join(60)
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out.strip() == "done"
    assert errors == []

    tags = [f"t{n}" for n in range(4)] + [f"p{n}" for n in range(2)]
    seen: Counter[str] = Counter()
    for index, conversation_id in enumerate(conversations):
        messages = store.get(conversation_id).messages
        assert [m.position for m in messages] == list(range(len(messages)))
        seen.update(m.content for m in messages)
        for tag in tags:  # each writer's messages keep their order
            mine = [m.content for m in messages if m.content.startswith(f"[{tag}:")]
            assert mine == [content_for(tag, i) for i in range(per_writer) if i % 3 == index]
    expected = {content_for(tag, i) for tag in tags for i in range(per_writer)}
    assert set(seen) == expected
    assert all(count == 1 for count in seen.values())


# -- crash safety ----------------------------------------------------------------------------------------


def read_lines(stream: IO[str], count: int) -> list[str]:
    lines = []
    while len(lines) < count:
        line = stream.readline()
        if not line:
            break
        lines.append(line.split())
    return lines


def kill(process: subprocess.Popen[str], delay: float) -> list[list[str]]:
    """SIGKILL after ``delay`` seconds; the lines the writer had printed by then (all committed)."""
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()  # the same buffered reader as before: no line lost; EOF once it died
    err = process.stderr.read()
    assert process.wait(timeout=30) == -signal.SIGKILL, err
    return [line.split() for line in out.splitlines() if line.strip()]


def check_integrity(db: Path) -> None:
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []


def test_kill_9_never_loses_a_committed_message(db: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    committed: dict[int, tuple[str, int]] = {}  # message id -> (writer tag, i)
    conversations: dict[str, int] = {}
    delays = [0.002 * k for k in range(24)]
    rng.shuffle(delays)
    started = time.monotonic()
    for run, delay in enumerate(delays):
        tag = f"w{run}"
        process = start_writer(db, "append", tag)
        assert process.stdout is not None
        lines = read_lines(process.stdout, rng.randint(1, 6))
        lines += kill(process, delay + rng.random() * 0.01)
        for line in lines:
            if line[0] == "conv":
                conversations[tag] = int(line[1])
            elif line[0] == "msg":
                committed[int(line[1])] = (tag, int(line[2]))
    assert time.monotonic() - started < 30

    check_integrity(db)
    with ChatStore(db) as store:
        for message_id, (tag, i) in committed.items():
            message = store.get_message(message_id)
            assert message.content == content_for(tag, i), f"seed {seed}"
            assert message.position == i
        for tag, conversation_id in conversations.items():
            messages = store.get(conversation_id).messages
            assert [m.content for m in messages] == [content_for(tag, i) for i in range(len(messages))]
            reported = sum(1 for t, _ in committed.values() if t == tag)
            assert len(messages) in (reported, reported + 1), (
                f"seed {seed}"
            )  # + one committed, not yet printed
        store.append(next(iter(conversations.values())), "user", "the database still takes writes")
    assert len(committed) >= len(delays)


def test_kill_9_while_saving_a_streamed_reply(db: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for run in range(6):
        tag = f"s{run}"
        process = start_writer(db, "stream", tag)
        assert process.stdout is not None
        lines = read_lines(process.stdout, 5 + rng.randint(1, 40))  # conv, 3 msg, stream, some saves
        lines += kill(process, rng.random() * 0.03)
        conversation_id = next(int(line[1]) for line in lines if line[0] == "conv")
        reply_id = next(int(line[1]) for line in lines if line[0] == "stream")
        earlier = {int(line[1]): int(line[2]) for line in lines if line[0] == "msg"}
        last_saved = max(int(line[1]) for line in lines if line[0] == "saved")

        check_integrity(db)
        with ChatStore(db) as store:
            messages = store.get(conversation_id).messages
            assert len(earlier) == 3
            for message_id, i in earlier.items():
                assert store.get_message(message_id).content == content_for(tag, i), f"seed {seed}"
            reply = messages[-1]
            assert reply.id == reply_id and reply.model == "streamer" and len(messages) == 4
            assert reply.content in (stream_text(last_saved), stream_text(last_saved + 1)), f"seed {seed}"


def test_several_processes_create_the_database_at_once(db: Path) -> None:
    processes = [start_writer(db, "append", f"fresh{n}") for n in range(4)]
    reported: dict[str, list[list[str]]] = {}
    for n, process in enumerate(processes):
        assert process.stdout is not None
        reported[f"fresh{n}"] = read_lines(process.stdout, 4)
    for n, process in enumerate(processes):
        reported[f"fresh{n}"] += kill(process, 0)
    check_integrity(db)
    with ChatStore(db) as store:
        assert len(store.conversations()) == 4
        for tag, lines in reported.items():
            for line in lines:
                if line[0] == "msg":
                    assert store.get_message(int(line[1])).content == content_for(tag, int(line[2]))


def test_a_database_locked_too_long_is_a_readable_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webui.core.chats.store as chats

    monkeypatch.setattr(chats, "BUSY_TIMEOUT_S", 0.2)
    with ChatStore(db) as store:
        conversation = store.create()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
        try:
            with pytest.raises(ChatStoreError, match="locked"):
                store.append(conversation.id, "user", "waits, then gives up")
            assert store.get(conversation.id).messages == ()  # reads still work meanwhile (WAL)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.append(conversation.id, "user", "and works again")
        assert store.get(conversation.id).message_count == 1
