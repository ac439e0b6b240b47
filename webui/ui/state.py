"""Per-browser-session state: the generations this session has running, so Stop cancels only its own."""

from __future__ import annotations

import threading
from typing import Any, Protocol

CHAT = "chat"
DEFAULT = "default"
NOTEBOOK = "notebook"


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class SessionJobs:
    """The running generation of each tab (chat, default, notebook) for one browser session.

    Kept in a ``gr.State`` (Gradio deep-copies the initial value per session; the copy starts empty), so two
    sessions never see each other's jobs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Cancellable] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionJobs:
        return SessionJobs()

    def start(self, slot: str, job: Cancellable) -> bool:
        """Record ``job`` as ``slot``'s generation; False (and nothing recorded) if one is already running."""
        with self._lock:
            if slot in self._running:
                return False
            self._running[slot] = job
            return True

    def busy(self, slot: str) -> bool:
        with self._lock:
            return slot in self._running

    def finish(self, slot: str, job: Cancellable) -> None:
        """Forget ``job`` (only if it is still ``slot``'s current one)."""
        with self._lock:
            if self._running.get(slot) is job:
                del self._running[slot]

    def owns(self, slot: str, job: Cancellable) -> bool:
        """Whether ``job`` is still ``slot``'s generation (False once finished or discarded)."""
        with self._lock:
            return self._running.get(slot) is job

    def discard(self, slot: str) -> None:
        """Stop ``slot``'s generation and forget it, so its remaining updates are not shown."""
        with self._lock:
            job = self._running.pop(slot, None)
        if job is not None:
            job.cancel()

    def cancel(self, slot: str) -> bool:
        """Stop ``slot``'s generation; False if none was running."""
        with self._lock:
            job = self._running.get(slot)
        if job is None:
            return False
        job.cancel()
        return True

    def cancel_all(self) -> None:
        """Stop everything this session runs (when its page closes)."""
        with self._lock:
            jobs = list(self._running.values())
        for job in jobs:
            job.cancel()


def cancel_session_jobs(jobs: Any) -> None:
    """``gr.State`` delete callback: a closed page stops its generations."""
    if isinstance(jobs, SessionJobs):
        jobs.cancel_all()
