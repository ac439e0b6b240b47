"""Download panel (Model tab): list a Hugging Face repository's files, download the chosen ones with a progress
bar, cancel and resume; use models already in the Hugging Face cache.

The work is done by ``webui.core.hub.download``; this module only draws widgets and turns its progress callbacks into
page updates. ``DownloadPanel(models_dir).build()`` draws the panel and returns the Download event, so the page can
chain ``.then(...)`` to refresh the model list after a download.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.hub import cache as hub_cache
from webui.core.hub import download as dl
from webui.core.hub import peek
from webui.core.loader import CancelToken
from webui.core.models.capabilities import is_projector_name

POLL_S = 0.2  # how often the progress bar is redrawn while a download runs
TABLE_HEADERS = ["File", "Size", "Quantization", "Fit"]
CAPABILITY_BADGES = {"thinking": "🧠 thinking", "tools": "🛠️ tools", "vision": "👁️ vision"}


class DownloadSession:
    """One browser session's download state: the last listing and the running download's cancel token.

    Kept in a ``gr.State`` (Gradio deep-copies the initial value per session; each copy starts empty).
    """

    def __init__(self) -> None:
        self.listing: dl.RepoListing | None = None
        self.cancel: CancelToken | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> DownloadSession:
        return DownloadSession()


@dataclass
class _Progress:
    """The latest progress callback, shared between the download thread and the page's generator."""

    done: int = 0
    total: int = 0
    file: str = ""
    first: int | None = None  # bytes already there when this run started (a resumed download)
    started: float = 0.0

    def update(self, done: int, total: int, file: str) -> None:
        if self.first is None:
            self.first, self.started = done, time.monotonic()
        self.done, self.total, self.file = done, total, file

    def speed(self) -> float:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return (self.done - (self.first or 0)) / elapsed if elapsed > 0 else 0.0


def progress_html(done: int, total: int, file: str = "", speed: float = 0.0, note: str = "") -> str:
    """The progress bar: percent, bytes done / total, speed and the file being fetched."""
    percent = 100.0 * done / total if total else 0.0
    parts = [f"{percent:.1f}%", f"{dl.format_size(done)} / {dl.format_size(total)}"]
    if speed > 0:
        parts.append(f"{dl.format_size(int(speed))}/s")
    if file:
        parts.append(html.escape(file))
    if note:
        parts.append(html.escape(note))
    return (
        f'<div class="download-progress" data-percent="{percent:.1f}">'
        '<div style="height:14px;border-radius:7px;background:var(--neutral-200,#e5e7eb);overflow:hidden">'
        f'<div class="download-bar" style="height:100%;width:{percent:.1f}%;'
        'background:var(--color-accent,#f97316);transition:width 0.2s"></div></div>'
        f'<div class="download-text" style="font-size:0.9em;margin-top:4px">{" · ".join(parts)}</div></div>'
    )


def listing_rows(listing: dl.RepoListing) -> list[list[str]]:
    """One table row per file: path, size, quantization, fit verdict (of the GGUF choice it belongs to)."""
    fits = {path: choice.fit for choice in listing.choices for path in choice.files if choice.fit}
    rows = []
    for f in listing.files:
        fit = fits.get(f.path) if f.is_gguf else None
        verdict = f"{fit.verdict}: {fit.message}" if fit else ""
        if is_projector_name(f.path):
            verdict = "vision projector: tick it with a model file to give that model sight"
        rows.append([f.path, dl.format_size(f.size), f.quant or "", verdict])
    return rows


def choice_options(listing: dl.RepoListing) -> list[tuple[str, str]]:
    """(label shown, value) for each choice the user can tick."""
    options = []
    for choice in listing.choices:
        bits = [choice.label, dl.format_size(choice.size)]
        if choice.quant:
            bits.append(choice.quant)
        if choice.fit:
            bits.append(choice.fit.verdict)
        options.append((" · ".join(bits), choice.label))
    return options


DownloadWork = Callable[[dl.ProgressCallback, CancelToken], dl.DownloadResult]


