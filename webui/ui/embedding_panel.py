"""Embedding-model panel (Model tab): pick the model that turns texts into vectors, next to the chat model.

The embedding model serves ``/v1/embeddings`` and ``/api/embed`` and indexes document collections; loading one
here is the same as ``webui serve --embedding-model NAME``. The holder is ``Service.embeddings``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core.embeddings import EmbeddingError, is_embedding_entry
from webui.core.service import Service

NONE = "(none)"


class EmbeddingPanel:
    """Choose, load and unload the embedding model."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def choices(self) -> list[str]:
        """Sentence-transformers folders first, then GGUF files (llama.cpp embeds with any of them)."""
        entries = self.service.models()
        folders = [e.name for e in entries if is_embedding_entry(e)]
        ggufs = [e.name for e in entries if e.kind == "gguf"]
        return [NONE, *folders, *ggufs]

    def status(self) -> str:
        holder = self.service.embeddings
        name = holder.loaded_name
        if name is None:
            default = f" (`{holder.default}` loads on first use)" if holder.default else ""
            return f"No embedding model loaded{default}."
        try:
            dimensions = holder.dimensions(name)
        except EmbeddingError as exc:
            return f"⚠️ {exc}"
        return f"Embedding model: **{name}** ({dimensions} dimensions)."

    def load(self, name: str | None) -> str:
        if not name or name == NONE:
            return "Choose an embedding model first."
        try:
            seconds = self.service.embeddings.load(name)
        except EmbeddingError as exc:
            return f"⚠️ {exc}"
        return self.status() + (f" Loaded in {seconds:.1f} s." if seconds else "")

    def unload(self) -> str:
        self.service.embeddings.close()
        return self.status()

    def refresh(self) -> Any:
        return gr.update(choices=self.choices())

    def build(self) -> None:
        """Draw the panel inside the Model tab."""
        with gr.Accordion("Embedding model", open=False, elem_id="embedding-panel"):
            holder = self.service.embeddings
            current = holder.loaded_name or holder.default or NONE
            choices = self.choices()
            with gr.Row():
                model = gr.Dropdown(
                    choices=choices,
                    value=current if current in choices else NONE,
                    label="Embedding model",
                    info="For /v1/embeddings, /api/embed and document collections.",
                    elem_id="embedding-dropdown",
                    scale=4,
                )
                refresh = gr.Button("Refresh", size="sm", elem_id="embedding-refresh", scale=1)
            with gr.Row():
                load = gr.Button("Load embedding model", elem_id="embedding-load")
                unload = gr.Button("Unload", elem_id="embedding-unload")
            status = gr.Markdown(self.status(), elem_id="embedding-status")
        refresh.click(self.refresh, outputs=[model], show_progress="hidden")
        load.click(self.load, inputs=[model], outputs=[status])
        unload.click(self.unload, outputs=[status], show_progress="hidden")
