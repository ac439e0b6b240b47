"""The page follows the server: loads, unloads and idle unloads made elsewhere show without a reload.

A ``gr.Timer`` asks the engine every LIVE_STATUS_INTERVAL_S seconds for its status (``Engine.status()``: a few
attribute reads, no wait on the worker) and compares it with what this browser session last showed (a
fingerprint in ``gr.State``). The tick's outputs are hidden components only: Gradio draws its progress timer over
every visible output of a running event, so a tick that named the status lines would make them flicker every
2 s even when it changes nothing. Only a change of state writes the new text into a hidden box, and that box's
change event (rare: a load, an unload, a generation starting or ending elsewhere) writes the status lines. An
unchanged state answers ``gr.skip()``, so an idle page costs one tiny request per tick and nothing is redrawn.
While this session streams a reply both steps leave the page alone: the stream owns its status line. The ticks
bypass Gradio's queue (``queue=False``), so they never wait behind a generation nor hold one up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.core.service import EngineStatus, IdleUnload, Service
from webui.ui.state import CHAT, DEFAULT, NOTEBOOK, SessionJobs

if TYPE_CHECKING:
    from webui.ui.model_tab import ModelTab

# Loads take one to tens of seconds and idle unloads come after minutes: a 2 s tick shows "Loading…" for all but
# the quickest loads and follows any change within 2 s, for one small request per open page every 2 s (about
# 1 ms of server time; well under 0.1% of a core).
LIVE_STATUS_INTERVAL_S = 2.0

Fingerprint = tuple[Any, ...]


def duration_text(seconds: float) -> str:
    """``72 s``, ``10 min``, ``1.5 h``: an idle time as people say it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f}".removesuffix(".0") + " min"
    return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"


def idle_unload_line(unload: IdleUnload) -> str:
    """Why nothing is loaded after the idle watcher freed the model, and how it comes back."""
    if unload.idle_s <= 0:
        when = "when its last request ended (keep_alive 0)"
    else:
        when = f"after {duration_text(unload.idle_s)} idle"
    return (
        f"No model loaded: {unload.model} was unloaded {when}. The next message (here or through the "
        "API) loads it again as it was."
    )


def page_status(service: Service, status: EngineStatus | None = None) -> str:
    """The page's status line: Service.status_line, or the model being loaded, or why the idle watcher left
    nothing loaded."""
    status = status or service.engine_status()
    if status.activity == "loading" and status.loading:
        return f"Loading {status.loading}…"
    if status.model is None and status.idle_unload is not None:
        return idle_unload_line(status.idle_unload)
    return service.status_line()


def fingerprint(status: EngineStatus) -> Fingerprint:
    """The status as plain values for ``gr.State`` (equal fingerprints: the page shows the right thing)."""
    unload = status.idle_unload
    idle = (unload.model, unload.idle_s) if unload is not None else None
    # A model loaded or unloaded beside the page's, or one that began or ended a reply: the Model tab lists
    # each with what it does, and a list drawn while an API client's reply ran would say "generating" after it.
    models = tuple((model.name, model.activity) for model in status.models)
    return (status.model, status.loader, status.activity, status.loading, status.loads, idle, models)


def loaded_key(status: EngineStatus) -> str:
    """Which load of which model with which loader is loaded, as one string ('' when nothing is)."""
    return f"{status.model} ({status.loader}) #{status.loads}" if status.model is not None else ""


def _busy(jobs: Any) -> bool:
    return isinstance(jobs, SessionJobs) and any(jobs.busy(slot) for slot in (CHAT, DEFAULT, NOTEBOOK))


class LiveStatus:
    """The timer, the per-session fingerprint and the handlers that keep the status lines current."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def build(self) -> None:
        """Draw the (invisible) timer and the per-session state; call inside the Blocks."""
        self.timer = gr.Timer(LIVE_STATUS_INTERVAL_S)
        self.seen = gr.State(None)  # the fingerprint of what this page last showed
        # The loaded model and loader of that state. Its change (not a mere activity change) redraws the Model
        # tab's widgets. A hidden Textbox, not a gr.State: Gradio fires a State's change only after queued events.
        self.loaded = gr.Textbox(visible="hidden", elem_id="live-loaded-model", container=False)
        # The status text a tick found, after a serial line (so the same text twice still changes the value).
        self.news = gr.Textbox(visible="hidden", elem_id="live-status-news", container=False)

    def text(self, status: EngineStatus) -> str:
        """What the tick shows: the page's status line, plus a note while another page or client generates."""
        line = page_status(self.service, status)
        if status.activity == "generating":
            line += " Busy: generating a reply for another page or an API client."
        return line

    def tick(self, jobs: Any, seen: Any) -> tuple[Any, ...]:
        """(fingerprint, loaded model, news for the status lines) when the engine changed since ``seen``;
        else skips."""
        skip = (gr.skip(), gr.skip(), gr.skip())
        if _busy(jobs):  # this session's own reply streams: its status line is the stream's
            return skip
        status = self.service.engine_status()
        key = fingerprint(status)
        if seen is not None and tuple(seen) == key:
            return skip
        return (key, loaded_key(status), f"{time.monotonic_ns()}\n{self.text(status)}")

    @staticmethod
    def show(jobs: Any, news: Any, outputs: int) -> tuple[Any, ...]:
        """The news in every status line, unless this session began streaming since the tick (its line then
        says "Generating…" and stays so)."""
        if _busy(jobs) or not isinstance(news, str) or "\n" not in news:
            return tuple(gr.skip() for _ in range(outputs))
        text = news.split("\n", 1)[1]
        return tuple(text for _ in range(outputs))

    def remember(self) -> tuple[Fingerprint, str]:
        """The current fingerprint and loaded model: after the page's own events, which already show them."""
        status = self.service.engine_status()
        return fingerprint(status), loaded_key(status)

    def follow_model(self, model: ModelTab) -> list[Any]:
        """The Model tab's widgets (model, loader, its settings) for a model loaded elsewhere; nothing changes
        when no model is loaded, so the last model stays chosen for one click on Load."""
        if self.service.loaded is None:
            return [gr.skip() for _ in model.refresh_outputs[:-1]]
        return model.refresh()[:-1]  # the last one is the status line, which the tick already set

    def wire(self, jobs: gr.State, statuses: Sequence[gr.components.Component], model: ModelTab) -> Any:
        """Tick -> status lines; another model loaded (or none) -> the Model tab's widgets.

        Returns that last event, for the page to chain what else follows the loaded model.
        """
        quiet: dict[str, Any] = {"show_progress": "hidden", "queue": False, "api_visibility": "private"}
        count = len(statuses)
        self.timer.tick(
            self.tick, inputs=[jobs, self.seen], outputs=[self.seen, self.loaded, self.news], **quiet
        )
        self.news.change(
            lambda jobs_, news: self.show(jobs_, news, count),
            inputs=[jobs, self.news],
            outputs=list(statuses),
            **quiet,
        )
        return self.loaded.change(
            lambda: self.follow_model(model), outputs=model.refresh_outputs[:-1], **quiet
        )

    @property
    def remember_outputs(self) -> list[gr.components.Component]:
        return [self.seen, self.loaded]
