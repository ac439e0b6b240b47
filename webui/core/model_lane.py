"""One loaded model's work: its own worker thread runs its loads, unloads and generations in order.

The Engine keeps one ModelLane per loaded model, so a generation on one model never waits for another model's
to end. A model that decodes several generations together (``ParallelModel``, e.g. llama.cpp with parallel
slots) gets up to ``parallel`` of them at once, each streamed by its own thread; the next one to start is the
oldest of the source (page or API) with fewer running, so neither side waits behind a queue full of the
other's. Loads and unloads wait until every running generation of the lane has ended. Any other model runs one
generation at a time, in order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from webui.core.loader import Chunk, GenerationStats, LoadedModel, LoaderError

if TYPE_CHECKING:
    from webui.core.engine_types import GenerationJob, LoadedState

Activity = Literal["idle", "generating", "loading", "unloading"]

END = object()  # the last item of a job's stream


@runtime_checkable
class ParallelModel(Protocol):
    """A loaded model that decodes up to ``parallel`` generations together (its capabilities say parallel)."""

    parallel: int


@dataclass(frozen=True)
class _Tick:
    """A generation's turn on the worker: it starts the next waiting job submitted before ``epoch`` ended."""

    epoch: int


class ModelLane:
    """The jobs of one model name: waiting and running generations, and the loads and unloads between them.

    ``stream_into(job, model)`` runs one generation (the Engine's); a loader's error, or a job whose model is
    gone, reaches the job's reader as ``error`` (the Engine's EngineError).
    """

    def __init__(
        self,
        name: str,
        stream_into: Callable[[GenerationJob, LoadedModel], None],
        error: type[Exception],
    ) -> None:
        self.name = name
        self.state: LoadedState | None = None
        self.loading = False
        self.last_stats: GenerationStats | None = None
        self.latest: GenerationJob | None = None  # the one started last (stats set before its end)
        self._stream_into = stream_into
        self._error = error
        self._jobs: queue.Queue[Callable[[], None] | _Tick | None] = queue.Queue()
        # The generations submitted and not yet started, in order (dicts keep insertion order), and the ones
        # running; guarded by lock so that a cancel and the worker never both take a queued job.
        self.lock = threading.Lock()
        self._ended = threading.Condition(self.lock)  # notified when a running generation ends
        self.pending: dict[str, GenerationJob] = {}
        self._epochs: dict[str, int] = {}  # job id -> the epoch it was submitted in
        self.running: dict[str, GenerationJob] = {}
        self._epoch = 0  # moves on with every load, unload or other task: jobs never jump over one
        self.activity: Activity = "idle"
        self.last_active = time.monotonic()
        self.closed = False
        self._worker = threading.Thread(target=self._run, name=f"palabre-lane-{name}", daemon=True)
        self._worker.start()

    # -- worker -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            task = self._jobs.get()
            if isinstance(task, _Tick):
                self._start_next(task.epoch)
                continue
            self._drain()
            if task is None:
                return
            task()

    def _drain(self) -> None:
        """Wait until no generation runs (before a load, unload or check that needs the model to itself)."""
        with self._ended:
            while self.running:
                self._ended.wait()

    def slots(self) -> int:
        """Generations the loaded model runs at once."""
        return slots_of(self.state)

    def _start_next(self, epoch: int) -> None:
        """Start the next waiting generation once a slot is free (at once, inline, for a one-at-a-time model)."""
        slots = self.slots()
        with self._ended:
            while len(self.running) >= slots:
                self._ended.wait()
            job = self._next_job(epoch)
            if job is None:
                return  # withdrawn while queued (its stream has ended), or started by an earlier turn
            del self.pending[job.id]
            self._epochs.pop(job.id, None)
            self.running[job.id] = job
            self.latest = job
            self.activity = "generating"
        if slots == 1:
            self._generate(job)
        else:
            threading.Thread(
                target=self._generate, args=(job,), name=f"palabre-{job.id}", daemon=True
            ).start()

    def _next_job(self, epoch: int) -> GenerationJob | None:
        """The oldest waiting job of the source with fewer running ones (called with the lock held)."""
        waiting = [job for job in self.pending.values() if self._epochs.get(job.id, 0) <= epoch]
        if not waiting:
            return None
        running = [job.source for job in self.running.values()]
        return min(waiting, key=lambda job: running.count(job.source))  # min keeps the oldest among equals

    def call(self, fn: Callable[[], Any], activity: Activity | None = None) -> Any:
        """Run ``fn`` on the worker (after the jobs queued before it) and return its result.

        With ``activity`` the queue shows it while it runs and it counts as use of the model.
        """
        future: Future[Any] = Future()

        def task() -> None:
            if activity is not None:
                self.activity = activity
            try:
                try:
                    result = fn()
                finally:  # before the caller wakes: whoever reads status() after load() sees it done
                    if activity is not None:
                        self.activity = "idle"
                        self.last_active = time.monotonic()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        with self.lock:
            self._epoch += 1
            self._jobs.put(task)
        return future.result()

    def stop(self) -> None:
        """End the worker once the jobs queued before have run (the lane is not used again)."""
        self.closed = True
        self._jobs.put(None)

    def join(self, timeout: float) -> None:
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=timeout)

    # -- generations --------------------------------------------------------------------------------------

    def enqueue(self, job: GenerationJob) -> None:
        """Queue ``job`` (the caller checked the queue's limit, holding ``lock``)."""
        self.pending[job.id] = job
        self._epochs[job.id] = self._epoch
        self._jobs.put(_Tick(self._epoch))

    def withdraw(self, job: GenerationJob) -> bool:
        """Take ``job`` off the queue if it has not started; True if it was waiting."""
        with self.lock:
            if self.pending.pop(job.id, None) is None:
                return False  # running (its token stops it) or already finished
            self._epochs.pop(job.id, None)
        return True

    def busy(self) -> bool:
        """Whether a generation, load or unload runs or waits here."""
        with self.lock:
            return bool(self.pending or self.running or self.activity != "idle")

    def idle_seconds(self) -> float | None:
        """How long nothing has run or waited (None while a generation, load or unload runs or waits)."""
        with self.lock:
            if self.pending or self.running or self.activity != "idle":
                return None
            return max(0.0, time.monotonic() - self.last_active)

    def _generate(self, job: GenerationJob) -> None:
        """Run ``job`` (already moved from waiting to running by ``_start_next``)."""
        try:
            if job.token.cancelled:
                job.finish_reason = "cancelled"
                job._put(Chunk(text="", finish_reason="cancelled"))
                return
            state = self.state
            if state is None:
                raise self._error("No model is loaded.")
            self._stream_into(job, state.model)
            if job.stats is not None:
                self.last_stats = job.stats
        except LoaderError as exc:
            job._put(self._error(str(exc)))
        except BaseException as exc:
            job._put(exc)
        finally:
            with self.lock:
                self.running.pop(job.id, None)
                if not self.running:
                    self.activity = "idle"
                self.last_active = time.monotonic()
                self._ended.notify_all()
            job._put(END)


def slots_of(state: LoadedState | None) -> int:
    """Generations a loaded model runs at once (1 for none, or for a model without parallel slots)."""
    if state is None or not state.capabilities.parallel or not isinstance(state.model, ParallelModel):
        return 1
    return max(1, int(state.model.parallel))
