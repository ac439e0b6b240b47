"""Stored conversations driven through the Service: what is saved when, and that a kill loses nothing earlier."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader, ScriptedModel
from webui.config import PROJECT_ROOT
from webui.core.characters.store import Character, CharacterStore
from webui.core.chats.conversation import Conversations, chat_settings_for, params_for
from webui.core.chats.store import ChatStore
from webui.core.engine import EngineError
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, Service
from webui.core.templates.store import TemplateStore

PARAMS = GenerationParams()
CHATML = ChatSettings(mode="instruct")


@pytest.fixture
def chats(tmp_path: Path) -> Iterator[Conversations]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "scripted-chatml.gguf").write_text("Hello| there|.")
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates")
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=models,
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=templates,
        characters=CharacterStore(PROJECT_ROOT / "characters", tmp_path / "characters", templates),
    )
    service.load_model("scripted-chatml.gguf", "scripted")
    store = ChatStore(tmp_path / "palabre.db")
    yield Conversations(service, store)
    store.close()
    service.close()


def texts(chats: Conversations, conversation_id: int) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in chats.store.get(conversation_id).messages]


def test_send_saves_the_question_and_the_reply_with_its_model(chats: Conversations) -> None:
    conv = chats.store.create()
    reply = chats.send(conv.id, "Hi?", CHATML, PARAMS)
    assert "".join(c.text for c in reply) == "Hello there."
    assert texts(chats, conv.id) == [("user", "Hi?"), ("assistant", "Hello there.")]
    assert chats.store.get(conv.id).messages[-1].model == "scripted-chatml.gguf"
    assert chats.store.get(conv.id).title == "Hi?"


def test_regenerate_keeps_every_version(chats: Conversations) -> None:
    conv = chats.store.create()
    list(chats.send(conv.id, "Hi?", CHATML, PARAMS))
    model = chats.service.engine.require_model().model
    assert isinstance(model, ScriptedModel)
    model.pieces = ["Bonjour", "!"]
    list(chats.regenerate(conv.id, CHATML, PARAMS))
    last = chats.store.get(conv.id).messages[-1]
    assert last.alternatives == ("Hello there.", "Bonjour!") and last.content == "Bonjour!"
    # The regenerated reply was written from the history without the old reply.
    assert "Hello there." not in model.prompts[-1]


def test_continue_extends_the_saved_reply(chats: Conversations) -> None:
    conv = chats.store.create()
    list(chats.send(conv.id, "Hi?", CHATML, PARAMS))
    list(chats.continue_last(conv.id, CHATML, PARAMS))
    assert texts(chats, conv.id)[-1] == ("assistant", "Hello there.Hello there.")


def test_start_reply_with_forces_the_opening(chats: Conversations) -> None:
    conv = chats.store.create()
    reply = chats.send(conv.id, "Hi?", CHATML, PARAMS, start_with="Sure:")
    list(reply)
    assert reply.full_text == "Sure:Hello there."
    assert texts(chats, conv.id)[-1] == ("assistant", "Sure:Hello there.")


def test_a_stopped_reply_keeps_what_was_written(chats: Conversations) -> None:
    model = chats.service.engine.require_model().model
    assert isinstance(model, ScriptedModel)
    model.delay = 0.2
    conv = chats.store.create()
    reply = chats.send(conv.id, "Hi?", CHATML, PARAMS)
    iterator = iter(reply)
    assert next(iterator).text == "Hello"
    reply.cancel()
    list(iterator)
    assert texts(chats, conv.id) == [("user", "Hi?"), ("assistant", "Hello")]


def test_nothing_to_regenerate_is_a_clear_error(chats: Conversations) -> None:
    conv = chats.store.create()
    with pytest.raises(EngineError, match="no reply"):
        chats.regenerate(conv.id, CHATML, PARAMS)
    with pytest.raises(EngineError, match="empty"):
        chats.send(conv.id, "  ", CHATML, PARAMS)
    assert texts(chats, conv.id) == []


WRITER = """
import sys
from pathlib import Path
from webui.app import build_service
from webui.config import AppConfig
from webui.core.characters.store import Character, CharacterStore
from webui.core.chats.store import ChatStore
from webui.core.chats.conversation import Conversations, chat_settings_for, params_for
from webui.core.params import GenerationParams
from webui.core.service import ChatSettings

