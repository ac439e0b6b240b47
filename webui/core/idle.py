"""Unloading an idle model: after ``--idle-unload`` minutes with nothing running or queued, or after the idle
time the last Ollama request asked for with ``keep_alive``, the model is freed; the next request naming it
loads it again."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_TICK_S = 5.0  # the longest the watcher sleeps before looking again (a new limit wakes it at once)
MIN_TICK_S = 0.05


class IdleUnloader:
    """A thread that unloads the model once it has been idle for the current limit.

    ``idle_seconds()`` says how long the loaded model has had nothing running or waiting (None while busy or
    when no model is loaded); ``unload_if_idle(s)`` unloads only if that is still at least ``s`` when it
    runs, so a request that slips in keeps its model.
    """

    def __init__(
        self,
        unload_if_idle: Callable[[float], bool],
        idle_seconds: Callable[[], float | None],
        default_s: float | None,
    ) -> None:
        if default_s is not None and default_s <= 0:
            raise ValueError("The idle time before unloading must be positive.")
        self._unload_if_idle = unload_if_idle
        self._idle_seconds = idle_seconds
        self.default_s = default_s
        self._override: float | None = None  # set by keep_alive; None: the default applies
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def limit_s(self) -> float | None:
        """Idle seconds before unloading; None: never."""
        with self._lock:
            limit = self._override if self._override is not None else self.default_s
        return None if limit is None or math.isinf(limit) else limit

    def keep_alive(self, seconds: float | None) -> None:
        """How long the model stays after the current request, as Ollama's keep_alive: None: the default
        (``--idle-unload``), negative: forever, 0: unload as soon as nothing runs or waits."""
        with self._lock:
            self._override = None if seconds is None else (math.inf if seconds < 0 else float(seconds))
        self._wake.set()

    def expires_in(self) -> float | None:
        """Seconds until the model would be unloaded if nothing else came (None: never)."""
        limit = self.limit_s
        if limit is None:
            return None
        idle = self._idle_seconds()
        return limit if idle is None else max(0.0, limit - idle)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="palabre-idle-unload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def check(self) -> float:
        """Unload if the limit has passed; the seconds to wait before looking again."""
        limit = self.limit_s
        if limit is None:
            return MAX_TICK_S
        idle = self._idle_seconds()
        if idle is None:  # busy or nothing loaded: the idle time starts when that ends
            return min(MAX_TICK_S, max(MIN_TICK_S, limit / 10))
        if idle >= limit:
            if self._unload_if_idle(limit):
                log.info("Unloaded the model after %.0f idle seconds.", idle)
            return min(MAX_TICK_S, max(MIN_TICK_S, limit / 10))
        return min(MAX_TICK_S, max(MIN_TICK_S, limit - idle))

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                wait = self.check()
            except Exception:  # an unload that fails must not end the watcher; the next look tries again
                log.exception("Unloading the idle model failed")
                wait = MAX_TICK_S
            self._wake.wait(wait)
            self._wake.clear()
