"""Catalog panel (Model tab): current small and mid-size GGUF models with capability badges, a fit verdict per
quantization for this machine, and Download.

The catalog, the verdicts and the download are ``webui.core.hub.catalog``'s; this module draws them. A row
picked in the table (or the dropdown) downloads with its vision projector through the same progress bar and
Cancel as the repository download panel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.hardware.estimates import MachineSource
from webui.core.hub import catalog as cat
from webui.core.hub import download as dl
from webui.core.hub.refs import format_size
from webui.core.loader import CancelToken
from webui.ui.download_panel import DownloadSession, stream_download

HEADERS = ["Model", "Params", "Quantization", "Size", "Can", "Context", "Licence", "Fit here", "Repository"]
BADGES = {"thinking": "🧠 thinking", "tools": "🛠️ tools", "vision": "👁️ vision"}
DOWNLOADED = " ✔ downloaded"
VERDICT_MARKS = {"fits": "✅ fits", "tight": "⚠️ tight", "does not fit": "❌ does not fit"}


def badges(labels: tuple[str, ...]) -> str:
    """Capability badges for a table cell ('—' for none)."""
    return " ".join(BADGES[label] for label in labels) or "—"


def table_rows(rows: list[cat.CatalogRow]) -> list[list[str]]:
    """One table row per quantization."""
    return [
        [
            row.entry.name + (DOWNLOADED if row.downloaded else ""),
            row.entry.parameters_label,
            row.file.quant,
            format_size(row.download_size),
            badges(row.entry.labels),
            f"{row.entry.context_length // 1024}K",
            row.entry.licence,
            VERDICT_MARKS.get(row.verdict, row.verdict),
            row.entry.repo_id,
        ]
        for row in rows
    ]


def row_choices(rows: list[cat.CatalogRow]) -> list[tuple[str, str]]:
    """(label, key) for the dropdown of downloadable rows."""
    return [
        (f"{row.entry.name} · {row.file.quant} · {format_size(row.download_size)} · {row.verdict}", row.key)
        for row in rows
    ]


class CatalogPanel:
    """Draws the catalog and holds its handlers; ``entries`` are replaced by the Hub's sizes on Refresh."""

    def __init__(self, models_dir: Path, machine: MachineSource) -> None:
        self.models_dir = Path(models_dir)
        self.machine = machine
        self.entries: tuple[cat.CatalogEntry, ...] = cat.catalog_entries()

    def rows(self) -> list[cat.CatalogRow]:
        return cat.catalog_rows(self.machine.facts(measure_speed=False), self.models_dir, self.entries)

    def _row(self, key: str | None) -> cat.CatalogRow | None:
        return next((row for row in self.rows() if row.key == key), None)

    # -- handlers --------------------------------------------------------------------------------------

    def redraw(self, key: str | None = None) -> tuple[Any, Any]:
        """The table and the dropdown (keeping ``key`` chosen)."""
        rows = self.rows()
        keys = [row.key for row in rows]
        return (
            gr.update(value=table_rows(rows)),
            gr.update(choices=row_choices(rows), value=key if key in keys else None),
        )

    def pick(self, evt: gr.SelectData) -> Any:
        """A table cell was clicked: choose its row for Download (found by its values: the table may be sorted)."""
        values = getattr(evt, "row_value", None)
        if not isinstance(values, list) or len(values) < 3:
            return gr.skip()
        name = str(values[0]).removesuffix(DOWNLOADED)
        row = next((r for r in self.rows() if (r.entry.name, r.file.quant) == (name, values[2])), None)
        return row.key if row is not None else gr.skip()

    def describe(self, key: str | None) -> str:
        """What Download will fetch, with the fit verdict's numbers."""
        row = self._row(key)
        if row is None:
            return "Pick a model in the table (or the list) to download it."
        entry = row.entry
        what = row.file.path + (
            f" and its vision projector {entry.projector.path}" if entry.projector else ""
        )
        note = f" {entry.note}" if entry.note else ""
        return (
            f"**{entry.name} {row.file.quant}** from `{entry.repo_id}`: {what}, {format_size(row.download_size)}. "
            f"{row.message}{note}"
        )

    def download(self, key: str | None, session: DownloadSession) -> Iterator[tuple[Any, str]]:
        """Download the chosen row, yielding (progress bar, status) until it ends."""
        row = self._row(key)
        if row is None:
            yield "", "⚠️ Pick a model in the catalog first."
            return
        entry, quant = row.entry, row.file.quant

        def work(progress: dl.ProgressCallback, cancel: CancelToken) -> dl.DownloadResult:
            return cat.download_entry(
                entry, quant, models_dir=self.models_dir, progress=progress, cancel=cancel
            )

        final: tuple[Any, str] | None = None
        for update in stream_download(
            work, session, f"Downloading {entry.name} {quant} from {entry.repo_id}…"
        ):
            final = update
            yield update
        if final is not None and final[1].startswith("✅"):
            name = cat.local_model_name(entry, row.file)
            yield final[0], f"{final[1]}\n\nPick **{name}** in the Model list above and Load it."

    def refresh_from_hub(self, key: str | None) -> tuple[Any, Any, str]:
        """Read every entry's sizes from the Hub's live listing (entries it cannot read keep the catalog's)."""
        self.entries, problems = cat.refresh_all(cat.catalog_entries())
        table, choices = self.redraw(key)
        if not problems:
            return table, choices, "Sizes read from the Hub's listings."
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        return table, choices, f"⚠️ {shown}"

    @staticmethod
    def cancel(session: DownloadSession) -> None:
        if session.cancel is None:
            gr.Info("No download is running.")
            return
        session.cancel.cancel()

    # -- layout ----------------------------------------------------------------------------------------

    def build(self) -> Any:
        """Draw the panel; returns the Download event (chain ``.then`` to refresh the model list)."""
        session = gr.State(DownloadSession())
        rows = self.rows()
        with gr.Accordion("Model catalog", open=True, elem_id="catalog-panel"):
            gr.Markdown(
                "Current small and mid-size GGUF models. **Can** says what each does (🧠 thinks before "
                "answering, 🛠️ calls tools, 👁️ sees images); **Fit here** estimates each quantization "
                "against this machine's free memory. Click a row, then Download.",
                elem_id="catalog-intro",
            )
            table = gr.Dataframe(
                headers=HEADERS,
                value=table_rows(rows),
                interactive=False,
                wrap=True,
                elem_id="catalog-table",
            )
            with gr.Row():
                choice = gr.Dropdown(
                    choices=row_choices(rows),
                    value=None,
                    label="Model to download",
                    elem_id="catalog-choice",
                    scale=4,
                )
                hub_refresh = gr.Button(
                    "Check sizes on the Hub", size="sm", elem_id="catalog-refresh", scale=1
                )
            about = gr.Markdown(self.describe(None), elem_id="catalog-about")
            with gr.Row():
                start = gr.Button("Download", variant="primary", elem_id="catalog-download")
                stop = gr.Button("Cancel", elem_id="catalog-cancel")
            bar = gr.HTML("", elem_id="catalog-progress")
            status = gr.Markdown("", elem_id="catalog-status")

        table.select(self.pick, outputs=[choice], show_progress="hidden")
        choice.change(self.describe, inputs=[choice], outputs=[about], show_progress="hidden")
        hub_refresh.click(self.refresh_from_hub, inputs=[choice], outputs=[table, choice, status])
        event = start.click(
            self.download,
            inputs=[choice, session],
            outputs=[bar, status],
            concurrency_limit=None,
            show_progress="hidden",
        )
        event.then(self.redraw, inputs=[choice], outputs=[table, choice], show_progress="hidden")
        stop.click(self.cancel, inputs=[session], outputs=None, queue=False, show_progress="hidden")
        return event
