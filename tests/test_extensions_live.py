"""Extensions through the real parts: a real server with the default model, a third-party extension installed
as a real package (entry point ``palabre.extensions``), the real model summarizing, and the Chat tab's
handlers showing a failing extension's error while the reply completes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.servers import Server
from webui.app import build_characters, build_service
from webui.config import PROJECT_ROOT
from webui.core.params import GenerationParams, field_specs
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings
from webui.core.settings import SettingsFile, load_settings
from webui.provision import DEFAULT_MODEL_FILE

DATA = Path(__file__).parent / "data" / "extensions"
SHOUT_MARK = "[shout-extension-was-here]"
PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
LORE = "The Silver Key opens the vault under the clock tower of Varn."


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def shout_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test package palabre-shout, built and installed with pip into a folder (its entry point
    declares the extension ``shout``); returns the folder to put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("shout")
    source = root / "src"
    shutil.copytree(DATA / "palabre_shout", source)
    target = root / "site"
    subprocess.run(
        [*PIP_INSTALL, "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


def with_path(target: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(target), str(PROJECT_ROOT)])}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path, shout_package: Path
) -> Iterator[Server]:
    """``webui serve --extensions lorebook shout boom example`` with the Archivist card (it has a character_book)
    imported, and the failing ``boom`` extension in user_data/extensions."""
    root = tmp_path_factory.mktemp("extensions-server")
    server = Server(
        root,
        default_model_path,
        extra_args=["--extensions", "lorebook", "shout", "boom", "example"],
        extra_env=with_path(shout_package),
    )
    shutil.copytree(DATA / "boom", server.config.user_extensions_dir / "boom")
    build_characters(server.config).import_with_notes(DATA / "lore_card.json")
    server.start()
    yield server
    server.stop()


def chat_prompt(server: Server, text: str) -> dict[str, Any]:
    return post(
        server.url + "v1/internal/chat-prompt",
        {"character": "Archivist", "messages": [{"role": "user", "content": text}]},
    )


def test_lorebook_puts_the_character_books_entry_in_the_prompt_only_when_its_key_is_mentioned(
    server: Server,
) -> None:
    with_key = chat_prompt(server, "What does the silver key open?")
    assert LORE in with_key["prompt"]
    assert with_key["extensions"] == ["lorebook", "shout", "boom", "example"]
    without = chat_prompt(server, "What time is it?")
    assert LORE not in without["prompt"] and "keeps the archive" in without["prompt"]
    assert "night market" not in chat_prompt(server, "Tell me of the Moth Queen")["prompt"]  # disabled


def test_an_installed_packages_extension_is_listed_and_its_hooks_run(
    server: Server, shout_package: Path
) -> None:
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "webui",
            "extensions",
            "list",
            "--user-data-dir",
            str(server.config.user_data_dir),
        ],
        env={**os.environ, **with_path(shout_package)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "shout  (package, disabled)  Shout: marks the prompt" in listing
    assert "hooks: modify_prompt, modify_chunk" in listing
    assert "lorebook  (bundled, disabled)" in listing and "boom  (user, disabled)" in listing

    assert chat_prompt(server, "Hello")["prompt"].startswith(SHOUT_MARK)
    reply = post(
        server.url + "v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0},
    )
    content = reply["choices"][0]["message"]["content"]
    assert any(c.isalpha() for c in content) and content == content.upper()  # its chunk hook ran


def test_a_failing_extension_is_named_and_the_reply_still_completes_through_the_api(server: Server) -> None:
    built = chat_prompt(server, "What does the silver key open?")
    assert len(built["warnings"]) == 1
    assert built["warnings"][0].startswith('Extension "boom" failed in modify_history: RuntimeError: boom')
    assert LORE in built["prompt"]  # the other extensions' effects stay
    reply = post(
        server.url + "v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0},
    )
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert 'Extension "boom" failed in modify_history' in server.log.read_text(errors="replace")


def test_api_clients_see_a_failing_extensions_name_in_a_header_and_an_extra_field(server: Server) -> None:
    import ollama
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{server.url}v1", max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]
    raw = client.chat.completions.with_raw_response.create(
        model="", messages=messages, max_tokens=6, temperature=0
    )
    reply = raw.parse()
    assert reply.choices[0].message.content  # the reply completed
    (warning,) = (reply.model_extra or {})["palabre_warnings"]
    assert warning.startswith('Extension "boom" failed in modify_history: RuntimeError: boom')
    assert json.loads(raw.headers["X-Palabre-Warnings"]) == [warning]

    chunks = list(
        client.chat.completions.create(model="", messages=messages, max_tokens=6, temperature=0, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert (chunks[-1].model_extra or {})["palabre_warnings"] == [warning]
    assert all("palabre_warnings" not in (c.model_extra or {}) for c in chunks[:-1])

    ollama_client = ollama.Client(host=server.url.rstrip("/"))
    answer = ollama_client.chat(model="default", messages=messages, options={"num_predict": 6})
    assert answer.message.content and answer.done
    once = {"model": "default", "messages": messages, "stream": False, "options": {"num_predict": 6}}
    assert post(server.url + "api/chat", once)["palabre_warnings"] == [warning]
    streamed = [
        json.loads(line)
        for line in urllib.request.urlopen(
            urllib.request.Request(
                server.url + "api/chat",
                data=json.dumps({**once, "stream": True}).encode(),
            ),
            timeout=120,
        )
    ]
    assert streamed[-1]["done"] and streamed[-1]["palabre_warnings"] == [warning]


@pytest.mark.browser
def test_the_page_shows_the_extensions_their_tab_and_a_failing_ones_name(
    server: Server, browser: Any
) -> None:
    from tests.support.servers import open_page

    with urllib.request.urlopen(server.url + "v1/extensions/example/status", timeout=30) as response:
        assert json.loads(response.read())["extension"] == "example"  # its routes hook
    with open_page(browser, server.url) as page:
        page.wait_for_function("() => document.body.dataset.exampleExtension === 'loaded'")  # its js hook
        page.locator("#tab-extension-example-button").click()
        assert "drawn by the example extension" in page.locator("#example-ext-note").inner_text()
        page.get_by_role("tab", name="Session").click()
        enabled = page.locator("#extensions-enabled")
        for name in ("lorebook", "shout", "boom", "example"):
            assert enabled.get_by_label(name).is_checked()
        assert not enabled.get_by_label("summary_memory").is_checked()
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input textarea").fill("Hi")
        page.locator("#chat-send").click()
        toast = page.locator("[data-testid='toast-body']").filter(has_text='Extension "boom" failed')
        toast.first.wait_for()
        page.wait_for_function(
            "() => document.querySelector('#chat-status')?.innerText.includes('tokens/s')"
        )  # the reply completed
        assert page.locator('#chatbot [data-testid="bot"]').last.inner_text().strip()


@pytest.mark.browser
def test_the_lorebook_tab_saves_an_entry_typed_in_the_page(server: Server, browser: Any) -> None:
    from tests.support.servers import open_page

    with open_page(browser, server.url) as page:
        page.locator("#tab-extension-lorebook-button").click()
        book = page.locator("#lorebook-book input")
        book.fill("harbour")
        book.press("Enter")
        page.locator("#lorebook-status").filter(has_text="is a new lorebook").wait_for()
        page.locator("#lorebook-keys textarea").fill("ferry, boatman")
        page.locator("#lorebook-content textarea").fill("The ferry crosses the river at dawn.")
        page.locator("#lorebook-save").click()
        page.locator("#lorebook-status").filter(has_text='Entry 1 saved in "harbour".').wait_for()
        saved = server.config.user_data_dir / "lorebooks" / "harbour.yaml"
        assert "The ferry crosses the river at dawn." in saved.read_text()
        page.locator("#lorebook-delete").click()  # asks first
        page.locator("#lorebook-confirm-delete").click()
        page.locator("#lorebook-status").filter(has_text="Entry 1 deleted.").wait_for()
    assert "ferry" not in saved.read_text()


# -- in-process, with the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Any]:
    """A Service with the default model, the bundled extensions and the failing ``boom`` one."""
    root = tmp_path_factory.mktemp("extensions-live")
    config = replace(make_config(root / "user_data", default_model_path), extensions=())
    shutil.copytree(DATA / "boom", config.user_extensions_dir / "boom")
    service = build_service(config)
    service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
    yield service, config
    service.close()


def test_summary_memory_keeps_a_summary_from_the_model_instead_of_dropping_turns(live: Any) -> None:
    service, _ = live
    history = []
    for index in range(10):
        history += [
            ChatMessage("user", f"My pet number {index} is a parrot called Pip{index}. " * 2),
            ChatMessage("assistant", f"Noted: Pip{index} the parrot. " * 2),
        ]
    history.append(ChatMessage("user", "Which pets do I have?"))
    params = GenerationParams(truncation_length=400, max_new_tokens=80)
    settings = ChatSettings(template="ChatML")
    service.extensions.set_enabled([])
    plain = service.build_chat_prompt(history, settings, params)
    assert plain.dropped_messages > 0 and "Summary of the earlier conversation" not in plain.text

    service.extensions.set_enabled(["summary_memory"])
    service.extensions.update_settings("summary_memory", {"summary_tokens": 24, "block_turns": 4})
    try:
        summarized = service.build_chat_prompt(history, settings, params)
        again = service.build_chat_prompt(history, settings, params)
    finally:
        service.extensions.set_enabled([])
    assert summarized.warnings == ()
    assert "Summary of the earlier conversation:" in summarized.text
    assert summarized.dropped_messages == 0 and summarized.prompt_tokens <= 320
    summary = summarized.text.split("Summary of the earlier conversation:")[1].split("<|im_end|>")[0]
    assert len(summary.strip()) > 10  # the model wrote something
    assert again.text == summarized.text  # cached: the same summary, the same prompt


def test_the_context_meter_never_waits_for_a_summary_and_shows_one_once_it_is_made(live: Any) -> None:
    from webui.ui.helpers import context_meter

    service, _ = live
    shown = []
    for index in range(10):
        shown += [
            {"role": "user", "content": f"My boat number {index} is called Wave{index}. " * 2},
            {"role": "assistant", "content": f"Noted: the boat Wave{index}. " * 2},
        ]
    shown.append({"role": "user", "content": "Which boats do I have?"})
    params = GenerationParams(truncation_length=400, max_new_tokens=80)
    settings = ChatSettings(template="ChatML")
    service.extensions.set_enabled(["summary_memory"])
    service.extensions.update_settings("summary_memory", {"summary_tokens": 24, "block_turns": 4})
    try:
        before = service.engine.last_stats
        meter = context_meter(service, shown, settings, params)
        assert service.engine.last_stats is before  # the model was not asked for a summary
        assert "no longer fit and are left out" in meter  # shown truncated until a summary exists
        history = [ChatMessage(m["role"], m["content"]) for m in shown]
        built = service.build_chat_prompt(history, settings, params)  # as a reply would: summarizes
        made = service.engine.last_stats
        assert made is not before and "Summary of the earlier conversation:" in built.text
        meter = context_meter(service, shown, settings, params)
        assert service.engine.last_stats is made
        assert f"**{built.prompt_tokens:,} / 400**" in meter and "left out" not in meter  # the cached one
    finally:
        service.extensions.set_enabled([])


def test_the_chat_tab_shows_a_failing_extensions_name_and_the_reply_completes(live: Any) -> None:
    from webui.ui.chat_events import ChatHandlers
    from webui.ui.convert import NO_PERSONALITY, widget_values
    from webui.ui.parameters_tab import ParametersTab
    from webui.ui.state import SessionJobs

    service, _ = live
    assert service.extensions.set_enabled(["boom", "example"]) == []
    service.extensions.update_settings("example", {"signature": " (example)"})
    handlers = ChatHandlers(service, ParametersTab(service))
    params = widget_values(field_specs(), GenerationParams(max_new_tokens=8, temperature=0))
    values = [NO_PERSONALITY, "instruct", "", "Assistant", "", "", "", "ChatML", *params]
    try:
        with pytest.warns(UserWarning, match='Extension "boom" failed in modify_history'):
            updates = list(handlers.send("Hello!", "", None, SessionJobs(), *values))
    finally:
        service.extensions.set_enabled([])
    conversation_id, history, _, _, status = updates[-1]
    assert 'Extension "boom"' in status
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[-1]["content"].endswith(" (example)")  # the reply completed, through the other extension
    stored = service.chats.get(conversation_id).messages
    assert stored[-1].content == history[-1]["content"]


def test_the_extensions_panel_enables_and_saves_settings_in_settings_yaml(live: Any) -> None:
    from webui.ui.extensions_panel import ExtensionsPanel

    service, config = live
    settings_file = SettingsFile(config.user_data_dir / "settings.yaml")
    panel = ExtensionsPanel(service.extensions, settings_file)
    _, status = panel.enable(["authors_note", "example"])
    assert service.extensions.enabled == ("authors_note", "example")
    assert "Restart the server to show the tabs, routes, CSS or JS of: example" in status
    assert (
        panel.save_settings("authors_note", "Stay in character.", 2, "user")
        == "Settings of authors_note saved."
    )
    with pytest.warns(UserWarning, match="depth"):
        assert panel.save_settings("authors_note", "x", -1, "user").startswith("⚠️")
    saved = load_settings(settings_file.path)
    assert saved.extensions == ["authors_note", "example"]
    assert saved.extension_settings["authors_note"] == {
        "text": "Stay in character.",
        "depth": 2,
        "role": "user",
    }
    built = service.build_chat_prompt(
        [ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c")],
        ChatSettings(template="ChatML"),
        GenerationParams(),
    )
    assert "<|im_start|>user\nStay in character.<|im_end|>\n<|im_start|>assistant\nb" in built.text
    panel.enable([])
    assert load_settings(settings_file.path).extensions == []