user_data, model = Path(sys.argv[1]), sys.argv[2]
service = build_service(AppConfig(user_data_dir=user_data))
service.load_model(model, settings={"n_ctx": 2048})
store = ChatStore(user_data / "palabre.db")
chats = Conversations(service, store)
conv = store.create()
questions = ["What is the capital of France?", "And of Italy?", "Write a long poem about the sea."]
for number, question in enumerate(questions):
    last = number == len(questions) - 1
    params = GenerationParams(temperature=0, max_new_tokens=400 if last else 24, ban_eos_token=last)
    for index, chunk in enumerate(chats.send(conv.id, question, ChatSettings(), params)):
        if last and index == 40:
            print("STREAMING", flush=True)
    print("DONE", number, flush=True)
"""


@pytest.mark.slow
def test_kill_during_a_streamed_reply_loses_no_earlier_message(
    tmp_path: Path, default_model_path: Path
) -> None:
    user_data = tmp_path / "user_data"
    (user_data / "models").mkdir(parents=True)
    (user_data / "models" / default_model_path.name).symlink_to(default_model_path)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(user_data), default_model_path.name],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in process.stdout:
        seen.append(line.strip())
        if line.startswith("STREAMING") or time.monotonic() > deadline:
            break
    assert seen[-1] == "STREAMING", seen
    time.sleep(0.7)  # let a periodic save of the partial reply happen
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    store = ChatStore(user_data / "palabre.db")
    try:
        (summary,) = store.conversations()
        messages = store.get(summary.id).messages
        roles = [m.role for m in messages]
        assert roles[:5] == ["user", "assistant", "user", "assistant", "user"]
        assert "Paris" in messages[1].content and messages[1].content.strip()
        assert messages[3].content.strip()
        assert messages[4].content == "Write a long poem about the sea."
        # The reply being written when the process died was saved as far as the last periodic save.
        assert len(messages) == 6 and len(messages[5].content) > 20
    finally:
        store.close()


def test_a_personality_starts_with_its_greeting_and_shapes_the_prompt(chats: Conversations) -> None:
    assert chats.service.characters is not None
    captain = chats.service.characters.load("Captain Barnacle")
    conv = chats.start("Captain Barnacle", mode="chat")
    assert [m.role for m in conv.messages] == ["assistant"]
    assert conv.messages[0].content == captain.greeting_for()
    assert "Matey" in conv.messages[0].content  # its own name for the user
    settings = chat_settings_for(captain, mode="chat")
    reply = chats.send(conv.id, "Ahoy!", settings, params_for(captain, PARAMS))
    list(reply)
    prompt = reply.stream.prompt.text
    assert prompt.startswith(captain.context_for().split("\n")[0])
    assert f"{captain.name}: {conv.messages[0].content}" in prompt
    assert prompt.rstrip().endswith(f"{captain.name}:")


def test_instruct_mode_uses_the_context_as_system_message_and_the_parameters(chats: Conversations) -> None:
    assert chats.service.characters is not None
    coder = chats.service.characters.load("Coder")
    settings = chat_settings_for(coder, mode="instruct")
    assert settings.system_message == "You are a helpful coding AI assistant. Answer in a concise way."
    params = params_for(coder, PARAMS)
    assert (params.temperature, params.repetition_penalty) == (0.01, 1.0)
    conv = chats.start("Coder")
    reply = chats.send(conv.id, "Sort a list in Python?", settings, params)
    list(reply)
    assert reply.stream.prompt.text.startswith(
        "<|im_start|>system\nYou are a helpful coding AI assistant. Answer in a concise way.<|im_end|>"
    )


def test_modelfile_messages_come_before_the_conversation(chats: Conversations) -> None:
    assert chats.service.characters is not None
    persona = Character(
        name="Tutor",
        context="Teach {{user}}.",
        example_messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}],
    )
    chats.service.characters.save(persona)
    conv = chats.start("Tutor")
    reply = chats.send(conv.id, "3+3?", chat_settings_for(persona), PARAMS)
    list(reply)
    text = reply.stream.prompt.text
    assert text.index("2+2?") < text.index("4.") < text.index("3+3?")
    assert [m.content for m in chats.store.get(conv.id).messages][:1] == ["3+3?"]
