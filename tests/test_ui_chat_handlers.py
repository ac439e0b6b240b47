"""The Chat tab's handlers: chat settings and history, streaming, per-session jobs, then the handlers over the
real Service and default model (slow) and over a scripted loader (fast, exact text)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.ui import HISTORY, chat_values, last_prompt
from webui.app import build_service
from webui.core.loader import Chunk
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.ui.convert import (
    DETECTED_TEMPLATE,
    EXAMPLE_CONVERSATION,
    InputError,
    apply_edit,
    chat_settings,
    chatbot_view,
    content_text,
    context_meter_text,
    drop_trailing_replies,
    normalize_history,
    open_reply,
    preview_messages,
    remove_last_exchange,
    throttled_text,
    to_chat_messages,
    token_count_text,
)
from webui.ui.state import CHAT, SessionJobs

# The scripted_service fixture comes from tests/support/ui.py (a plugin named in tests/conftest.py).


# -- chat settings and history ---------------------------------------------------------------------------------


def test_chat_settings_from_widgets() -> None:
    settings = chat_settings("chat", "sys", " Ada ", "", "ctx", "", DETECTED_TEMPLATE)
    assert settings.mode == "chat" and settings.template is None
    assert settings.character_name == "Ada" and settings.user_name == "You"
    assert settings.chat_instruct_command  # empty box -> the core default
    assert chat_settings("instruct", "", "", "", "", "", "ChatML").template == "ChatML"
    with pytest.raises(InputError, match="Unknown chat mode"):
        chat_settings("story", "", "", "", "", "", None)


def test_content_parts_are_normalized_to_text() -> None:
    assert (
        content_text([{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]) == "Hello there"
    )
    assert content_text({"text": "x"}) == "x"
    assert content_text(None) == ""
    history = normalize_history(
        [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ChatMessage(role="assistant", content="Hello"),
            {"role": "tool", "content": "ignored"},
        ]
    )
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert to_chat_messages(history) == [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello")]
    assert chatbot_view(history) == history and chatbot_view(history) is not history


def test_regenerate_and_remove_last_trim_the_history() -> None:
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert drop_trailing_replies(history) == history[:3]
    assert remove_last_exchange(history) == (history[:2], "c")
    assert remove_last_exchange(history[:3]) == (history[:2], "c")
    assert remove_last_exchange([]) == ([], "")


# -- streaming ------------------------------------------------------------------------------------------------


def test_throttled_text_batches_updates_and_always_ends_with_the_final_text() -> None:
    times = iter([0.0, 0.01, 0.02, 0.06, 0.07, 0.08])
    chunks = [Chunk(text=t) for t in ["a", "b", "", "c", "d", "e", "f"]]
    updates = list(throttled_text(chunks, interval=0.05, clock=lambda: next(times)))
    assert updates == ["a", "abcd", "abcdef"]  # "c" arrives at 0.02 (held), "d" at 0.06 (sent), rest held


def test_throttled_text_of_an_empty_stream_yields_nothing() -> None:
    assert list(throttled_text([Chunk(text="", finish_reason="stop")])) == []


# -- per-session jobs -----------------------------------------------------------------------------------------


class FakeJob:
    """A job that only records whether it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_session_jobs_cancel_only_their_own_job() -> None:
    template = SessionJobs()
    mine, theirs = copy.deepcopy(template), copy.deepcopy(template)  # what gr.State does per session
    assert mine is not theirs
    job_a, job_b = FakeJob(), FakeJob()
    assert mine.start(CHAT, job_a) and theirs.start(CHAT, job_b)
    assert not mine.start(CHAT, FakeJob())  # one reply at a time per session
    assert mine.cancel(CHAT)
    assert job_a.cancelled and not job_b.cancelled
    mine.finish(CHAT, job_a)
    assert not mine.busy(CHAT) and theirs.busy(CHAT)
    assert not mine.cancel(CHAT)
    assert not copy.deepcopy(theirs).busy(CHAT)  # a copy starts empty


