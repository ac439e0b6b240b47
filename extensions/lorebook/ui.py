"""The Lorebook tab: pick one of your lorebooks, list, add, edit and delete its entries, import others' books.

Every change is written to ``user_data/lorebooks/<name>.yaml|json`` at once (atomically, see editor.py). The
handlers are methods of LorebookTab so they can be tested without a browser; ``build`` draws the widgets.
Imported only when the page is built (gradio stays out of ``webui extensions list``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.extensions.api import InvalidNameError

from .book import LorebookError, available_books, parse_book
from .editor import (
    EntryForm,
    book_path,
    delete_entry,
    entry_label,
    import_file,
    read_raw,
    save_entry,
    split_keys,
)

NEW = "new"  # the entry picker's value for "a new entry"
# keys, secondary keys, content, case sensitive, priority, enabled, always inserted
BLANK_FORM: tuple[Any, ...] = ("", "", "", False, 0, True, False)
USE_HINT = (
    "To use a book in chats, add its name to the lorebook extension's `lorebooks` setting (Session tab)."
)


def _warn(message: str) -> str:
    gr.Warning(message)
    return f"⚠️ {message}"


class LorebookTab:
    """The Lorebook tab's handlers over the lorebooks folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _entries(self, name: str) -> list[tuple[str, str]]:
        raw = read_raw(self.folder, name)
        book = parse_book(raw, name)
        return [("New entry", NEW)] + [(entry_label(i, e), str(i)) for i, e in enumerate(book.entries)]

    def books(self) -> Any:
        """The book picker with the books on disk (the typed name stays)."""
        return gr.update(choices=available_books(self.folder))

    def open_book(self, name: str | None) -> list[Any]:
        """Show the book ``name``'s entries: [entry picker, *blank form, status]."""
        name = (name or "").strip()
        if not name:
            return [gr.update(choices=[("New entry", NEW)], value=NEW), *BLANK_FORM, "Pick or type a book."]
        try:
            exists = book_path(self.folder, name).is_file()
            choices = self._entries(name)
        except (InvalidNameError, LorebookError) as exc:
            return [gr.update(choices=[("New entry", NEW)], value=NEW), *BLANK_FORM, _warn(str(exc))]
        count = len(choices) - 1
        status = (
            f'"{name}": {count} entr{"y" if count == 1 else "ies"}. {USE_HINT}'
            if exists
            else f'"{name}" is a new lorebook: it is created when you save its first entry.'
        )
        return [gr.update(choices=choices, value=NEW), *BLANK_FORM, status]

    def pick_entry(self, name: str | None, choice: str | None) -> list[Any]:
        """Fill the form with the chosen entry (blank for a new one): [*form, status]."""
        if not name or not choice or choice == NEW:
            return [*BLANK_FORM, ""]
        try:
            book = parse_book(read_raw(self.folder, name.strip()), name)
            entry = book.entries[int(choice)]
        except (InvalidNameError, LorebookError, ValueError, IndexError) as exc:
            return [*(gr.skip(),) * len(BLANK_FORM), _warn(f"That entry cannot be shown: {exc}")]
        return [
            ", ".join(entry.keys),
            ", ".join(entry.secondary_keys),
            entry.content,
            entry.case_sensitive,
            entry.priority,
            entry.enabled,
            entry.constant,
            "",
        ]

    def save(
        self,
        name: str | None,
        choice: str | None,
        keys: str,
        secondary: str,
        content: str,
        case_sensitive: bool,
        priority: float | None,
        enabled: bool,
        constant: bool,
    ) -> list[Any]:
        """Add or change the entry and write the book: [book picker, entry picker, status]."""
        name = (name or "").strip()
        if not name:
            return [gr.skip(), gr.skip(), _warn("Pick a lorebook or type a new name first.")]
        form = EntryForm(
            keys=split_keys(keys),
            content=content or "",
            secondary_keys=split_keys(secondary),
            case_sensitive=bool(case_sensitive),
            priority=int(priority or 0),
            enabled=bool(enabled),
            constant=bool(constant),
        )
        index = None if not choice or choice == NEW else int(choice)
        try:
            _, index = save_entry(self.folder, name, index, form)
            choices = self._entries(name)
        except (InvalidNameError, LorebookError, OSError) as exc:
            return [gr.skip(), gr.skip(), _warn(f"Not saved: {exc}")]
        return [
            gr.update(choices=available_books(self.folder), value=name),
            gr.update(choices=choices, value=str(index)),
            f'Entry {index + 1} saved in "{name}".',
        ]

    def ask_delete(self, name: str | None, choice: str | None) -> list[Any]:
        """Step one of Delete: [confirmation row, status]."""
        if not name or not choice or choice == NEW:
            return [gr.update(visible=False), _warn("Pick an entry to delete.")]
        return [gr.update(visible=True), f'Delete entry {int(choice) + 1} of "{name.strip()}"?']

    def delete(self, name: str | None, choice: str | None) -> list[Any]:
        """Step two of Delete: [entry picker, *blank form, confirmation row, status]."""
        hide = gr.update(visible=False)
        if not name or not choice or choice == NEW:
            return [gr.skip(), *(gr.skip(),) * len(BLANK_FORM), hide, _warn("Pick an entry to delete.")]
        try:
            delete_entry(self.folder, name.strip(), int(choice))
            choices = self._entries(name.strip())
        except (InvalidNameError, LorebookError, OSError, ValueError) as exc:
            return [gr.skip(), *(gr.skip(),) * len(BLANK_FORM), hide, _warn(f"Not deleted: {exc}")]
        return [
            gr.update(choices=choices, value=NEW),
            *BLANK_FORM,
            hide,
            f"Entry {int(choice) + 1} deleted.",
        ]

    def import_(self, name: str | None, file: str | None) -> list[Any]:
        """Add a file's entries to the book (a new book when none is picked): [book picker, entry picker,
        status]."""
        if not file:
            return [gr.skip(), gr.skip(), _warn("Drop a World Info, Character Card or lorebook file first.")]
        try:
            target, count = import_file(self.folder, name, Path(file))
            choices = self._entries(target)
        except (InvalidNameError, LorebookError, OSError) as exc:
            return [gr.skip(), gr.skip(), _warn(f"Not imported: {exc}")]
        return [
            gr.update(choices=available_books(self.folder), value=target),
            gr.update(choices=choices, value=NEW),
            f'{count} entr{"y" if count == 1 else "ies"} imported into "{target}". {USE_HINT}',
        ]

    def build(self) -> None:
        """Draw the tab (inside the page's ``gr.Tab``) and wire its events."""
        gr.Markdown(
            "Lorebook entries are put into the prompt when one of their keys appears in the recent messages.",
        )
        with gr.Row():
            book = gr.Dropdown(
                choices=available_books(self.folder),
                value=None,
                allow_custom_value=True,
                label="Lorebook (pick one, or type a new name)",
                elem_id="lorebook-book",
                scale=3,
            )
            refresh = gr.Button("🔄", elem_id="lorebook-refresh", scale=0, min_width=60)
            entry = gr.Dropdown(
                choices=[("New entry", NEW)], value=NEW, label="Entry", elem_id="lorebook-entry", scale=3
            )
        with gr.Row():
            keys = gr.Textbox(label="Keys (comma-separated)", elem_id="lorebook-keys", scale=2)
            secondary = gr.Textbox(
                label="Secondary keys (optional: one must also appear)",
                elem_id="lorebook-secondary",
                scale=2,
            )
        content = gr.Textbox(label="Content (put into the prompt)", lines=4, elem_id="lorebook-content")
        with gr.Row():
            case_sensitive = gr.Checkbox(label="Case sensitive", elem_id="lorebook-case")
            priority = gr.Number(
                value=0, precision=0, label="Priority (higher is kept first)", elem_id="lorebook-priority"
            )
            enabled = gr.Checkbox(value=True, label="Enabled", elem_id="lorebook-enabled")
            constant = gr.Checkbox(label="Always inserted", elem_id="lorebook-constant")
        with gr.Row():
            save = gr.Button("Save entry", variant="primary", elem_id="lorebook-save")
            delete = gr.Button("Delete entry", variant="stop", elem_id="lorebook-delete")
        with gr.Row(visible=False, elem_id="lorebook-confirm-row") as confirm_row:
            confirm = gr.Button("Yes, delete it", variant="stop", elem_id="lorebook-confirm-delete")
            cancel = gr.Button("Cancel", elem_id="lorebook-cancel-delete")
        with gr.Row():
            upload = gr.File(
                label="Import: SillyTavern World Info JSON, Character Card V2 JSON or a lorebook",
                file_types=[".json", ".yaml", ".yml"],
                elem_id="lorebook-import",
            )
            import_button = gr.Button("Import into this book", elem_id="lorebook-import-button")
        status = gr.Markdown(elem_id="lorebook-status")

        form = [keys, secondary, content, case_sensitive, priority, enabled, constant]
        refresh.click(self.books, outputs=book)
        book.change(self.open_book, inputs=book, outputs=[entry, *form, status])
        entry.input(self.pick_entry, inputs=[book, entry], outputs=[*form, status])
        save.click(self.save, inputs=[book, entry, *form], outputs=[book, entry, status])
        delete.click(self.ask_delete, inputs=[book, entry], outputs=[confirm_row, status])
        confirm.click(self.delete, inputs=[book, entry], outputs=[entry, *form, confirm_row, status])
        cancel.click(lambda: (gr.update(visible=False), ""), outputs=[confirm_row, status])
        entry.change(lambda: gr.update(visible=False), outputs=confirm_row)  # a new pick: ask again
        import_button.click(self.import_, inputs=[book, upload], outputs=[book, entry, status])
