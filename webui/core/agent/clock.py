"""The current date and time tool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from webui.core.agent.base import ToolSpec


class CurrentTime:
    spec = ToolSpec(
        name="current_datetime",
        description="The current local date, time, weekday and time zone.",
        parameters={"type": "object", "properties": {}},
        read_only=True,
    )

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now().astimezone()) -> None:
        self._now = now

    def run(self, arguments: Mapping[str, Any]) -> str:
        now = self._now()
        return f"{now.strftime('%A %Y-%m-%d %H:%M:%S')} ({now.tzname() or 'local time'}, {now.isoformat()})"
