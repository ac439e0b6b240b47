"""Unloading idle models: after ``--idle-unload`` minutes with nothing running or queued, or after the idle
time the last Ollama request for it asked for with ``keep_alive``, a model is freed (each loaded model on its
own clock); the next request naming it loads it again."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

MAX_TICK_S = 5.0  # the longest the watcher sleeps before looking again (a new limit wakes it at once)
MIN_TICK_S = 0.05


class IdleUnloader:
    """A thread that unloads each loaded model once it has been idle for its current limit.

    ``loaded()`` names the loaded models; ``idle_seconds(model)`` says how long that model has had nothing
    running or waiting (None while busy or when it is not loaded); ``unload_if_idle(model, s)`` unloads it only
    if that is still at least ``s`` when it runs, so a request that slips in keeps its model. Every model has
    its own limit: ``--idle-unload`` (``default_s``), or what the last request for it asked with keep_alive.
    """

    def __init__(
        self,
        unload_if_idle: Callable[[str, float], bool],
        idle_seconds: Callable[[str], float | None],
        loaded: Callable[[], Sequence[str]],
        default_s: float | None,
    ) -> None:
        if default_s is not None and default_s <= 0:
            raise ValueError("The idle time before unloading must be positive.")
        self._unload_if_idle = unload_if_idle
        self._idle_seconds = idle_seconds
        self._loaded = loaded
        self.default_s = default_s
        self._overrides: dict[str, float] = {}  # set by keep_alive, per model; absent: the default applies
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def limit_s(self, model: str) -> float | None:
        """Idle seconds before ``model`` is unloaded; None: never."""
        with self._lock:
            limit = self._overrides.get(model, self.default_s)
        return None if limit is None or math.isinf(limit) else limit

    def keep_alive(self, seconds: float | None, model: str) -> None:
        """How long ``model`` stays after the current request, as Ollama's keep_alive: None: the default
        (``--idle-unload``), negative: forever, 0: unload as soon as nothing runs or waits."""
        with self._lock:
            if seconds is None:
                self._overrides.pop(model, None)
            else:
                self._overrides[model] = math.inf if seconds < 0 else float(seconds)
        self._wake.set()

    def expires_in(self, model: str) -> float | None:
        """Seconds until ``model`` would be unloaded if nothing else came (None: never)."""
        limit = self.limit_s(model)
        if limit is None:
            return None
        idle = self._idle_seconds(model)
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
        """Unload every model whose limit has passed; the seconds to wait before looking again."""
        return min((self._check(model) for model in self._loaded()), default=MAX_TICK_S)

    def _check(self, model: str) -> float:
        limit = self.limit_s(model)
        if limit is None:
            return MAX_TICK_S
        idle = self._idle_seconds(model)
        if idle is None:  # busy or not loaded: the idle time starts when that ends
            return min(MAX_TICK_S, max(MIN_TICK_S, limit / 10))
        if idle >= limit:
            if self._unload_if_idle(model, limit):
                log.info("Unloaded %s after %.0f idle seconds.", model, idle)
                with self._lock:
                    self._overrides.pop(model, None)  # a keep_alive lasts until its model is unloaded
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