# -- handlers over the real Service and model -----------------------------------------------------------------


@pytest.fixture
def chat_handlers(smol_service: Any) -> Any:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    return ChatHandlers(smol_service, ParametersTab(smol_service))


def final(updates: Iterator[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """All the updates of a handler, and its last one."""
    collected = list(updates)
    return collected, collected[-1]


@pytest.mark.slow
def test_send_streams_a_reply_and_updates_the_status(chat_handlers: Any) -> None:
    jobs = SessionJobs()
    deterministic = chat_values(temperature=0.0, top_k=1)
    updates, last = final(
        chat_handlers.send("What is the capital of France?", "", None, jobs, *deterministic)
    )
    conversation_id, history, shown, _box, status = last
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "Paris" in history[-1]["content"]
    assert shown == history
    assert updates[0][3] == ""  # the message box is cleared as soon as the message is sent
    assert "tokens/s" in status
    assert not jobs.busy(CHAT)
    stored = chat_handlers.store.get(conversation_id)
    assert [m.content for m in stored.messages] == [m["content"] for m in history]

    _, (_, history2, _, _, _) = final(chat_handlers.regenerate("", conversation_id, jobs, *deterministic))
    assert history2 == history  # deterministic settings: the same reply again
    assert len(chat_handlers.store.get(conversation_id).messages[-1].alternatives) == 2

    _, trimmed, _, box, _ = chat_handlers.remove_last(conversation_id, jobs)
    assert trimmed == [] and box == "What is the capital of France?"


@pytest.mark.slow
def test_regenerate_opens_the_new_version_with_start_reply_with_as_send_does(chat_handlers: Any) -> None:
    jobs = SessionJobs()
    deterministic = chat_values(temperature=0.0, top_k=1, max_new_tokens=12)
    _, (conversation_id, history, _, _, _) = final(
        chat_handlers.send("Name a fruit.", "", None, jobs, *deterministic)
    )
    first_reply = history[-1]["content"]
    opening = "My favourite fruit is"
    updates, (_, again, _, _, status) = final(
        chat_handlers.regenerate(opening, conversation_id, jobs, *deterministic)
    )
    assert "tokens/s" in status
    assert again[-1]["content"].startswith(opening + " ") and len(again[-1]["content"]) > len(opening) + 1
    assert all(u[1][-1]["content"].startswith(opening) for u in updates[1:-1] if u[1])  # also while streaming
    reply = chat_handlers.store.get(conversation_id).messages[-1]
    assert reply.alternatives == (first_reply, again[-1]["content"]) and reply.active == 1


@pytest.mark.slow
def test_invalid_parameters_keep_the_history_and_say_why(chat_handlers: Any) -> None:
    jobs = SessionJobs()
    _, first = final(chat_handlers.send("Hi", "", None, jobs, *chat_values(max_new_tokens=4)))
    before = chat_handlers.store.get(first[0])
    with pytest.warns(UserWarning, match="temperature"):
        _, last = final(chat_handlers.send("Next", "", first[0], jobs, *chat_values(temperature=99.0)))
    assert "temperature" in last[4]
    assert chat_handlers.store.get(first[0]).messages == before.messages  # nothing saved


@pytest.mark.slow
def test_no_model_loaded_is_a_readable_error(tmp_path: Path) -> None:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        handlers = ChatHandlers(service, ParametersTab(service))
        with pytest.warns(UserWarning, match="No model is loaded"):
            _, last = final(handlers.send("Hello", "", None, SessionJobs(), *chat_values()))
        assert "No model is loaded" in last[4]
        assert service.chats is not None and service.chats.conversations() == []  # no empty chat left
    finally:
        service.close()


@pytest.mark.slow
def test_stop_cancels_only_this_sessions_reply(chat_handlers: Any) -> None:
    mine, theirs = SessionJobs(), SessionJobs()
    long_reply = chat_values(max_new_tokens=300, ban_eos_token=True, temperature=0.0)
    results: dict[str, Any] = {}

    updates = chat_handlers.send("Write a long story about a dog.", "", None, mine, *long_reply)
    for update in updates:
        history = update[1]
        if isinstance(history, list) and len(history) == 2 and history[-1]["content"]:
            break  # my reply is being generated

    def run() -> None:
        _, results["theirs"] = final(
            chat_handlers.send("Write a story about a cat.", "", None, theirs, *long_reply)
        )

    other = threading.Thread(target=run)
    other.start()
    deadline = time.monotonic() + 30
    while not theirs.busy(CHAT) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert theirs.busy(CHAT)  # their reply is queued behind mine
    assert mine.cancel(CHAT)
    _, (_, history, _, _, _) = final(updates)
    other.join(timeout=300)
    assert not other.is_alive()
    mine_reply, theirs_reply = history[-1]["content"], results["theirs"][1][-1]["content"]
    their_stats = chat_handlers.service.engine.last_stats
    assert their_stats.new_tokens == 300  # Stop in my session did not touch theirs
    assert len(theirs_reply) > len(mine_reply) > 0


# -- chat handlers over a scripted loader (fast, exact text) ----------------------------------------------


def test_chat_continue_and_impersonate_stream_the_scripted_text(scripted_service: Any) -> None:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    handlers = ChatHandlers(scripted_service, ParametersTab(scripted_service))
    jobs = SessionJobs()
    _, (conversation, history, _, _, _) = final(handlers.send("Hi", "", None, jobs, *chat_values()))
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    _, (_, history, _, _, _) = final(handlers.continue_reply("", conversation, jobs, *chat_values()))
    assert history[-1] == {"role": "assistant", "content": "Hello!Hello!"}
    _, (_, _, _, box, _) = final(handlers.impersonate(conversation, jobs, *chat_values()))
    assert box == "Hello!"
    assert [m.content for m in handlers.store.get(conversation).messages] == ["Hi", "Hello!Hello!"]


def test_prompt_and_template_errors_are_readable(scripted_service: Any) -> None:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    handlers = ChatHandlers(scripted_service, ParametersTab(scripted_service))
    values = chat_values()
    values[7] = "No such template"
    with pytest.warns(UserWarning, match="No such template"):
        _, last = final(handlers.send("Hi", "", None, SessionJobs(), *values))
    assert last[0] is not None or "No such template" in last[4]
    assert "No such template" in last[4]


def test_new_chat_during_a_reply_stops_it_and_drops_its_updates(scripted_service: Any) -> None:
    from webui.ui.chat_tab import ChatHandlers, ConversationHandlers
    from webui.ui.parameters_tab import ParametersTab

    handlers = ChatHandlers(scripted_service, ParametersTab(scripted_service))
    model = scripted_service.engine.state.model
    model.gate = threading.Event()  # the model waits before each token
    jobs = SessionJobs()
    updates = handlers.send("Hi", "", None, jobs, *chat_values())
    first = next(updates)
    assert first[1] == [{"role": "user", "content": "Hi"}] and first[4] == "Generating…"
    assert jobs.busy(CHAT)
    assert ConversationHandlers(handlers).new_chat("(none)", "instruct", "", jobs)[:3] == (None, [], [])
    model.gate.set()
    rest = list(updates)
    assert all(not isinstance(update[1], list) for update in rest)  # the new chat is not overwritten
    assert not jobs.busy(CHAT)
    stats = scripted_service.engine.last_stats
    assert stats is None or stats.new_tokens == 0  # cancelled before its first token


# -- new chat helpers (pure) ------------------------------------------------------------------------------------


def test_open_reply_appends_the_opening_as_an_assistant_message() -> None:
    assert open_reply(HISTORY, "") == (HISTORY, False)
    assert open_reply(HISTORY, "   ") == (HISTORY, False)
    opened, continuing = open_reply(HISTORY, "Sure, ")
    assert continuing and opened == [*HISTORY, {"role": "assistant", "content": "Sure, "}]
    assert len(HISTORY) == 3  # the input is not changed


def test_apply_edit_replaces_the_shown_message() -> None:
    edited = apply_edit(HISTORY, 1, [{"type": "text", "text": "B!"}])
    assert edited[1] == {"role": "assistant", "content": "B!"} and HISTORY[1]["content"] == "b"
    assert apply_edit(HISTORY, (2, 0), "C")[2]["content"] == "C"
    with_system = [{"role": "system", "content": "s"}, *HISTORY]  # not shown: indexes skip it
    assert apply_edit(with_system, 0, "A")[1]["content"] == "A"
    for bad in (3, -1, None, True, "1"):
        with pytest.raises(InputError, match="no longer"):
            apply_edit(HISTORY, bad, "x")


def test_preview_messages_use_the_chat_or_an_example() -> None:
    messages, example = preview_messages(HISTORY, "Be brief.")
    assert not example and messages == [{"role": "system", "content": "Be brief."}, *HISTORY]
    messages, example = preview_messages([], "")
    assert example and messages == list(EXAMPLE_CONVERSATION)


def test_context_and_token_count_texts() -> None:
    text = context_meter_text(512, 2048, 256)
    assert text.startswith("Context: **512 / 2,048** tokens (25%)") and "256 kept for the reply" in text
    assert "the 3 oldest messages no longer fit" in context_meter_text(900, 1024, 100, dropped=3)
    assert token_count_text("Prompt", 1) == "Prompt: 1 token"
    assert token_count_text("Prompt", 1234) == "Prompt: 1,234 tokens"
    assert token_count_text("Text", None) == "Text: no model loaded"


# -- new chat handlers over the scripted loader ---------------------------------------------------------------


class Edit:
    """What gr.EditData carries."""

    def __init__(self, index: Any, value: Any) -> None:
        self.index, self.value = index, value


@pytest.fixture
def scripted_chat(scripted_service: Any) -> Any:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    return ChatHandlers(scripted_service, ParametersTab(scripted_service))


def chatml_values(**param_changes: Any) -> list[Any]:
    """chat_values with the ChatML template chosen (the scripted model would fall back to Alpaca)."""
    values = chat_values(**param_changes)
    values[7] = "ChatML"
    return values


def test_start_reply_with_opens_the_reply(scripted_chat: Any) -> None:
    jobs = SessionJobs()
    updates, (conversation, history, shown, _, _) = final(
        scripted_chat.send("Hi", "Sure, ", None, jobs, *chatml_values())
    )
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure, Hello!"}]
    assert shown == history
    assert updates[0][1][-1] == {"role": "assistant", "content": "Sure, "}  # the opening shows at once
    assert updates[0][3] == ""  # and the message box is cleared
    assert last_prompt(scripted_chat.service).endswith(
        "<|im_start|>assistant\nSure, "
    )  # continued, not closed

    _, (_, history, _, _, _) = final(scripted_chat.regenerate("", conversation, jobs, *chatml_values()))
    assert history[-1]["content"] == "Hello!"
    # Continue after a user message writes a new (opened) reply; after a reply it extends it.
    scripted_chat.remove_last(conversation, jobs)
    scripted_chat.store.append(conversation, "user", "Hi")  # e.g. its reply came out empty
    _, (_, history, _, _, _) = final(
        scripted_chat.continue_reply("Ok:", conversation, jobs, *chatml_values())
    )
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ok:Hello!"}]
    _, (_, history, _, _, _) = final(
        scripted_chat.continue_reply("ignored", conversation, jobs, *chatml_values())
    )
    assert history[-1]["content"] == "Ok:Hello!Hello!"


def test_start_reply_with_in_chat_mode(scripted_chat: Any) -> None:
    values = chatml_values()
    values[1] = "chat"
    _, (_, history, _, _, _) = final(scripted_chat.send("Hi", "*waves*", None, SessionJobs(), *values))
    assert history[-1]["content"] == "*waves*Hello!"
    assert last_prompt(scripted_chat.service).endswith("You: Hi\nAssistant: *waves*")


def test_editing_a_message_changes_the_history(scripted_chat: Any) -> None:
    jobs = SessionJobs()
    conversation = stored(scripted_chat, HISTORY)
    _, history, shown, _, status = scripted_chat.edit(conversation, jobs, Edit(1, "edited"))
    assert history[1]["content"] == "edited" and shown == history and "edited" in status
    assert scripted_chat.store.get(conversation).messages[1].content == "edited"
    with pytest.warns(UserWarning, match="no longer"):
        _, history, _, _, status = scripted_chat.edit(conversation, jobs, Edit(7, "x"))
    assert history[1]["content"] == "edited" and status.startswith("⚠️")
    jobs.start(CHAT, FakeJob())
    with pytest.warns(UserWarning, match="Stop first"):
        scripted_chat.edit(conversation, jobs, Edit(0, "x"))
    assert scripted_chat.store.get(conversation).messages[0].content == "a"  # refused while writing
    # The next reply sees the edited text.
    scripted_chat.edit(conversation, SessionJobs(), Edit(0, "EDITED"))
    list(scripted_chat.continue_reply("", conversation, SessionJobs(), *chatml_values()))
    assert "EDITED" in last_prompt(scripted_chat.service)


def stored(chat: Any, history: list[dict[str, str]], character: str | None = None) -> int:
    """A conversation in the store holding ``history``; its id."""
    conversation = chat.store.create(character=character)
    for message in history:
        chat.store.append(conversation.id, message["role"], message["content"])
    return int(conversation.id)


def test_context_meter_counts_the_next_prompt(scripted_chat: Any, tmp_path: Path) -> None:
    service = scripted_chat.service
    meter = scripted_chat.meter(HISTORY, *chatml_values())
    expected = service.build_chat_prompt(
        to_chat_messages(HISTORY), chat_settings(*chatml_values()[1:8]), GenerationParams()
    )
    assert meter.startswith(f"Context: **{expected.prompt_tokens} / 4,096** tokens")
    assert "512 kept for the reply" in meter
    small = scripted_chat.meter(HISTORY, *chatml_values(truncation_length=10, max_new_tokens=10))
    assert (
        "/ 10** tokens" in small
        and "5 kept for the reply" in small
        and "oldest messages no longer fit" in small
    )
    assert "max_new_tokens" in scripted_chat.meter(HISTORY, *chatml_values(max_new_tokens=0))
    bad_template = chatml_values()
    bad_template[7] = "No such template"
    assert "No such template" in scripted_chat.meter(HISTORY, *bad_template)
    service.unload_model()
    assert scripted_chat.meter(HISTORY, *chatml_values()) == "Context: no model loaded."


def test_send_to_gives_the_prompt_the_model_would_see(scripted_chat: Any) -> None:
    text, status = scripted_chat.prompt_text(HISTORY, "", *chatml_values())
    assert status == "" and text.endswith("<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n")
    opened, _ = scripted_chat.prompt_text(HISTORY, "Sure", *chatml_values())
    assert opened.endswith("<|im_start|>assistant\nSure")
    # chat-instruct wraps the transcript in the (edited) command.
    values = chatml_values()
    values[1], values[6] = "chat-instruct", "Reply as <|character|> to this:\n<|prompt|>\nTHE END"
    text, _ = scripted_chat.prompt_text(HISTORY, "", *values)
    assert "Reply as Assistant to this:\nYou: a\nAssistant: b\nYou: c\nTHE END" in text
    assert text.endswith("Assistant:")
    scripted_chat.service.unload_model()
    with pytest.warns(UserWarning, match="No model"):
        text, status = scripted_chat.prompt_text(HISTORY, "", *chatml_values())
    assert text is None and "No model" in status
