"""The Chat tab's handlers over stored conversations: a real ChatStore in tmp_path and the scripted loader.

Every test checks what the store holds, not only what the page shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.fakes import ScriptedLoader
from webui.app import build_service
from webui.core.params import GenerationParams, field_specs
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.settings import SettingsFile
from webui.ui.chat_events import ChatHandlers
from webui.ui.conversations_panel import ConversationHandlers
from webui.ui.convert import (
    NO_PERSONALITY,
    alternative_label,
    conversation_label,
    export_file_name,
    last_exchange,
    message_at,
    widget_values,
)
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import CHAT, SessionJobs

DATA = Path(__file__).parent / "data"


class Edit:
    """What gr.EditData carries."""

    def __init__(self, index: Any, value: Any) -> None:
        self.index, self.value = index, value


class Select:
    """What gr.SelectData carries."""

    def __init__(self, index: Any) -> None:
        self.index = index


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    config = make_config(tmp_path / "user_data")
    (config.models_dir / "a.gguf").write_text("Hel|lo|!")
    service = build_service(config, LoaderRegistry({"scripted": ScriptedLoader}))
    service.load_model("a.gguf", "scripted")
    yield service
    service.close()


@pytest.fixture
def chat(service: Service) -> ChatHandlers:
    return ChatHandlers(service, ParametersTab(service))


@pytest.fixture
def panel(chat: ChatHandlers, tmp_path: Path) -> ConversationHandlers:
    return ConversationHandlers(chat, SettingsFile(tmp_path / "user_data" / "settings.yaml"))


def values(personality: str = NO_PERSONALITY, mode: str = "instruct") -> list[Any]:
    """The widget values: personality, chat settings (ChatML template), then the default parameters."""
    params = widget_values(field_specs(), GenerationParams())
    return [personality, mode, "", "Assistant", "", "", "", "ChatML", *params]


def last(updates: Iterator[tuple[Any, ...]]) -> tuple[Any, ...]:
    collected = list(updates)
    return collected[-1]


def texts(chat: ChatHandlers, conversation_id: int) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in chat.store.get(conversation_id).messages]


def set_reply(service: Service, *pieces: str) -> None:
    model = service.engine.require_model().model
    model.pieces = list(pieces)  # type: ignore[attr-defined]


def test_send_saves_both_messages_at_once(chat: ChatHandlers) -> None:
    jobs = SessionJobs()
    updates = chat.send("Hi there", "", None, jobs, *values())
    first = next(updates)
    conversation_id = first[0]
    assert texts(chat, conversation_id) == [("user", "Hi there")]  # saved before the reply is read
    conversation_id, history, shown, _, status = last(updates)
    assert texts(chat, conversation_id) == [("user", "Hi there"), ("assistant", "Hello!")]
    assert (
        history
        == shown
        == [
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"},
        ]
    )
    assert first[3] == "" and "tokens/s" in status
    # The next message goes into the same conversation.
    again = last(chat.send("More", "", conversation_id, jobs, *values()))
    assert again[0] == conversation_id and len(texts(chat, conversation_id)) == 4
    assert chat.store.get(conversation_id).title == "Hi there"


def test_regenerate_keeps_the_old_reply_and_the_arrows_flip(
    chat: ChatHandlers, panel: ConversationHandlers, service: Service
) -> None:
    jobs = SessionJobs()
    conversation_id = last(chat.send("Hi", "", None, jobs, *values()))[0]
    assert panel.decorate(conversation_id, NO_PERSONALITY, False, "")[1]["visible"] is False
    set_reply(service, "Bon", "jour")
    _, history, _, _, _ = last(chat.regenerate("", conversation_id, jobs, *values()))
    assert history[-1]["content"] == "Bonjour"
    reply = chat.store.get(conversation_id).messages[-1]
    assert reply.alternatives == ("Hello!", "Bonjour") and reply.active == 1
    _, label, previous, following, remembered = panel.decorate(conversation_id, NO_PERSONALITY, False, "")
    assert "2/2" in label["value"] and previous["visible"] and following["visible"]
    assert remembered == conversation_id

    _, history, shown, _, status = chat.previous_alternative(conversation_id, jobs)
    assert history[-1]["content"] == shown[-1]["content"] == "Hello!" and "1 of 2" in status
    assert alternative_label(chat.store.get(conversation_id)) == "1/2"
    _, history, _, _, _ = chat.next_alternative(conversation_id, jobs)
    assert history[-1]["content"] == "Bonjour"
    _, history, _, _, _ = chat.next_alternative(conversation_id, jobs)  # wraps around
    assert history[-1]["content"] == "Hello!"
    assert chat.store.get(conversation_id).messages[-1].content == "Hello!"


def test_edit_maps_the_chatbot_index_to_the_stored_message(chat: ChatHandlers) -> None:
    conversation = chat.store.create()
    chat.store.append(conversation.id, "system", "hidden system note")  # not shown in the Chatbot
    for role, text in (("user", "a"), ("assistant", "b"), ("user", "c")):
        chat.store.append(conversation.id, role, text)
    stored = chat.store.get(conversation.id)
    assert message_at(stored, 1).content == "b" and message_at(stored, (2, None)).content == "c"

    _, history, shown, _, status = chat.edit(
        conversation.id, SessionJobs(), Edit(1, [{"type": "text", "text": "B!"}])
    )
    assert texts(chat, conversation.id)[2] == ("assistant", "B!")
    assert shown == [m for m in history if m["role"] != "system"] and "edited" in status
    with pytest.warns(UserWarning, match="no longer"):
        chat.edit(conversation.id, SessionJobs(), Edit(3, "x"))


def test_remove_last_truncates_the_store(chat: ChatHandlers) -> None:
    jobs = SessionJobs()
    conversation_id = last(chat.send("One", "", None, jobs, *values()))[0]
    last(chat.send("Two", "", conversation_id, jobs, *values()))
    stored = chat.store.get(conversation_id)
    assert last_exchange(stored) == (stored.messages[2].position, "Two")
    _, history, _, box, _ = chat.remove_last(conversation_id, jobs)
    assert box == "Two" and texts(chat, conversation_id) == [("user", "One"), ("assistant", "Hello!")]
    assert len(history) == 2
    chat.remove_last(conversation_id, jobs)
    assert texts(chat, conversation_id) == []
    _, _, _, _, status = chat.remove_last(conversation_id, jobs)
    assert status == "Nothing to remove."


def test_switching_conversations_shows_each_history(chat: ChatHandlers, panel: ConversationHandlers) -> None:
    jobs = SessionJobs()
    first = last(chat.send("First chat", "", None, jobs, *values()))[0]
    assert panel.new_chat(NO_PERSONALITY, "instruct", "", jobs)[:3] == (None, [], [])
    second = last(chat.send("Second chat", "", None, jobs, *values()))[0]
    assert first != second

    listing = panel.listing(second, NO_PERSONALITY, False, "")
    assert [value for _, value in listing["choices"]] == [second, first]  # newest first
    assert listing["value"] == second and listing["choices"][0][0].startswith("Second chat · ")
    opened = panel.open(first, jobs)
    assert opened[0] == first and opened[1][0]["content"] == "First chat"
    assert opened[5]["value"] == NO_PERSONALITY
    opened = panel.open(second, jobs)
    assert opened[1][0]["content"] == "Second chat"
    # Search looks in titles and messages.
    assert [v for _, v in panel.listing(None, NO_PERSONALITY, False, "first")["choices"]] == [first]
    # Page load: this browser's conversation, else the most recent one.
    assert panel.restore(first)[0] == first
    assert panel.restore(None)[0] == second
    assert panel.restore(12345)[0] == second


def test_a_personality_starts_with_its_greeting_and_shapes_the_prompt(
    chat: ChatHandlers, panel: ConversationHandlers, service: Service
) -> None:
    jobs = SessionJobs()
    conversation_id, history, _, _, _ = panel.choose_personality("Captain Barnacle", "chat", "", jobs)
    assert history[0]["role"] == "assistant" and "Ahoy, Matey!" in history[0]["content"]
    assert panel.settings is not None and panel.settings.load().character == "Captain Barnacle"
    stored = chat.store.get(conversation_id)
    assert stored.character == "Captain Barnacle" and stored.mode == "chat"

    last(chat.send("Who are you?", "", conversation_id, jobs, *values("Captain Barnacle", "chat")))
    prompt = service.engine.require_model().model.prompts[-1]  # type: ignore[attr-defined]
    assert "weather-beaten pirate captain" in prompt and "Matey: Who are you?" in prompt
    assert prompt.endswith("Captain Barnacle:")
    # The list shows this personality's conversations; "(none)" only plain chats; all shows both.
    plain = last(chat.send("Plain", "", None, jobs, *values()))[0]
    assert [v for _, v in panel.listing(None, "Captain Barnacle", False, "")["choices"]] == [conversation_id]
    assert [v for _, v in panel.listing(None, NO_PERSONALITY, False, "")["choices"]] == [plain]
    everything = panel.listing(None, NO_PERSONALITY, True, "")["choices"]
    assert {v for _, v in everything} == {plain, conversation_id}
    assert any("(Captain Barnacle)" in label for label, _ in everything)
    # Opening a conversation sets the dropdown to its personality; a reload restores it too.
    assert panel.open(conversation_id, jobs)[5]["value"] == "Captain Barnacle"
    assert panel.restore(conversation_id)[5]["value"] == "Captain Barnacle"
    assert "Captain Barnacle" in panel.refresh_characters()["choices"]
    assert panel.refresh_characters("Gone")["value"] == NO_PERSONALITY


def test_delete_needs_confirmation(chat: ChatHandlers, panel: ConversationHandlers) -> None:
    jobs = SessionJobs()
    keep = last(chat.send("Keep me", "", None, jobs, *values()))[0]
    doomed = last(chat.send("Delete me", "", None, jobs, *values()))[0]
    confirm, cancel, status = panel.ask_delete(doomed)
    assert confirm["visible"] and cancel["visible"] and "Delete me" in status
    assert chat.store.get(doomed)  # the first click deletes nothing
    assert panel.cancel_delete()[0]["visible"] is False
    shown_id, history, *_, hide_confirm, _ = panel.delete(doomed, NO_PERSONALITY, jobs)
    assert shown_id == keep and history[0]["content"] == "Keep me" and hide_confirm["visible"] is False
    assert [s.id for s in chat.store.conversations()] == [keep]


def test_rename_and_branch(chat: ChatHandlers, panel: ConversationHandlers) -> None:
    jobs = SessionJobs()
    source = last(chat.send("Q1", "", None, jobs, *values()))[0]
    last(chat.send("Q2", "", source, jobs, *values()))
    assert panel.rename(source, "Geography") == ("Conversation renamed.", "")
    assert chat.store.get(source).title == "Geography"
    with pytest.warns(UserWarning, match="empty"):
        panel.rename(source, "  ")
    assert panel.branch_number(source, Select(1)) == 2
    branch_id, history, _, _, status = panel.branch(source, 2, jobs)
    assert branch_id != source and [m["content"] for m in history] == ["Q1", "Hello!"]
    assert "#2" in status and len(texts(chat, source)) == 4
    with pytest.warns(UserWarning, match="no message #9: this conversation shows 4"):
        panel.branch(source, 9, jobs)


def test_export_then_import_and_text_generation_webui_history(
    chat: ChatHandlers, panel: ConversationHandlers, service: Service, tmp_path: Path
) -> None:
    jobs = SessionJobs()
    source = last(chat.send("Export me", "", None, jobs, *values()))[0]
    set_reply(service, "Again")
    last(chat.regenerate("", source, jobs, *values()))
    file, status = panel.export(source)
    path = Path(file["value"])
    assert file["visible"] and path.name == "Export me.json" and "Exported" in status
    assert json.loads(path.read_text())["format"] == "palabre-chat"

    imported = panel.import_file(str(path), NO_PERSONALITY, jobs)
    assert imported[0] != source and "Imported" in imported[4]
    assert chat.store.get(imported[0]).messages[-1].alternatives == ("Hello!", "Again")

    tgw = panel.import_file(str(DATA / "tgw_history.json"), NO_PERSONALITY, jobs)
    messages = chat.store.get(tgw[0]).messages
    assert messages[0].content.startswith("Hello! I'm Ada") and messages[-1].content == "De rien — à bientôt."
    assert tgw[1][1]["content"] == 'Is 2 < 3 & 4 > 1? Tell me "why".'

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.warns(UserWarning, match="not a JSON chat file"):
        result = panel.import_file(str(broken), NO_PERSONALITY, jobs)
    assert "not a JSON chat file" in result[4]
    broken.write_text('{"hello": 1}')
    with pytest.warns(UserWarning, match="not a chat history"):
        result = panel.import_file(str(broken), NO_PERSONALITY, jobs)
    assert result[0] is not None and "Import failed" in result[4]  # the chat shown is left alone
    assert export_file_name('a/b:"c"') == "a_b__c.json"


def test_errors_are_readable_and_leave_the_store_alone(chat: ChatHandlers, service: Service) -> None:
    jobs = SessionJobs()
    with pytest.warns(UserWarning, match="Nothing to regenerate"):
        last(chat.regenerate("", None, jobs, *values()))
    with pytest.warns(UserWarning, match="No personality named"):
        last(chat.send("Hi", "", None, jobs, *values("Nobody")))
    assert chat.store.conversations() == []
    conversation_id = last(chat.send("Hi", "", None, jobs, *values()))[0]
    service.unload_model()
    with pytest.warns(UserWarning, match="No model is loaded"):
        result = last(chat.regenerate("", conversation_id, jobs, *values()))
    assert "No model" in result[4]
    with pytest.warns(UserWarning, match="No model is loaded"):
        last(chat.send("Next", "", conversation_id, jobs, *values()))
    assert texts(chat, conversation_id) == [("user", "Hi"), ("assistant", "Hello!")]
    jobs.start(CHAT, FakeJob())
    with pytest.warns(UserWarning, match="Stop first"):
        last(chat.send("Busy", "", conversation_id, jobs, *values()))


class FakeJob:
    def cancel(self) -> None:
        pass


def test_conversation_label_shows_the_time_today_else_the_date() -> None:
    from webui.core.chats.records import ConversationSummary

    summary = ConversationSummary(1, "Title", "Coder", "chat", 0.0, 1_700_000_000.0, 2)
    assert conversation_label(summary, 1_700_000_100.0).startswith("Title · ")
    assert ":" in conversation_label(summary, 1_700_000_100.0).split(" · ")[1]
    assert re.fullmatch(r"Title · \d{4}-\d{2}-\d{2}", conversation_label(summary, 1_800_000_000.0))
    assert "(Coder)" in conversation_label(summary, show_character=True)