def stream_download(
    work: DownloadWork,
    session: DownloadSession,
    starting: str,
    on_downloaded: Callable[[dl.DownloadResult], None] | None = None,
) -> Iterator[tuple[Any, str]]:
    """Run ``work`` (a download) in a thread, yielding (progress bar, status) until it ends; Cancel stops it
    through ``session``. Shared by the repository download and the catalog's."""
    if session.cancel is not None:
        yield gr.skip(), "⚠️ A download is already running; cancel it first."
        return
    cancel = CancelToken()
    session.cancel = cancel
    progress = _Progress()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work(progress.update, cancel)
        except dl.DownloadError as exc:
            outcome["error"] = exc
        except Exception as exc:  # shown, not swallowed: the thread would otherwise die silently
            outcome["error"] = dl.DownloadError(f"The download failed: {type(exc).__name__}: {exc}")

    worker = threading.Thread(target=run, name="palabre-download", daemon=True)
    worker.start()
    try:
        yield progress_html(0, 0, note="starting…"), starting
        last = None
        announced = False
        while worker.is_alive():
            worker.join(POLL_S)
            if cancel.cancelled and not announced:
                # Said here, in the download's own stream: a reply from the Cancel click could arrive
                # after this stream's last message and overwrite it.
                announced = True
                yield (
                    gr.skip(),
                    "Cancelling… (the part already fetched is kept: Download again resumes it)",
                )
            snapshot = (progress.done, progress.total, progress.file)
            if snapshot != last and progress.total:
                last = snapshot
                bar = progress_html(progress.done, progress.total, progress.file, progress.speed())
                yield bar, f"Downloading {progress.file}…"
    finally:
        cancel.cancel()  # no-op once finished; stops the download if the page went away
        worker.join()
        session.cancel = None
    error = outcome.get("error")
    if error is not None:
        bar = progress_html(progress.done, progress.total, progress.file, note="stopped")
        yield bar, f"⚠️ {error}"
        return
    result: dl.DownloadResult = outcome["result"]
    if on_downloaded is not None:
        on_downloaded(result)
    total = sum(p.stat().st_size for p in result.files if p.exists())
    yield progress_html(total, total, note="done"), f"✅ {result.message}"


