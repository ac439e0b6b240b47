"""ruff (lint + format) and mypy on the core, the API, the page and the loaders, as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cached_build import default_cache_root

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_core_and_api() -> None:
    # The cache lives outside the checkout, as the test models do: a fresh clone is checked in seconds instead
    # of 100 s (mypy compares each file's hash, so a changed file is checked again wherever the clone is).
    cache = default_cache_root() / "mypy"
    result = run("mypy", "--cache-dir", str(cache), "webui/core", "webui/api", "webui/ui", "loaders")
    assert result.returncode == 0, result.stdout + result.stderr
