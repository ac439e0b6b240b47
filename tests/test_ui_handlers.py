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
from tests.conftest import make_config
from webui.app import build_service
from webui.core.loader import Chunk
from webui.core.params import GenerationParams, field_specs
from webui.core.prompts import ChatMessage
from webui.ui.convert import (
    DETECTED_TEMPLATE,
    InputError,
    chat_settings,
    chatbot_view,
    content_text,
    drop_trailing_replies,
    loader_settings_from_values,
    normalize_history,
    not_used_label,
    params_from_values,
    parse_list,
    parse_mapping,
    remove_last_exchange,
    throttled_text,
    to_chat_messages,
    widget_values,
)
from webui.ui.state import CHAT, SessionJobs

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
    """Chat settings (instruct mode, detected template) then the parameter widgets."""
    return ["instruct", "", "Assistant", "You", "", "", DETECTED_TEMPLATE, *values_with(**param_changes)]


def final(updates: Iterator[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    collected = list(updates)
    return collected, collected[-1]


@pytest.mark.slow
def test_send_streams_a_reply_and_updates_the_status(chat_handlers: Any) -> None:
    jobs = SessionJobs()
    updates, last = final(
        chat_handlers.send("What is the capital of France?", [], jobs, *chat_values(temperature=0.0, top_k=1))
    )
    history, shown, _box, status = last
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "Paris" in history[-1]["content"]
    assert shown == history
    assert updates[0][2] == ""  # the message box is cleared as soon as the message is sent
    assert "tokens/s" in status
    assert not jobs.busy(CHAT)

    _, (history2, _, _, _) = final(
        chat_handlers.regenerate(history, jobs, *chat_values(temperature=0.0, top_k=1))
    )
    assert history2 == history  # deterministic settings: the same reply again

    trimmed, _, box, _ = chat_handlers.remove_last(history2, jobs)
    assert trimmed == [] and box == "What is the capital of France?"


@pytest.mark.slow
def test_invalid_parameters_keep_the_history_and_say_why(chat_handlers: Any) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.warns(UserWarning, match="temperature"):
        _, last = final(chat_handlers.send("Next", history, SessionJobs(), *chat_values(temperature=99.0)))
    assert last[0] == history
    assert "temperature" in last[3]


@pytest.mark.slow
def test_no_model_loaded_is_a_readable_error(tmp_path: Path) -> None:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    service = build_service(make_config(tmp_path / "user_data"))
    try:
        handlers = ChatHandlers(service, ParametersTab(service))
        with pytest.warns(UserWarning, match="No model is loaded"):
            _, last = final(handlers.send("Hello", [], SessionJobs(), *chat_values()))
        assert last[0] == [] and "No model is loaded" in last[3]
    finally:
        service.close()


@pytest.mark.slow
def test_stop_cancels_only_this_sessions_reply(chat_handlers: Any) -> None:
    mine, theirs = SessionJobs(), SessionJobs()
    long_reply = chat_values(max_new_tokens=300, ban_eos_token=True, temperature=0.0)
    results: dict[str, Any] = {}

    updates = chat_handlers.send("Write a long story about a dog.", [], mine, *long_reply)
    for update in updates:
        history = update[0]
        if isinstance(history, list) and len(history) == 2 and history[-1]["content"]:
            break  # my reply is being generated

    def run() -> None:
        _, results["theirs"] = final(
            chat_handlers.send("Write a story about a cat.", [], theirs, *long_reply)
        )

    other = threading.Thread(target=run)
    other.start()
    deadline = time.monotonic() + 30
    while not theirs.busy(CHAT) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert theirs.busy(CHAT)  # their reply is queued behind mine
    assert mine.cancel(CHAT)
    _, (history, _, _, _) = final(updates)
    other.join(timeout=300)
    assert not other.is_alive()
    mine_reply, theirs_reply = history[-1]["content"], results["theirs"][0][-1]["content"]
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
    from tests.fakes import ScriptedLoader
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
    _, (history, _, _, _) = final(handlers.send("Hi", [], jobs, *chat_values()))
    assert history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    _, (history, _, _, _) = final(handlers.continue_reply(history, jobs, *chat_values()))
    assert history[-1] == {"role": "assistant", "content": "Hello!Hello!"}
    _, (_, _, box, _) = final(handlers.impersonate(history, jobs, *chat_values()))
    assert box == "Hello!"
    assert handlers.clear(jobs)[:2] == ([], [])


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
    values[6] = "No such template"
    with pytest.warns(UserWarning, match="No such template"):
        _, last = final(handlers.send("Hi", [], SessionJobs(), *values))
    assert last[0] == [] and "No such template" in last[3]


def test_new_chat_during_a_reply_stops_it_and_drops_its_updates(scripted_service: Any) -> None:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    handlers = ChatHandlers(scripted_service, ParametersTab(scripted_service))
    model = scripted_service.engine.state.model
    model.gate = threading.Event()  # the model waits before each token
    jobs = SessionJobs()
    updates = handlers.send("Hi", [], jobs, *chat_values())
    first = next(updates)
    assert first[0] == [{"role": "user", "content": "Hi"}] and first[3] == "Generating…"
    assert jobs.busy(CHAT)
    assert handlers.clear(jobs)[:2] == ([], [])
    model.gate.set()
    rest = list(updates)
    assert all(not isinstance(update[0], list) for update in rest)  # the cleared history is not written back
    assert not jobs.busy(CHAT)
    stats = scripted_service.engine.last_stats
    assert stats is None or stats.new_tokens == 0  # cancelled before its first token
