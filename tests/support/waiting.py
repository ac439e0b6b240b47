"""Polling helpers for tests that wait on a real server or page."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], what: str, within: float = 60) -> Any:
    """``check()``'s first truthy value, polled for a bounded time; AssertionError naming ``what`` if none."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")