class DownloadPanel:
    """Draws the download panel and holds its handlers."""

    def __init__(
        self, models_dir: Path, on_downloaded: Callable[[dl.DownloadResult], None] | None = None
    ) -> None:
        self.models_dir = Path(models_dir)
        self.on_downloaded = on_downloaded  # called after a verified download (e.g. to rescan the models)
        self.used_cached: Any = None  # the "Add to the models folder" event, set by build()

    # -- handlers --------------------------------------------------------------------------------------

    def list_files(self, repo: str, branch: str, token: str, session: DownloadSession) -> tuple[Any, ...]:
        """List files: the table, the choices (the only choice ticked) and a status line."""
        try:
            listing = dl.list_files(repo, branch or None, token or None)
        except dl.DownloadError as exc:
            session.listing = None
            return gr.update(value=[]), gr.update(choices=[], value=[]), f"⚠️ {exc}"
        session.listing = listing
        options = choice_options(listing)
        ticked = [options[0][1]] if len(options) == 1 else []
        kind = {"gguf": "GGUF", "transformers": "Transformers", "other": "model"}[listing.kind]
        pending = dl.partial_bytes(self.models_dir, listing.ref)
        resume = f" {dl.format_size(pending)} from an earlier download will be resumed." if pending else ""
        status = (
            f"{listing.ref.label}: {kind} repository, {len(listing.files)} files, "
            f"{dl.format_size(listing.total_size)}. Tick what to download.{resume}"
        )
        return gr.update(value=listing_rows(listing)), gr.update(choices=options, value=ticked), status

    def download(
        self, repo: str, branch: str, token: str, chosen: list[str] | None, session: DownloadSession
    ) -> Iterator[tuple[Any, str]]:
        """Download the ticked choices, yielding (progress bar, status) until it ends."""
        if session.cancel is not None:
            yield gr.skip(), "⚠️ A download is already running; cancel it first."
            return
        try:
            ref = dl.parse_reference(repo, branch or None)
        except dl.DownloadError as exc:
            yield "", f"⚠️ {exc}"
            return
        listing = session.listing
        if listing is not None and (listing.ref.repo_id, listing.ref.revision) != (ref.repo_id, ref.revision):
            listing = None  # the fields changed since List files
        if listing is not None and listing.kind == "gguf" and not chosen:
            yield "", "⚠️ Tick the file(s) to download first."
            return

        def work(progress: dl.ProgressCallback, cancel: CancelToken) -> dl.DownloadResult:
            return dl.download(
                ref,
                chosen or None,
                models_dir=self.models_dir,
                token=token or None,
                progress=progress,
                cancel=cancel,
                listing=listing,
            )

        yield from stream_download(work, session, f"Downloading from {ref.label}…", self.on_downloaded)

    @staticmethod
    def capabilities(token: str, session: DownloadSession) -> str:
        """What the listed model can do, read from its chat template before downloading ('' with no listing)."""
        listing = session.listing
        if listing is None or listing.kind == "other":
            return ""
        try:
            found = peek.repo_capabilities(listing, token or None)
        except dl.DownloadError as exc:
            return f"Capabilities could not be read: {exc}"
        if found is None:
            return "Capabilities unknown: no chat template in the repository's files."
        caps = found.capabilities
        shown = (
            " · ".join(CAPABILITY_BADGES[label] for label in caps.labels)
            or "plain chat (no thinking or tools)"
        )
        projector = f"; vision through {caps.projector}" if caps.projector else ""
        return f"Can: {shown} (read from {found.source}{projector})."

    @staticmethod
    def cancel(session: DownloadSession) -> None:
        """Stop the running download; the download's own stream reports it (see ``download``)."""
        if session.cancel is None:
            gr.Info("No download is running.")
            return
        session.cancel.cancel()

    def cached_choices(self) -> Any:
        models = hub_cache.cached_models()
        labels = [m.label for m in models]
        return gr.update(choices=labels, value=labels[0] if labels else None)

    def cached_status(self) -> str:
        models = hub_cache.cached_models()
        where = hub_cache.hub_cache_dir()
        if not models:
            return f"No models in the Hugging Face cache ({where})."
        return f"{len(models)} model(s) in the Hugging Face cache ({where}); add one to use it without downloading."

    def use_cached(self, label: str | None) -> str:
        """Link the chosen cached model into the models folder (nothing is copied)."""
        model = next((m for m in hub_cache.cached_models() if m.label == label), None)
        if model is None:
            return "⚠️ Choose a model from the cache first (Refresh if the list is empty)."
        try:
            path = hub_cache.use_cached(model, self.models_dir)
        except (dl.DownloadError, OSError) as exc:
            return f"⚠️ {exc}"
        return f"✅ {model.repo_id} is now in the models folder as {path.relative_to(self.models_dir)}."

    # -- layout ----------------------------------------------------------------------------------------

    def build(self) -> Any:
        """Draw the panel; returns the Download event (chain ``.then`` to refresh the model list)."""
        session = gr.State(DownloadSession())
        with gr.Accordion("Download from Hugging Face", open=True, elem_id="download-panel"):
            with gr.Row():
                repo = gr.Textbox(
                    label="Repository",
                    placeholder="org/model or https://huggingface.co/org/model",
                    elem_id="download-repo",
                    scale=4,
                )
                branch = gr.Textbox(label="Branch", placeholder="main", elem_id="download-branch", scale=1)
                token = gr.Textbox(
                    label="Token",
                    type="password",
                    placeholder="optional (default: HF_TOKEN)",
                    elem_id="download-token",
                    scale=2,
                )
            list_button = gr.Button("List files", elem_id="download-list")
            abilities = gr.Markdown("", elem_id="download-capabilities")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                value=[],
                interactive=False,
                wrap=True,
                elem_id="download-files",
            )
            chosen = gr.CheckboxGroup(choices=[], label="Download", elem_id="download-choices")
            with gr.Row():
                start = gr.Button("Download", variant="primary", elem_id="download-start")
                stop = gr.Button("Cancel", elem_id="download-cancel")
            bar = gr.HTML("", elem_id="download-progress")
            status = gr.Markdown("", elem_id="download-status")
            with gr.Accordion(
                "Models in the Hugging Face cache", open=False, elem_id="download-cache"
            ) as cache_section:
                cache_status = gr.Markdown("", elem_id="download-cache-status")
                with gr.Row():
                    cached = gr.Dropdown(choices=[], label="Cached model", elem_id="download-cached", scale=4)
                    refresh = gr.Button("Refresh", size="sm", elem_id="download-cache-refresh", scale=1)
                use = gr.Button("Add to the models folder", elem_id="download-cache-use")

        for trigger in (list_button.click, repo.submit):
            trigger(
                self.list_files, inputs=[repo, branch, token, session], outputs=[table, chosen, status]
            ).then(
                lambda: "Reading what the model can do…", outputs=[abilities], show_progress="hidden"
            ).then(self.capabilities, inputs=[token, session], outputs=[abilities], show_progress="hidden")
        event = start.click(
            self.download,
            inputs=[repo, branch, token, chosen, session],
            outputs=[bar, status],
            concurrency_limit=None,  # one session's download never blocks another's
            show_progress="hidden",
        )
        stop.click(self.cancel, inputs=[session], outputs=None, queue=False, show_progress="hidden")
        for trigger in (refresh.click, cache_section.expand):  # scanned when opened, and on Refresh
            trigger(self.cached_choices, outputs=[cached], show_progress="hidden").then(
                self.cached_status, outputs=[cache_status], show_progress="hidden"
            )
        self.used_cached = use.click(self.use_cached, inputs=[cached], outputs=[cache_status])
        return event


def build_download_panel(
    models_dir: Path, on_downloaded: Callable[[dl.DownloadResult], None] | None = None
) -> Any:
    """Draw the panel inside the current Blocks context; returns the Download event."""
    return DownloadPanel(models_dir, on_downloaded).build()
