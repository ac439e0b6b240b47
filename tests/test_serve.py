"""`webui serve` start-up: which model it loads (flag, remembered settings, default) and that it answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.config import make_config
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(user_data: Path, *args: str) -> Iterator[tuple[dict[str, object], subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webui",
            "serve",
            "--port",
            str(port),
            "--user-data-dir",
            str(user_data),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        process.stderr.read() if process.stderr else "server did not start"
                    ) from None
                time.sleep(0.3)
        yield health, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def user_data(tmp_path: Path, default_model_path: Path, gemma_model_path: Path) -> Path:
    make_config(tmp_path / "user_data", default_model_path, gemma_model_path)
    return tmp_path / "user_data"


def test_serve_loads_the_default_model(user_data: Path) -> None:
    with serving(user_data) as (health, _):
        assert health == {"status": "ok", "model": DEFAULT_MODEL_FILE, "loader": "llama.cpp"}


def test_serve_loads_the_model_the_page_last_used(user_data: Path, gemma_model_path: Path) -> None:
    (user_data / "settings.yaml").write_text(
        f"model: {gemma_model_path.name}\nloader: llama.cpp\nloader_settings:\n  n_ctx: 1024\n"
    )
    with serving(user_data) as (health, _):
        assert health["model"] == gemma_model_path.name


def test_a_stale_settings_file_falls_back_to_the_default(user_data: Path) -> None:
    (user_data / "settings.yaml").write_text("model: deleted.gguf\nloader_settings: {n_ctx: -5}\n")
    with serving(user_data) as (health, _):
        assert health["model"] == DEFAULT_MODEL_FILE


def test_a_broken_remembered_model_does_not_stop_the_server(user_data: Path) -> None:
    (user_data / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    (user_data / "settings.yaml").write_text("model: broken.gguf\n")
    with serving(user_data) as (health, process):
        assert health["model"] == DEFAULT_MODEL_FILE
    assert process.stderr is not None and "could not be loaded again" in process.stderr.read()


def test_an_explicit_bad_model_is_one_clear_error(user_data: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webui", "serve", "--user-data-dir", str(user_data), "--model", "nope.gguf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Model 'nope.gguf' not found")
