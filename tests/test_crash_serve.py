"""Crashes lose nothing: the real `webui serve` is killed with SIGKILL while the page streams replies and saves
settings, then restarted, ``PALABRE_CRASH_KILLS`` times (default 12, about 80 s of the suite; set more for a
soak).

The page is driven through Gradio's own HTTP API (gradio_client calls the same Send and mode-change events a
browser triggers), so the process that saves is the real server. After each kill: the database passes
``PRAGMA integrity_check``; every message the page had finished showing is stored exactly once, every sent
message once; the settings file parses (the old or the new value). A failed model load leaves the loaded model
answering. Separate writer processes killed mid-write are in test_chats.py.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from tests.support.servers import Server
from webui.core.chats.store import ChatStore
from webui.core.settings import SETTINGS_FILE, load_settings
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("PALABRE_CRASH_KILLS", "12"))
MODES = ("chat", "chat-instruct")


def page_client(server: Server) -> Client:
    return Client(server.url, verbose=False, download_files=False, analytics_enabled=False)


def send_parameters(client: Client) -> list[dict[str, Any]]:
    """The Send event's inputs as Gradio describes them (name, label, the widget's default)."""
    info = client.view_api(return_format="dict", print_info=False)
    return list(info["named_endpoints"]["/send_tools"]["parameters"])


def send_args(parameters: list[dict[str, Any]], text: str, max_new_tokens: int) -> list[Any]:
    """The Send event's inputs as the page would give them: its widgets' defaults, a shorter reply."""
    args: list[Any] = []
    for parameter in parameters:
        name = parameter["parameter_name"]
        if name == "text":
            args.append({"text": text, "files": []})  # the message box takes text and files
        elif name == "start_with":
            args.append("")
        elif parameter["label"] == "max_new_tokens":
            args.append(max_new_tokens)
        else:
            args.append(parameter.get("parameter_default"))
    return args


def reply_text(chatbot: Any) -> str:
    """The last assistant message's text in the Chatbot's value."""
    last = [message for message in chatbot if message["role"] == "assistant"][-1]
    content = last["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def stored(db: Path) -> list[tuple[str, str]]:
    """(role, shown text) of every stored message, all conversations."""
    with ChatStore(db) as store:
        return [
            (message.role, message.content)
            for summary in store.conversations(limit=10_000)
            for message in store.get(summary.id).messages
        ]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def kill_now(server: Server) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    server.process = None


def keep_saving_modes(server: Server, stop: threading.Event, saved: list[str]) -> None:
    """The Mode radio changed again and again: each change makes the server rewrite settings.yaml."""
    try:
        client = page_client(server)
        number = 0
        while not stop.is_set():
            mode = MODES[number % 2]
            client.predict(mode, api_name="/remember_mode")
            saved.append(mode)
            number += 1
    except Exception:  # the server was killed under it: expected
        return


@pytest.fixture
def server(tmp_path: Path, default_model_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, default_model_path)
    yield running
    if running.process is not None:
        running.stop()


def test_sigkill_during_replies_and_saves_loses_no_finished_message(server: Server) -> None:
    db = server.config.user_data_dir / "palabre.db"
    settings = server.config.user_data_dir / SETTINGS_FILE
    rng = random.Random(20)
    finished: list[tuple[str, str]] = []  # (user text, reply) of exchanges the page showed to the end
    sent: list[str] = []  # every user message the page began to answer (saved before the reply starts)
    kills_mid_reply = 0
    parameters: list[dict[str, Any]] = []
    for cycle in range(KILLS):
        server.start()
        client = page_client(server)
        parameters = parameters or send_parameters(client)
        if cycle % 3 == 0:  # a finished exchange before the one that gets killed
            text = f"Cycle {cycle}: name a colour."
            chatbot = client.predict(*send_args(parameters, text, 12), api_name="/send_tools")[0]
            finished.append((text, reply_text(chatbot)))
            sent.append(text)
        stop_saving, modes_saved = threading.Event(), list[str]()
        saver = threading.Thread(
            target=keep_saving_modes, args=(server, stop_saving, modes_saved), daemon=True
        )
        saver.start()
        text = f"Cycle {cycle}: tell me a long story about the sea."
        job = client.submit(*send_args(parameters, text, 400), api_name="/send_tools")
        deadline = time.monotonic() + 60
        while len(job.outputs()) < 2 and not job.done() and time.monotonic() < deadline:
            time.sleep(0.02)  # until the reply streams (the user's message is saved before it starts)
        assert job.outputs(), f"cycle {cycle}: the page never answered"
        sent.append(text)
        time.sleep(rng.uniform(0.0, 1.0))
        kills_mid_reply += not job.done()
        kill_now(server)
        stop_saving.set()
        saver.join(timeout=30)

        assert integrity(db) == "ok", f"cycle {cycle}"
        messages = stored(db)
        users = Counter(content for role, content in messages if role == "user")
        assert users == Counter(sent), f"cycle {cycle}: sent messages lost or doubled"
        for user_text, reply in finished:
            position = messages.index(("user", user_text))
            assert messages[position + 1] == ("assistant", reply), f"cycle {cycle}: a finished reply changed"
        replies = [content for role, content in messages if role == "assistant"]
        assert len(replies) <= len(sent)  # at most one reply per message: nothing written twice
        current = load_settings(settings)
        assert current.warnings == (), current.warnings  # never half a file
        assert current.mode in ("instruct", *MODES)
        if modes_saved:
            assert current.mode in MODES
    print(f"\ncrash: {KILLS} kills survived ({kills_mid_reply} mid-reply), {len(sent)} messages, all intact")
    assert kills_mid_reply >= KILLS // 2  # most kills really hit a streaming reply


def test_a_failed_load_leaves_the_loaded_model_answering(server: Server) -> None:
    server.start()
    models = server.config.models_dir
    (models / "broken.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    (models / "truncated.gguf").write_bytes(Path(models / DEFAULT_MODEL_FILE).read_bytes()[: 1 << 20])
    with httpx.Client(base_url=f"{server.url}v1", timeout=120) as client:
        for name, status in (("broken.gguf", 400), ("truncated.gguf", 400), ("missing.gguf", 404)):
            refused = client.post("/internal/model/load", json={"model": name})
            assert refused.status_code == status, refused.text
            assert name in refused.json()["error"]["message"]
            assert client.get("/internal/model").json()["name"] == DEFAULT_MODEL_FILE
            reply = client.post(
                "/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == DEFAULT_MODEL_FILE
