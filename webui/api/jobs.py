"""The generations the API has running or queued, by request id, each with the client that started it."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the auth middleware (webui/api/auth.py) saw it: which key, and whether it is an
    admin's. Without the middleware, or with no admin key configured, every caller is an admin."""

    client: str | None = None  # a digest prefix of the request's key; None without a key
    admin: bool = True

    @classmethod
    def of(cls, state: object) -> Caller:
        """The caller a ``request.state`` describes."""
        return cls(getattr(state, "client", None), bool(getattr(state, "admin", True)))

    def owns(self, owner: str | None) -> bool:
        """True when a job started by ``owner`` is this caller's; callers without a key count as one client,
        as nothing tells them apart."""
        if owner is None or self.client is None:
            return owner is None and self.client is None
        # The id is derived from a key: compared as one, in constant time.
        return hmac.compare_digest(owner, self.client)

    def may_stop(self, owner: str | None) -> bool:
        """An admin stops anyone's generations; any other caller only its own."""
        return self.admin or self.owns(owner)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class ApiJobs:
    """The generations the API has running or queued, by request id, each with the client that started it,
    so ``POST stop`` can cancel them and the queue view can tell a caller's own jobs from others'.

    The OpenAI and Ollama serving objects register each request's jobs (``add(id, started, owner=...)``) and
    remove them when the response ends (``discard``). Page generations are never here, so stop never touches
    them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[Cancellable]] = {}
        self._owners: dict[str, str | None] = {}  # request id -> Caller.client of the request

    def add(self, job_id: str, job: Cancellable, owner: str | None = None) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, []).append(job)
            self._owners.setdefault(job_id, owner)

    def discard(self, job_id: str, job: Cancellable | None = None) -> None:
        """Forget ``job`` (or every job under ``job_id``)."""
        with self._lock:
            jobs = self._jobs.get(job_id, [])
            remaining = [j for j in jobs if job is not None and j is not job]
            if remaining:
                self._jobs[job_id] = remaining
            else:
                self._jobs.pop(job_id, None)
                self._owners.pop(job_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def belongs_to(self, job_id: str, caller: Caller) -> bool:
        """True when ``caller`` started the request ``job_id`` (False for one not registered here)."""
        with self._lock:
            if job_id not in self._owners:
                return False
            owner = self._owners[job_id]
        return caller.owns(owner)

    def cancel(self, job_id: str | None = None, caller: Caller | None = None) -> int:
        """Cancel one request's jobs, or all of them, of those ``caller`` may stop (None: anyone's); how many
        were cancelled."""
        with self._lock:
            named = list(self._jobs) if job_id is None else [job_id]
            ids = [
                i
                for i in named
                if i in self._jobs and (caller is None or caller.may_stop(self._owners.get(i)))
            ]
            jobs = [job for i in ids for job in self._jobs.pop(i)]
            for i in ids:
                self._owners.pop(i, None)
        for job in jobs:
            job.cancel()
        return len(jobs)
