"""The plugin manager (order, error isolation, discovery, settings) and the bundled extensions' logic.

These are unit tests at the hook seam: extensions are real modules, the ChatContext's tokenizer and model are
small stand-ins. The real-model and real-server checks are in test_extensions_live.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from tests.support.extensions import BUNDLED, bundled, bundled_manager, chat_context
from webui.config import PROJECT_ROOT
from webui.core.characters.store import Character
from webui.core.extensions.api import ExtensionState, hookimpl
from webui.core.extensions.discovery import Found
from webui.core.extensions.hooks import LIVE_HOOKS, PIPED_ARGUMENT, RESTART_HOOKS, HookSpecs
from webui.core.extensions.manager import ExtensionError, ExtensionManager
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage


def module(name: str, doc: str = "", **hooks: Callable[..., Any]) -> ModuleType:
    """A module with ``hooks`` (functions named after hooks) marked as hook implementations."""
    made = ModuleType(name, doc)
    for hook, function in hooks.items():
        function.__name__ = hook
        setattr(made, hook, function)
    return made


def manager_of(*modules: ModuleType) -> ExtensionManager:
    return ExtensionManager(found=[Found(m.__name__, "user", "test", m) for m in modules])


# -- order and isolation ----------------------------------------------------------------------------------


def appender(suffix: str, **marks: bool) -> Callable[..., str]:
    @hookimpl(**marks)
    def palabre_modify_input(text: str) -> str:
        return text + suffix

    return palabre_modify_input


def test_hooks_run_in_the_enabled_order_with_tryfirst_and_trylast_overriding_it() -> None:
    a = module("a", palabre_modify_input=appender("a"))
    b = module("b", palabre_modify_input=appender("b"))
    first = module("first", palabre_modify_input=appender("F", trylast=True))
    manager = manager_of(a, b, first)
    warnings: list[str] = []
    manager.set_enabled(["first", "b", "a"])
    assert manager.modify_input("", chat_context(), warnings) == "baF"
    manager.set_enabled(["a", "b"])
    assert manager.modify_input("", chat_context(), warnings) == "ab"
    assert warnings == []


def test_a_failing_hook_is_named_and_skipped_and_the_others_still_run() -> None:
    @hookimpl
    def palabre_modify_input(text: str) -> str:
        raise RuntimeError("kaput")

    @hookimpl
    def palabre_modify_params(params: GenerationParams) -> str:
        return "not params"

    broken = module(
        "broken", palabre_modify_input=palabre_modify_input, palabre_modify_params=palabre_modify_params
    )
    manager = manager_of(broken, module("ok", palabre_modify_input=appender("!")))
    manager.set_enabled(["broken", "ok"])
    warnings: list[str] = []
    assert manager.modify_input("hi", chat_context(), warnings) == "hi!"
    params = GenerationParams()
    assert manager.modify_params(params, chat_context(), warnings) is params
    assert len(warnings) == 2
    assert warnings[0].startswith('Extension "broken" failed in modify_input: RuntimeError: kaput')
    assert 'Extension "broken" failed in modify_params' in warnings[1] and "str" in warnings[1]


def test_disabled_extensions_do_not_run_and_setup_teardown_follow_enabling() -> None:
    calls: list[str] = []

    @hookimpl
    def palabre_setup(state: ExtensionState) -> None:
        calls.append("setup")
        state["ready"] = True

    @hookimpl
    def palabre_teardown(state: ExtensionState) -> None:
        calls.append(f"teardown ready={state.get('ready')}")

    manager = manager_of(
        module(
            "life",
            palabre_setup=palabre_setup,
            palabre_teardown=palabre_teardown,
            palabre_modify_input=appender("x"),
        )
    )
    assert manager.modify_input("", chat_context(), []) == ""
    manager.set_enabled(["life"])
    manager.set_enabled(["life"])  # already enabled: no second setup
    assert manager.modify_input("", chat_context(), []) == "x"
    manager.close()
    assert calls == ["setup", "teardown ready=True"]
    assert manager.enabled == ()


def test_unknown_and_broken_extensions_are_reported_not_raised(tmp_path: Path) -> None:
    bundled_dir, user_dir = tmp_path / "bundled", tmp_path / "user"
    for folder, name, body in [
        (bundled_dir, "good", '"""Good one."""\n'),
        (bundled_dir, "shadowed", '"""Bundled version."""\n'),
        (user_dir, "shadowed", '"""User version."""\n'),
        (user_dir, "crashes", "import no_such_module_here\n"),
        (
            user_dir,
            "typo",
            "from webui.core.extensions.api import hookimpl\n\n@hookimpl\ndef palabre_modfy_input(text):\n    return text\n",
        ),
        (user_dir, "bad-name", ""),
    ]:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(body)
    (user_dir / "no_init").mkdir()
    manager = ExtensionManager(bundled_dir, user_dir)
    info = {item.name: item for item in manager.info()}
    assert info["good"].error is None and info["good"].description == "Good one."
    assert info["shadowed"].source == "user" and info["shadowed"].description == "User version."
    assert "No module named 'no_such_module_here'" in (info["crashes"].error or "")
    assert "palabre_modfy_input" in (info["typo"].error or "")
    assert "identifier" in (info["bad-name"].error or "")
    assert "__init__.py" in (info["no_init"].error or "")
    problems = manager.set_enabled(["crashes", "good", "nope"])
    assert manager.enabled == ("good",)
    assert any('"crashes" cannot be enabled' in p for p in problems)
    assert any('no extension "nope"' in p for p in problems)


def test_settings_are_validated_and_bad_saved_values_fall_back_to_defaults() -> None:
    class Knobs(BaseModel):
        level: int = 1
        name: str = "x"

    @hookimpl
    def palabre_settings_model() -> type[BaseModel]:
        return Knobs

    @hookimpl
    def palabre_modify_input(text: str, settings: Knobs) -> str:
        return f"{text}{settings.name}{settings.level}"

    manager = manager_of(
        module(
            "knobs", palabre_settings_model=palabre_settings_model, palabre_modify_input=palabre_modify_input
        )
    )
    manager.set_enabled(["knobs"])
    assert manager.modify_input(">", chat_context(), []) == ">x1"
    manager.update_settings("knobs", {"level": 3})
    assert manager.modify_input(">", chat_context(), []) == ">x3"
    with pytest.raises(ExtensionError, match="level"):
        manager.update_settings("knobs", {"level": "high"})
    with pytest.raises(ExtensionError, match="Unknown settings"):
        manager.update_settings("knobs", {"volume": 2})
    problems = manager.load_settings({"knobs": {"level": "loud"}, "gone": {"a": 1}})
    assert len(problems) == 1 and "defaults are used" in problems[0]
    assert manager.settings("knobs") == Knobs(level=3)  # unchanged by the bad saved value


def test_every_bundled_extension_imports_and_declares_its_hooks() -> None:
    info = {item.name: item for item in ExtensionManager(BUNDLED, None).info()}
    assert {"lorebook", "authors_note", "summary_memory", "example"} <= set(info)
    for item in info.values():
        assert item.error is None and item.description and item.settings_model is not None
    assert set(info["example"].hooks) >= {
        "setup", "teardown", "modify_input", "modify_history", "modify_params", "modify_prompt",
        "modify_chunk", "modify_reply", "ui", "routes", "css", "js",
    }  # fmt: skip
    assert info["example"].needs_restart and not info["authors_note"].needs_restart
    assert "ui" in info["lorebook"].hooks  # its Lorebook tab (tests/test_lorebook_tab.py)


# -- lorebook -----------------------------------------------------------------------------------------------

CARD_BOOK = {
    "scan_depth": 2,
    "entries": [
        {
            "keys": ["silver key"],
            "content": "The Silver Key opens the vault.",
            "priority": 10,
            "insertion_order": 2,
        },
        {"keys": ["Moth"], "content": "Moths gather at night.", "case_sensitive": True, "insertion_order": 1},
        {"keys": ["river"], "content": "The river floods.", "selective": True, "secondary_keys": ["spring"]},
        {"keys": ["cat"], "content": "The cat is old.", "enabled": False},
        {"keys": [], "content": "Varn is a city.", "constant": True, "insertion_order": 0, "priority": -1},
    ],
}


def lore(messages: list[ChatMessage], character: Character | None = None, **settings: Any) -> str:
    manager = bundled_manager("lorebook", **settings)
    warnings: list[str] = []
    character = character or Character(name="Ada", character_book=CARD_BOOK)
    result = manager.modify_history(messages, chat_context(character=character), warnings)
    assert warnings == []
    return "\n".join(f"{m.role}: {m.content}" for m in result)


def test_lorebook_inserts_triggered_entries_of_the_character_book_after_the_system_message() -> None:
    text = lore(
        [ChatMessage("system", "Be kind."), ChatMessage("user", "Where is the SILVER KEY? and the moth")]
    )
    assert text.startswith("system: Be kind.\n\nVarn is a city.\nThe Silver Key opens the vault.\nuser:")
    assert "Moths gather" not in text  # case-sensitive key "Moth" does not match "moth"
    assert "cat is old" not in lore([ChatMessage("user", "the cat")])  # disabled entry
    assert "river floods" not in lore([ChatMessage("user", "the river")])  # selective: needs "spring" too
    assert "river floods" in lore([ChatMessage("user", "the river in spring")])
    assert "Silver Key" not in lore([ChatMessage("user", "silverkeys")])  # whole words only


def test_lorebook_scan_depth_budget_priority_and_position() -> None:
    old = [ChatMessage("user", "silver key?"), ChatMessage("assistant", "Hm."), ChatMessage("user", "Go on.")]
    assert "Silver Key" not in lore(old)  # the book's scan_depth 2 does not reach the first message
    deeper = Character(name="Ada", character_book={**CARD_BOOK, "scan_depth": None})
    assert "Silver Key" in lore(old, deeper, scan_depth=3)
    # Budget for one entry: the higher priority (Silver Key, 6 words) wins over the constant entry (-1).
    tight = lore([ChatMessage("user", "silver key")], token_budget=6)
    assert "Silver Key" in tight and "Varn is a city" not in tight
    last = lore([ChatMessage("user", "silver key")], position="before_last_message", use_character_book=True)
    assert last.startswith("user: Varn is a city.\nThe Silver Key opens the vault.\n\nsilver key")
    assert "Silver" not in lore([ChatMessage("user", "silver key")], use_character_book=False)


def test_lorebook_reads_user_lorebooks_and_reports_bad_ones(tmp_path: Path) -> None:
    folder = tmp_path / "lorebooks"
    folder.mkdir()
    (folder / "world.yaml").write_text(
        textwrap.dedent("""\
        entries:
          - keys: dragon, wyrm
            content: Dragons sleep in the north.
        """)
    )
    (folder / "broken.json").write_text("{not json")
    manager = bundled_manager("lorebook", lorebooks=["world"])
    context = chat_context(user_data_dir=tmp_path)
    warnings: list[str] = []
    result = manager.modify_history([ChatMessage("user", "a wyrm!")], context, warnings)
    assert result[0] == ChatMessage("system", "Dragons sleep in the north.") and warnings == []
    for name, expected in [
        ("broken", "cannot be read"),
        ("missing", "no lorebook"),
        ("../world", "not allowed"),
    ]:
        manager.update_settings("lorebook", {"lorebooks": [name]})
        warnings = []
        messages = [ChatMessage("user", "a wyrm!")]
        assert manager.modify_history(messages, context, warnings) == messages
        assert len(warnings) == 1 and 'Extension "lorebook"' in warnings[0] and expected in warnings[0]


# -- author's note ------------------------------------------------------------------------------------------


def test_authors_note_goes_at_its_depth_below_the_system_message() -> None:
    insert_note = bundled("authors_note").insert_note
    note = ChatMessage("system", "NOTE")
    history = [
        ChatMessage("system", "S"),
        ChatMessage("user", "1"),
        ChatMessage("assistant", "2"),
        ChatMessage("user", "3"),
    ]
    assert [m.content for m in insert_note(history, note, 0)] == ["S", "1", "2", "3", "NOTE"]
    assert [m.content for m in insert_note(history, note, 1)] == ["S", "1", "2", "NOTE", "3"]
    assert [m.content for m in insert_note(history, note, 99)] == ["S", "NOTE", "1", "2", "3"]
    continuing = history[:3]  # continuing the assistant's reply: the note never goes after it
    assert [m.content for m in insert_note(continuing, note, 0)] == ["S", "1", "NOTE", "2"]
    manager = bundled_manager("authors_note", text="Keep it short.", depth=1, role="user")
    result = manager.modify_history(history, chat_context(), [])
    assert result[-2] == ChatMessage("user", "Keep it short.")
    assert bundled_manager("authors_note").modify_history(history, chat_context(), []) == history


# -- summary memory -----------------------------------------------------------------------------------------


def conversation(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "You are Ada.")]
    for index in range(turns):
        messages += [
            ChatMessage("user", f"question {index} " + "word " * 20),
            ChatMessage("assistant", f"answer {index} " + "word " * 20),
        ]
    return messages


def test_summary_memory_summarizes_dropped_turns_once_and_keeps_the_prefix_stable() -> None:
    calls: list[str] = []

    def generate(messages: Sequence[ChatMessage], max_new_tokens: int) -> str:
        calls.append(messages[-1].content)
        return f"summary {len(calls)}"

    manager = bundled_manager("summary_memory", block_turns=3, summary_tokens=20)
    context = chat_context(budget=300, generate=generate)
    assert manager.modify_history(conversation(4), context, []) == conversation(4)  # fits
    assert calls == []

    first = manager.modify_history(conversation(8), context, [])
    assert first[0].content == "You are Ada.\n\nSummary of the earlier conversation: summary 1"
    assert first[1].content.startswith("question 3 ")  # three turns summarized (one block)
    assert "question 0" in calls[0] and "question 2" in calls[0] and "question 3" not in calls[0]
    assert context.measure(first) <= 300

    again = manager.modify_history(conversation(8), context, [])
    assert again == first and len(calls) == 1  # cached: not summarized again
    # One more turn needs the next block (turns 3-5) summarized: the old summary is extended, not redone.
    longer = manager.modify_history(conversation(9), context, [])
    assert len(calls) == 2 and "summary 1" in calls[1] and "question 3" in calls[1]
    assert "question 0" not in calls[1] and "question 6" not in calls[1]
    assert longer[0].content.endswith("summary 2") and longer[1].content.startswith("question 6 ")
    # And the turn after that keeps the same start of the prompt (llama.cpp reuses its cache).
    later = manager.modify_history(conversation(10), context, [])
    assert later[:7] == longer and len(calls) == 2


def test_summary_memory_never_asks_the_model_in_a_preview_and_uses_a_cached_summary() -> None:
    calls: list[int] = []

    def generate(messages: Sequence[ChatMessage], max_new_tokens: int) -> str:
        calls.append(max_new_tokens)
        return "the summary"

    manager = bundled_manager("summary_memory", block_turns=3, summary_tokens=20)
    context = chat_context(budget=300, generate=generate)
    preview = dataclasses.replace(context, preview=True)
    assert manager.modify_history(conversation(8), preview, []) == conversation(8)
    assert calls == []  # nothing cached yet: left as it is (the prompt builder truncates)
    made = manager.modify_history(conversation(8), context, [])
    assert calls == [20] and "the summary" in made[0].content
    assert manager.modify_history(conversation(8), preview, []) == made
    assert calls == [20]


# -- example ------------------------------------------------------------------------------------------------


def test_the_example_extension_changes_nothing_by_default_and_every_live_hook_when_asked() -> None:
    manager = bundled_manager("example")
    history = [ChatMessage("user", "hi")]
    context = chat_context()
    params = GenerationParams()
    assert manager.modify_history(history, context, []) == history
    assert manager.modify_params(params, context, []) is params
    manager.update_settings(
        "example",
        {
            "input_suffix": "!",
            "system_note": "N",
            "max_new_tokens": 7,
            "prompt_prefix": "P:",
            "uppercase": True,
            "signature": " --ex",
        },
    )
    assert manager.modify_input("hi", context, []) == "hi!"
    assert manager.modify_history(history, context, [])[0] == ChatMessage("system", "N")
    assert manager.modify_params(params, context, []).max_new_tokens == 7
    assert manager.modify_prompt("x", context, []) == "P:x"
    assert manager.modify_chunk("abc", "chat", []) == "ABC"
    assert manager.modify_reply("ABC", "chat", []) == "ABC --ex"
    problems: list[str] = []
    assert any("example-ext-note" in css for css in manager.css(problems))
    assert problems == []


def test_bundled_modules_are_importable_submodules() -> None:
    bundled("lorebook")
    book = importlib.import_module("palabre_extensions_bundled.lorebook.book")
    assert book.available_books(PROJECT_ROOT / "no-such-folder") == []


# -- configuration ------------------------------------------------------------------------------------------


def test_serve_enables_the_flags_extensions_or_else_the_saved_ones_with_their_saved_settings(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from webui.app import build_extensions
    from webui.cli import build_parser, config_from_args
    from webui.core.settings import SettingsFile

    SettingsFile(tmp_path / "settings.yaml").update(
        extensions=["authors_note", "example"],
        extension_settings={
            "authors_note": {"text": "Be brief.", "depth": 3},
            "example": {"max_new_tokens": -5},
        },
    )
    args = build_parser().parse_args(
        ["serve", "--user-data-dir", str(tmp_path), "--extensions", "lorebook,example", "nope"]
    )
    config = config_from_args(args)
    assert config.extensions == ("lorebook", "example", "nope")
    manager, problems = build_extensions(config)
    assert manager.enabled == ("lorebook", "example")
    assert any("max_new_tokens" in p for p in problems) and any('"nope"' in p for p in problems)
    saved, _ = build_extensions(replace(config, extensions=None))
    assert saved.enabled == ("authors_note", "example")
    assert saved.settings("authors_note").model_dump() == {"text": "Be brief.", "depth": 3, "role": "system"}
    assert config_from_args(build_parser().parse_args(["serve"])).extensions is None


# -- the typed hook surface -------------------------------------------------------------------------------------


def test_the_argument_each_pipeline_passes_on_is_read_from_its_specification() -> None:
    assert PIPED_ARGUMENT == {
        "palabre_modify_input": "text",
        "palabre_modify_history": "messages",
        "palabre_modify_params": "params",
        "palabre_modify_prompt": "prompt",
        "palabre_modify_chunk": "text",
        "palabre_modify_reply": "text",
        "palabre_modify_completion_params": "params",
        "palabre_modify_completion_prompt": "prompt",
    }
    assert all(hasattr(HookSpecs, hook) for hook in LIVE_HOOKS + RESTART_HOOKS)


def test_every_hook_has_a_typed_method_on_the_manager() -> None:
    methods = {
        "palabre_ui": "draw_ui",
        "palabre_routes": "add_routes",
        "palabre_css": "css",
        "palabre_js": "js",
    }
    for hook in LIVE_HOOKS + RESTART_HOOKS:
        assert callable(getattr(ExtensionManager, methods.get(hook, hook.removeprefix("palabre_")))), hook


def test_the_completion_and_start_up_hooks_run_through_their_typed_methods() -> None:
    @hookimpl
    def palabre_modify_completion_params(params: GenerationParams, prompt: str) -> GenerationParams:
        return params.model_copy(update={"max_new_tokens": len(prompt)})

    @hookimpl
    def palabre_modify_completion_prompt(prompt: str, params: GenerationParams) -> str:
        return f"{prompt}[{params.max_new_tokens}]"

    @hookimpl
    def palabre_routes(router: list[str]) -> None:
        router.append("/status")

    @hookimpl
    def palabre_js() -> str:
        return "() => {}"

    manager = manager_of(
        module(
            "done",
            palabre_modify_completion_params=palabre_modify_completion_params,
            palabre_modify_completion_prompt=palabre_modify_completion_prompt,
            palabre_routes=palabre_routes,
            palabre_js=palabre_js,
        ),
        module("other"),
    )
    manager.set_enabled(["done", "other"])
    warnings: list[str] = []
    params = manager.modify_completion_params(GenerationParams(), "abc", warnings)
    assert params.max_new_tokens == 3
    assert manager.modify_completion_prompt("abc", params, warnings) == "abc[3]"
    router: list[str] = []
    assert manager.add_routes("done", router, warnings) and router == ["/status"]
    assert not manager.add_routes("other", router, warnings)
    assert manager.js(warnings) == ["() => {}"] and manager.css(warnings) == []
    assert not manager.changes_replies() and warnings == []


def test_bundled_extensions_import_palabre_only_through_the_extension_api() -> None:
    import webui.core.extensions.api as api

    assert all(hasattr(api, name) for name in api.__all__)
    for path in sorted(BUNDLED.rglob("*.py")):
        imports = [
            line
            for line in path.read_text().splitlines()
            if line.lstrip().startswith(("from webui", "import webui"))
        ]
        assert all(line.lstrip().startswith("from webui.core.extensions.api import") for line in imports), (
            path
        )
