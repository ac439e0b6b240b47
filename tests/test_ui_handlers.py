"""Unit tests of the page's handlers: widget values -> core objects, history handling, streaming, jobs.

The pure helpers need no model; the handler tests at the end drive the real Service with the real default
model (no browser) to check streaming, errors and per-session Stop.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaders.llama_cpp import LlamaCppSettings
from tests.support.config import make_config
from webui.app import build_service
from webui.core.loader import Chunk
from webui.core.params import GenerationParams, field_specs
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
    effective_context,
    loader_settings_from_values,
    normalize_history,
    not_used_label,
    open_reply,
    params_from_values,
    parse_list,
    parse_mapping,
    preview_messages,
    remove_last_exchange,
    throttled_text,
    to_chat_messages,
    token_count_text,
    widget_values,
)
from webui.ui.state import CHAT, NOTEBOOK, SessionJobs

SPECS = field_specs()


def values_with(**changes: Any) -> list[Any]:
    """Default widget values with some widgets changed (as the page would send them)."""
    values = widget_values(SPECS, GenerationParams())
    index = {spec.name: i for i, spec in enumerate(SPECS)}
    for name, value in changes.items():
        values[index[name]] = value
    return values


# -- widget values -> GenerationParams -------------------------------------------------------------------------


def test_default_widget_values_round_trip_to_the_schema_defaults() -> None:
    assert params_from_values(SPECS, values_with()) == GenerationParams()


def test_every_field_has_a_widget_value() -> None:
    assert [spec.name for spec in SPECS] == list(GenerationParams.model_fields)
    assert len(widget_values(SPECS, GenerationParams())) == len(GenerationParams.model_fields)


def test_slider_floats_become_ints_and_changes_apply() -> None:
    params = params_from_values(SPECS, values_with(max_new_tokens=64.0, temperature=0.0, top_k=1.0))
    assert params.max_new_tokens == 64 and isinstance(params.max_new_tokens, int)
    assert params.temperature == 0.0 and params.top_k == 1


def test_list_fields_accept_json_or_one_item_per_line() -> None:
    assert parse_list("stop", '["\\n###", "User:"]') == ["\n###", "User:"]
    assert parse_list("stop", "###\nUser:\n") == ["###", "User:"]
    assert parse_list("stop", "  ") == []
    params = params_from_values(SPECS, values_with(stop="</s>\nUser:", dry_sequence_breakers='["\\n", ":"]'))
    assert params.stop == ["</s>", "User:"]
    assert params.dry_sequence_breakers == ["\n", ":"]


def test_default_list_widget_text_keeps_newline_items() -> None:
    values = values_with()
    shown = values[[s.name for s in SPECS].index("dry_sequence_breakers")]
    assert parse_list("dry_sequence_breakers", shown) == GenerationParams().dry_sequence_breakers


@pytest.mark.parametrize(
    ("text", "fragment"),
    [('["unclosed"', "not a valid JSON list"), ("[1, 2]", "list of strings")],
)
def test_invalid_list_text_names_the_field(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match="stop") as info:
        params_from_values(SPECS, values_with(stop=text))
    assert fragment in str(info.value)


def test_logit_bias_json_is_checked_by_the_schema() -> None:
    assert parse_mapping("logit_bias", "") == {}
    params = params_from_values(SPECS, values_with(logit_bias='{"50256": -100}'))
    assert params.logit_bias == {50256: -100.0}
    with pytest.raises(InputError, match="logit_bias"):
        params_from_values(SPECS, values_with(logit_bias="{oops"))
    with pytest.raises(InputError, match="logit_bias"):
        params_from_values(SPECS, values_with(logit_bias='{"not-a-token": 1}'))
    with pytest.raises(InputError, match="JSON object"):
        params_from_values(SPECS, values_with(logit_bias="[1]"))


def test_out_of_bounds_and_empty_numbers_give_readable_errors() -> None:
    with pytest.raises(InputError, match=r"Invalid parameters: temperature: .*less than or equal to 5"):
        params_from_values(SPECS, values_with(temperature=9.0))
    with pytest.raises(InputError, match="seed: a number is required"):
        params_from_values(SPECS, values_with(seed=None))
    with pytest.raises(InputError, match="Expected"):
        params_from_values(SPECS, [])


def test_not_used_label_marks_only_fields_the_loader_ignores() -> None:
    honoured = frozenset({"temperature"})
    assert not_used_label("temperature", "remote", honoured) == "temperature"
    assert not_used_label("dry_multiplier", "remote", honoured) == "dry_multiplier (not used by remote)"
    assert not_used_label("dry_multiplier", None, None) == "dry_multiplier"


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


# -- loader settings ------------------------------------------------------------------------------------------


def test_loader_settings_from_widgets() -> None:
    names = ["n_ctx", "n_threads", "use_mmap", "tensor_split", "rope_freq_base"]
    settings = loader_settings_from_values(LlamaCppSettings, names, [2048.0, None, False, "", 0.0])
    assert settings == {"n_ctx": 2048, "use_mmap": False, "tensor_split": "", "rope_freq_base": 0.0}
    assert isinstance(settings["n_ctx"], int)
    LlamaCppSettings.model_validate(settings)


# -- per-session jobs -----------------------------------------------------------------------------------------


class FakeJob:
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


def chat_values(**param_changes: Any) -> list[Any]:
    """No personality, chat settings (instruct mode, detected template), then the parameter widgets."""
    return [
        "(none)",
        "instruct",
        "",
        "Assistant",
        "You",
        "",
        "",
        DETECTED_TEMPLATE,
        *values_with(**param_changes),
    ]


def final(updates: Iterator[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
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


@pytest.mark.slow
def test_loading_a_corrupt_file_keeps_the_previous_model(smol_service: Any) -> None:
    from webui.ui.model_tab import ModelTab

    (smol_service.engine.models_dir / "broken.gguf").write_bytes(b"GGUF" + b"\x00garbage" * 64)
    tab = ModelTab(smol_service)
    with pytest.warns(UserWarning, match="broken.gguf"):
        messages = list(tab.load("broken.gguf", "llama.cpp"))
    assert "Loading broken.gguf failed" in messages[-1]
    assert "Loaded: SmolLM2-135M-Instruct.Q4_1.gguf" in messages[-1]
    assert smol_service.engine.state.entry.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert tab.loader_for("broken.gguf") == "llama.cpp"


def test_presets_save_apply_delete(tmp_path: Path) -> None:
    from webui.ui.parameters_tab import ParametersTab

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        tab = ParametersTab(service)
        dropdown, status = tab.save_preset("Mine", *values_with(temperature=0.3, stop="###"))
        assert dropdown["value"] == "Mine" and "Mine" in dropdown["choices"] and "saved" in status
        assert service.presets.load("Mine").overlay == {"temperature": 0.3, "stop": ["###"]}
        applied = tab.apply_preset("Mine")
        assert params_from_values(SPECS, applied[:-1]) == GenerationParams(temperature=0.3, stop=["###"])
        with pytest.warns(UserWarning, match="not allowed"):
            _, status = tab.save_preset("../escape", *values_with())
        assert status.startswith("⚠️")
        with pytest.warns(UserWarning, match="bundled"):
            tab.delete_preset("Deterministic")
        dropdown, status = tab.delete_preset("Mine")
        assert dropdown["value"] == "Default" and "Mine" not in dropdown["choices"]
    finally:
        service.close()


# -- handlers over a scripted loader (fast, exact text) ---------------------------------------------------------


@pytest.fixture
def scripted_service(tmp_path: Path) -> Iterator[Any]:
    from tests.support.fakes import ScriptedLoader
    from webui.core.registry import LoaderRegistry

    config = make_config(tmp_path / "user_data")
    (config.models_dir / "a.gguf").write_text("Hel|lo|!")
    registry = LoaderRegistry({"scripted": ScriptedLoader, "llama.cpp": "loaders.llama_cpp:LlamaCppLoader"})
    service = build_service(config, registry)
    service.load_model("a.gguf", "scripted")
    yield service
    service.close()


def test_parameters_not_used_by_the_loader_are_marked(scripted_service: Any) -> None:
    from webui.ui.parameters_tab import ParametersTab

    labels = {
        spec.name: update["label"]
        for spec, update in zip(SPECS, ParametersTab(scripted_service).labels(), strict=True)
    }
    assert labels["max_new_tokens"] == "max_new_tokens"
    assert labels["temperature"] == "temperature (not used by scripted)"
    scripted_service.unload_model()
    assert ParametersTab(scripted_service).labels()[1]["label"] == SPECS[1].name


def test_build_ui_draws_every_parameter_and_loader_setting(scripted_service: Any) -> None:
    import gradio as gr

    from webui.ui.app import build_ui

    blocks = build_ui(scripted_service, make_config(Path(scripted_service.engine.models_dir).parent))
    assert isinstance(blocks, gr.Blocks)
    elem_ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {f"param-{spec.name}" for spec in SPECS} <= elem_ids
    assert {"setting-llama-cpp-n_ctx", "setting-scripted-fail", "chatbot", "model-status"} <= elem_ids


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


def test_default_and_notebook_tabs_complete_raw_text(scripted_service: Any) -> None:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    handlers = TextHandlers(scripted_service, ParametersTab(scripted_service))
    jobs = SessionJobs()
    assert list(handlers.default("Once upon", jobs, *values_with()))[-1][0] == "Hello!"
    assert list(handlers.notebook("Once upon ", jobs, *values_with()))[-1][0] == "Once upon Hello!"
    assert list(handlers.notebook("x", jobs, *values_with(max_new_tokens=2)))[-1][0] == "xHello"
    with pytest.warns(UserWarning, match="max_new_tokens"):
        last = list(handlers.default("x", jobs, *values_with(max_new_tokens=0)))[-1]
    assert "max_new_tokens" in last[1]


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

HISTORY = [
    {"role": "user", "content": "a"},
    {"role": "assistant", "content": "b"},
    {"role": "user", "content": "c"},
]


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
    assert effective_context(0, 2048) == 2048
    assert effective_context(1024, 2048) == 1024
    assert effective_context(9999, 2048) == 2048
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


def last_prompt(service: Any) -> str:
    prompts: list[str] = service.engine.state.model.prompts
    return prompts[-1]


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


# -- Default and Notebook: continue, undo, token counts ---------------------------------------------------------


@pytest.fixture
def text_handlers(scripted_service: Any) -> Any:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    return TextHandlers(scripted_service, ParametersTab(scripted_service))


def test_default_continue_appends_to_the_output(text_handlers: Any) -> None:
    jobs = SessionJobs()
    output, status, tokens = list(text_handlers.default("Once upon", jobs, *values_with()))[-1]
    assert output == "Hello!" and "tokens/s" in status
    assert tokens == "Prompt: 2 tokens · prompt + output: 2 tokens"  # the scripted tokenizer counts words
    output, _, tokens = list(text_handlers.default_continue("Once upon", output, jobs, *values_with()))[-1]
    assert output == "Hello!Hello!"
    assert last_prompt(text_handlers.service) == "Once uponHello!"
    assert text_handlers.default_counts("a b c") == "Prompt: 3 tokens"


def test_notebook_undo_restores_the_text_before_generate(text_handlers: Any) -> None:
    jobs = SessionJobs()
    updates = list(text_handlers.notebook("Once ", jobs, *values_with()))
    text, _, tokens, _ = updates[-1]
    assert text == "Once Hello!" and tokens == "Text: 2 tokens"
    kept = [u[3] for u in updates if isinstance(u[3], str)]
    assert kept == ["Once "]  # the undo state is set once, when the generation starts
    text, status, tokens, before = text_handlers.notebook_undo("Once ", jobs)
    assert text == "Once " and before is None and "Restored" in status and tokens == "Text: 1 token"
    with pytest.warns(UserWarning, match="Nothing to undo"):
        assert text_handlers.notebook_undo(None, jobs)[1].startswith("⚠️")


def test_notebook_undo_during_generation_stops_it(text_handlers: Any) -> None:
    model = text_handlers.service.engine.state.model
    model.gate = threading.Event()
    jobs = SessionJobs()
    updates = text_handlers.notebook("Start", jobs, *values_with())
    first = next(updates)
    assert first[1] == "Generating…" and first[3] == "Start"
    text, *_ = text_handlers.notebook_undo("Start", jobs)
    assert text == "Start" and not jobs.busy(NOTEBOOK)
    model.gate.set()
    rest = list(updates)
    assert all(not isinstance(update[0], str) for update in rest)  # the restored text is not overwritten


def test_token_counts_without_a_model(tmp_path: Path) -> None:
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.text_tabs import TextHandlers

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        handlers = TextHandlers(service, ParametersTab(service))
        assert (
            handlers.default_counts("hello", "x")
            == "Prompt: no model loaded · prompt + output: no model loaded"
        )
        assert handlers.notebook_counts("hello") == "Text: no model loaded"
    finally:
        service.close()


# -- instruction template editor --------------------------------------------------------------------------------

CUSTOM = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"


def test_template_editor_previews_the_current_chat(scripted_service: Any) -> None:
    from webui.ui.template_editor import TemplateEditor

    editor = TemplateEditor(scripted_service)
    text, note = editor.preview("Mine", CUSTOM, HISTORY, "Be brief.")
    assert text == "[system] Be brief.\n[user] a\n[assistant] b\n[user] c\n[assistant] "
    assert "current chat (4 messages)" in note
    text, note = editor.preview("Mine", CUSTOM, [], "")
    assert text.startswith("[user] Hello! Who are you?") and "example" in note
    text, note = editor.preview("Mine", "{% for m in messages %}", HISTORY, "")
    assert text.startswith("⚠️") and "syntax error" in text and note == text
    text, _ = editor.preview("Mine", "{{ raise_exception('no system messages') }}", HISTORY, "")
    assert "no system messages" in text
    source, status = editor.pick("ChatML")
    assert "<|im_start|>" in source and "ChatML" in status
    assert editor.current()[0] == "Alpaca"  # the template found for the loaded model (here the fallback)
    names, source = editor.refresh("ChatML")  # page load: the template chosen on the Parameters tab
    assert names["value"] == "ChatML" and "<|im_start|>" in source
    names, source = editor.refresh(None)
    assert names["value"] == "Alpaca" and "### Instruction" in source


def test_template_editor_saves_only_valid_templates(scripted_service: Any) -> None:
    from webui.ui.template_editor import TemplateEditor

    editor = TemplateEditor(scripted_service)
    user_dir = scripted_service.templates.user_dir
    with pytest.warns(UserWarning, match="syntax error"):
        _, _, status = editor.save("Broken", "{% for m in messages %}")
    assert status.startswith("⚠️ Not saved") and not (user_dir / "Broken.yaml").exists()
    with pytest.warns(UserWarning, match="not allowed"):
        _, _, status = editor.save("../escape", CUSTOM)
    assert status.startswith("⚠️ Not saved")
    with pytest.warns(UserWarning, match="name"):
        editor.save("  ", CUSTOM)
    assert not user_dir.exists() or not list(user_dir.iterdir())
    names, dropdown, status = editor.save("Mine", CUSTOM)
    assert names["value"] == "Mine" and "Mine" in names["choices"] and "Mine" in dropdown["choices"]
    assert dropdown["choices"][0] == DETECTED_TEMPLATE and "saved" in status
    assert scripted_service.templates.get("Mine").source == CUSTOM
    # The saved template is usable by the chat at once.
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    values = chat_values()
    values[7] = "Mine"
    text, _ = ChatHandlers(scripted_service, ParametersTab(scripted_service)).prompt_text(
        HISTORY, "", *values
    )
    assert text == "[user] a\n[assistant] b\n[user] c\n[assistant] "


# -- settings: saved as chosen, restored at page load -------------------------------------------------------------


@pytest.fixture
def settings_file(scripted_service: Any) -> Any:
    from webui.core.settings import SettingsFile

    return SettingsFile(Path(scripted_service.engine.models_dir).parent / "settings.yaml")


def test_session_tab_saves_each_choice_and_everything(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import load_settings
    from webui.ui.session_tab import SessionTab

    tab = SessionTab(scripted_service, settings_file)
    assert "settings.yaml" in tab.remember_preset("Creative")
    tab.remember_mode("chat")
    tab.remember_template("ChatML")
    tab.remember_theme("dark")
    saved = load_settings(settings_file.path)
    assert (saved.preset, saved.mode, saved.template, saved.theme) == ("Creative", "chat", "ChatML", "dark")
    tab.remember_template(DETECTED_TEMPLATE)
    assert load_settings(settings_file.path).template is None
    assert tab.remember_preset("No such preset") == {"__type__": "update"}  # nothing saved
    with pytest.warns(UserWarning, match="could not be saved"):
        assert tab.remember_theme("purple").startswith("⚠️")

    status = tab.save_all("Deterministic", "chat-instruct", "Alpaca", "light")
    assert status.startswith("Settings saved.")
    saved = load_settings(settings_file.path)
    assert saved.model == "a.gguf" and saved.loader == "scripted" and saved.loader_settings == {}
    assert (saved.preset, saved.mode, saved.template, saved.theme) == (
        "Deterministic",
        "chat-instruct",
        "Alpaca",
        "light",
    )


def test_loading_a_model_remembers_it(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import load_settings
    from webui.ui.model_tab import ModelTab

    settings_file.update(character="Ada")
    tab = ModelTab(scripted_service, settings=settings_file)
    tab.panels = []  # no widgets drawn: load with the loader's defaults
    messages = list(tab.load("a.gguf", "scripted"))
    assert messages[-1].startswith("Loaded a.gguf")
    saved = load_settings(settings_file.path)
    assert (saved.model, saved.loader, saved.character) == ("a.gguf", "scripted", "Ada")
    with pytest.warns(UserWarning, match="failed"):
        list(tab.load("missing.gguf", "scripted"))
    assert load_settings(settings_file.path).model == "a.gguf"  # a failed load changes nothing


def test_page_load_restores_the_saved_choices(scripted_service: Any, settings_file: Any) -> None:
    from webui.core.settings import SessionSettings
    from webui.ui.parameters_tab import ParametersTab

    tab = ParametersTab(scripted_service)
    preset, template, *widgets = tab.refresh(SessionSettings(preset="Deterministic", template="ChatML"))
    assert preset["value"] == "Deterministic" and template["value"] == "ChatML"
    restored = params_from_values(SPECS, [w["value"] for w in widgets])
    assert restored == scripted_service.presets.load("Deterministic").params
    assert all("label" in w for w in widgets)
    preset, template, *widgets = tab.refresh(SessionSettings(preset="Gone", template="Gone too"))
    assert "value" not in preset and template["value"] == DETECTED_TEMPLATE
    assert all("value" not in w for w in widgets)
    preset, template, *widgets = tab.refresh()  # after a model load: choices and labels only
    assert "value" not in preset and "value" not in template


def test_model_tab_shows_the_saved_model_when_none_is_loaded(
    scripted_service: Any, settings_file: Any
) -> None:
    import gradio as gr

    from webui.core.settings import SessionSettings
    from webui.ui.model_tab import ModelTab

    (scripted_service.engine.models_dir / "b.gguf").write_text("x")
    tab = ModelTab(scripted_service, settings=settings_file)
    with gr.Blocks():
        tab.build()
    saved = SessionSettings(model="b.gguf", loader="scripted", loader_settings={"fail": True})
    models, loader, *rest = tab.refresh(saved)
    assert models["value"] == "a.gguf" and loader["value"] == "scripted"  # a loaded model wins
    scripted_service.unload_model()
    models, loader, *rest = tab.refresh(saved)
    assert models["value"] == "b.gguf" and loader["value"] == "scripted"
    groups, values = rest[: len(tab.panels)], rest[len(tab.panels) : -1]
    names = [name for panel in tab.panels for name in panel.names]
    assert values[names.index("fail")] is True
    assert [g["visible"] for g in groups] == [p.loader == "scripted" for p in tab.panels]
    models, *_ = tab.refresh(SessionSettings(model="gone.gguf"))
    assert models["value"] != "gone.gguf"


def test_build_ui_draws_the_new_widgets(scripted_service: Any) -> None:
    from webui.ui.app import build_ui

    blocks = build_ui(scripted_service, make_config(Path(scripted_service.engine.models_dir).parent))
    elem_ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {
        "chat-start-with",
        "chat-context",
        "chat-to-default",
        "chat-to-notebook",
        "default-continue",
        "default-tokens",
        "notebook-undo",
        "notebook-tokens",
        "template-editor-source",
        "template-editor-preview",
        "template-editor-save",
        "session-theme",
        "session-save",
    } <= elem_ids
    chatbot = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "chatbot")
    assert chatbot.editable == "all" and chatbot.render_markdown and "copy" in chatbot.buttons
