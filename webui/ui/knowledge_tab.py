"""Knowledge tab: named document collections — create one, add files or a whole folder (uploaded from the
browser), see what is in it, remove documents, and try a search to see which passages a question finds.

Everything here is ``webui.core.knowledge``'s; this module draws it. Files are read from what the browser
uploaded, never from a path typed in the page (the CLI's ``webui knowledge add`` takes server paths).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.documents.extract import DocumentError
from webui.core.embeddings import EmbeddingError
from webui.core.knowledge import AddReport, KnowledgeBase, KnowledgeError, Passage
from webui.core.paths import InvalidNameError

DOCUMENT_HEADERS = ["Document", "Kind", "Size", "Passages", "Added"]
SNIPPET = 320  # characters of a passage shown in the search results
ERRORS = (KnowledgeError, DocumentError, EmbeddingError, InvalidNameError, OSError)


def report_text(report: AddReport) -> str:
    """One line per outcome of adding files."""
    lines = []
    for label, names in (
        ("Added", report.added),
        ("Updated", report.updated),
        ("Unchanged", report.unchanged),
        ("Removed", report.removed),
    ):
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    lines += [f"⚠️ {name}: {message}" for name, message in report.failed]
    if report.embedded:
        lines.append(f"{report.embedded} passages embedded.")
    if report.not_embedded:
        lines.append(f"Found by words only until an embedding model is loaded ({report.not_embedded})")
    return "\n\n".join(lines) or "Nothing to add."


def results_text(passages: Sequence[Passage], note: str = "") -> str:
    """Search results as numbered sources with their place in the document."""
    if not passages:
        return note or "No passage matches."
    blocks = [note] if note else []
    for number, passage in enumerate(passages, start=1):
        where = passage.document + (f", page {passage.page}" if passage.page else "")
        text = " ".join(passage.text.split())
        snippet = text if len(text) <= SNIPPET else text[:SNIPPET].rstrip() + "…"
        blocks.append(f"**[{number}] {where}**\n\n> {snippet}")
    return "\n\n".join(blocks)


class KnowledgeTab:
    """Collections in ``knowledge`` (a KnowledgeBase over user_data/knowledge.sqlite3)."""

    def __init__(self, knowledge: KnowledgeBase) -> None:
        self.knowledge = knowledge

    # -- what the widgets show -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [info.name for info in self.knowledge.store.collections()]

    def table(self, collection: str | None) -> list[list[Any]]:
        if not collection or collection not in self.names():
            return []
        return [
            [
                doc.name,
                doc.kind,
                f"{doc.size / 1024:.0f} KiB",
                doc.chunks,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added)),
            ]
            for doc in self.knowledge.store.documents(collection)
        ]

    def show(self, collection: str | None) -> tuple[Any, Any]:
        """The collection's documents, and the choices of the Remove dropdown."""
        rows = self.table(collection)
        return gr.update(value=rows), gr.update(choices=[row[0] for row in rows], value=None)

    # -- actions ---------------------------------------------------------------------------------------------

    def create(self, name: str) -> tuple[Any, str]:
        name = (name or "").strip()
        if not name:
            return gr.skip(), "Type a name for the new collection."
        try:
            self.knowledge.store.ensure_collection(name)
        except ERRORS as exc:
            return gr.skip(), f"⚠️ {exc}"
        return gr.update(
            choices=self.names(), value=name
        ), f"Collection **{name}** is ready: add files to it."

    def add(self, collection: str | None, files: Sequence[Any] | None) -> str:
        """Extract the uploaded files (or a folder's) and add them; a file already there is left alone."""
        if not collection:
            return "Choose or create a collection first."
        paths = [Path(f if isinstance(f, str) else getattr(f, "name", str(f))) for f in files or []]
        if not paths:
            return "No file was uploaded."
        try:
            report = self.knowledge.add_uploads(
                collection, [(path.name, path.read_bytes()) for path in paths]
            )
        except ERRORS as exc:
            return f"⚠️ {exc}"
        return report_text(report)

    def remove(self, collection: str | None, document: str | None) -> str:
        if not collection or not document:
            return "Choose a document to remove."
        try:
            removed = self.knowledge.remove(collection, document)
        except ERRORS as exc:
            return f"⚠️ {exc}"
        return f"Removed {', '.join(removed)}."

    def delete(self, collection: str | None) -> tuple[Any, str]:
        if not collection:
            return gr.skip(), "Choose a collection."
        try:
            self.knowledge.remove(collection)
        except ERRORS as exc:
            return gr.skip(), f"⚠️ {exc}"
        names = self.names()
        return gr.update(choices=names, value=names[0] if names else None), f"Deleted **{collection}**."

    def search(self, collection: str | None, query: str) -> str:
        if not collection:
            return "Choose a collection."
        try:
            return results_text(self.knowledge.search(collection, query or "", top_k=5))
        except EmbeddingError as exc:  # no embedding model: the words alone still find passages
            try:
                passages = self.knowledge.search(collection, query or "", top_k=5, mode="keyword")
            except ERRORS as again:
                return f"⚠️ {again}"
            return results_text(passages, f"Searched by words only ({exc})")
        except ERRORS as exc:
            return f"⚠️ {exc}"

    # -- drawing ---------------------------------------------------------------------------------------------

    def build(self) -> None:
        names = self.names()
        with gr.Row():
            collection = gr.Dropdown(
                choices=names,
                value=names[0] if names else None,
                label="Collection",
                info="Documents searched together; a conversation or a personality can use collections.",
                elem_id="knowledge-collection",
                scale=3,
            )
            new_name = gr.Textbox(label="New collection", elem_id="knowledge-new-name", scale=2)
            create = gr.Button("Create", elem_id="knowledge-create", scale=1)
        with gr.Row():
            add_files = gr.UploadButton(
                "Add files", file_count="multiple", elem_id="knowledge-add-files", size="sm"
            )
            add_folder = gr.UploadButton(
                "Add a folder", file_count="directory", elem_id="knowledge-add-folder", size="sm"
            )
            delete = gr.Button("Delete collection", variant="stop", size="sm", elem_id="knowledge-delete")
        status = gr.Markdown(elem_id="knowledge-status")
        documents = gr.Dataframe(
            headers=DOCUMENT_HEADERS,
            value=self.table(names[0] if names else None),
            interactive=False,
            elem_id="knowledge-documents",
        )
        with gr.Row():
            document = gr.Dropdown(label="Document", choices=[], elem_id="knowledge-document", scale=3)
            remove = gr.Button("Remove document", size="sm", elem_id="knowledge-remove", scale=1)
        with gr.Row():
            query = gr.Textbox(label="Try a question", elem_id="knowledge-query", scale=4)
            search = gr.Button("Search", elem_id="knowledge-search", scale=1)
        results = gr.Markdown(elem_id="knowledge-results")

        shown = [documents, document]
        collection.change(self.show, inputs=[collection], outputs=shown, show_progress="hidden")
        create.click(self.create, inputs=[new_name], outputs=[collection, status])
        add_files.upload(self.add, inputs=[collection, add_files], outputs=[status]).then(
            self.show, inputs=[collection], outputs=shown, show_progress="hidden"
        )
        add_folder.upload(self.add, inputs=[collection, add_folder], outputs=[status]).then(
            self.show, inputs=[collection], outputs=shown, show_progress="hidden"
        )
        remove.click(self.remove, inputs=[collection, document], outputs=[status]).then(
            self.show, inputs=[collection], outputs=shown, show_progress="hidden"
        )
        delete.click(self.delete, inputs=[collection], outputs=[collection, status]).then(
            self.show, inputs=[collection], outputs=shown, show_progress="hidden"
        )
        search.click(self.search, inputs=[collection, query], outputs=[results])
        query.submit(self.search, inputs=[collection, query], outputs=[results])
