"""The command line as a user runs it: `python -m webui ...` in a subprocess, with the real default model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.config import make_config

pytestmark = pytest.mark.slow


def webui(user_data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PALABRE_USER_DATA": str(user_data)}
    return subprocess.run(
        [sys.executable, "-m", "webui", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        input=stdin,
    )


@pytest.fixture
def user_data(tmp_path: Path, default_model_path: Path) -> Path:
    make_config(tmp_path / "user_data", default_model_path)
    return tmp_path / "user_data"


def test_generate_prints_a_continuation(user_data: Path) -> None:
    result = webui(
        user_data,
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 0
    again = webui(
        user_data,
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    )
    assert again.stdout == result.stdout  # greedy is deterministic


def test_generate_streams_with_a_preset_and_seed(user_data: Path) -> None:
    args = (
        "generate",
        "--prompt",
        "Once upon a time",
        "--preset",
        "Creative",
        "--seed",
        "5",
        "--max-new-tokens",
        "12",
    )
    first, second = webui(user_data, *args, "--stream"), webui(user_data, *args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() != ""


def test_bad_model_is_one_clear_error_line(user_data: Path) -> None:
    result = webui(user_data, "generate", "--prompt", "x", "--model", "no-such-model.gguf")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: Model 'no-such-model.gguf' not found")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--temperature", "-3"), "temperature"),
        (("--preset", "Nope"), "No preset named 'Nope'"),
        (("--setting", "n_ctx=lots"), "n_ctx"),
        (("--setting", "oops"), "KEY=VALUE"),
    ],
)
def test_bad_arguments_are_clear_errors(user_data: Path, args: tuple[str, ...], message: str) -> None:
    result = webui(user_data, "generate", "--prompt", "x", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_models_list(user_data: Path) -> None:
    result = webui(user_data, "models", "list")
    assert result.returncode == 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout and "llama.cpp" in result.stdout


def test_terminal_chat_answers_in_instruct_mode(user_data: Path) -> None:
    result = webui(
        user_data,
        "chat",
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
        stdin="What is the capital of France?\n/exit\n",
    )
    assert result.returncode == 0, result.stderr
    assert 'template "ChatML"' in result.stderr
    assert "Paris" in result.stdout
