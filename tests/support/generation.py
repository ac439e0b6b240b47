"""Prompts, settings and runs shared by the Transformers-family loader tests (plain, GPTQ, AWQ)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loaders.transformers import HfModel
from webui.config import PROJECT_ROOT
from webui.core.loader import CancelToken, Chunk
from webui.core.params import GenerationParams

CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
STORY_PROMPT = "Once upon a time"
GREEDY = GenerationParams(temperature=0, max_new_tokens=20)
SAMPLING = GenerationParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=30, seed=1234)


def run(model: HfModel, prompt: str, params: GenerationParams) -> list[Chunk]:
    """Every chunk ``model`` streams for ``prompt``."""
    return list(model.stream(prompt, params, CancelToken()))


def text_of(chunks: list[Chunk]) -> str:
    """The text of a stream of chunks."""
    return "".join(chunk.text for chunk in chunks)


def cli_generate(model_dir: Path, loader: str, prompt: str, user_data: Path) -> str:
    """``webui generate`` in a fresh process, the way a user runs it; returns its stdout."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "webui", "generate", "--model", str(model_dir), "--loader", loader),
            *("--prompt", prompt, "--temperature", "0", "--max-new-tokens", "20"),
            *("--user-data-dir", str(user_data)),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
