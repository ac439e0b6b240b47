"""Character tab: pick, edit, create, save and delete personalities; import and export them.

The editor shows the fields a user edits (name, greeting, context, user name, sampler parameters, instruction
template, avatar). Saving loads the personality the editor was filled from and changes only those fields, so
everything else a personality holds (a card's character book, tags, alternate greetings, a Modelfile's
TEMPLATE, ...) is kept. Every error is shown in the status line; the fields keep what was typed.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import gradio as gr
import yaml
from PIL import Image
from pydantic import ValidationError

from webui.core.characters.store import (
    EXPORT_FORMATS,
    Character,
    CharacterError,
    CharacterStore,
    ExportFormat,
)
from webui.core.embeddings import EmbeddingError
from webui.core.knowledge import KnowledgeError
from webui.core.params import describe_validation_error
from webui.core.paths import InvalidNameError
from webui.core.safe_load import load_yaml
from webui.core.service import Service

MODEL_TEMPLATE = (
    "(model's own)"  # the instruction template choice meaning "the one found for the loaded model"
)
EXPORT_LABELS: dict[str, str] = {
    "yaml": "yaml: Palabre / text-generation-webui personality",
    "card-json": "card-json: Character Card V2 (JSON)",
    "card-png": "card-png: Character Card V2 (PNG with the avatar)",
    "modelfile": "modelfile: Ollama Modelfile",
}
PARAMETERS_HELP = "temperature: 0.7\ntop_p: 0.9"
EDITOR_FIELDS = 8  # name, greeting, context, user name, parameters, template, avatar, knowledge


def _warn(message: str) -> str:
    return f"⚠️ {message}"


def parse_parameters(text: str | None) -> dict[str, Any]:
    """The parameters textbox (YAML or JSON mapping of sampler settings) as a dict; CharacterError if it is not
    one. The keys and values are checked by the Character model."""
    text = text or ""
    if not text.strip():
        return {}
    try:
        data = load_yaml(text)  # bounded: a pasted YAML bomb is refused, not expanded
    except yaml.YAMLError as exc:
        raise CharacterError(f"Sampler parameters: not valid YAML or JSON ({exc}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CharacterError(
            "Sampler parameters: write one setting per line, like\n" + PARAMETERS_HELP.replace("\n", ", ")
        )
    return {str(key): value for key, value in data.items()}


def format_parameters(parameters: dict[str, Any]) -> str:
    """A personality's sampler parameters as the YAML its textbox shows ("" when there are none)."""
    if not parameters:
        return ""
    return yaml.safe_dump(parameters, sort_keys=False, allow_unicode=True).strip()


class CharacterTab:
    """The Character tab's widgets and handlers.

    The handlers are plain methods returning widget values and ``gr.update``s, so they are tested without a
    browser. After ``build()``, ``changed`` holds the events (save, delete, import) after which other tabs
    should refresh their personality lists (with ``names_update``).
    """

    def __init__(self, service: Service, *, scratch_dir: Path | None = None) -> None:
        if service.characters is None:
            raise ValueError("The Character tab needs a Service with a personality store.")
        self.service = service
        self.store: CharacterStore = service.characters
        self._scratch_dir = scratch_dir
        self.changed: list[Any] = []

    # -- pure handlers (no widgets needed) -------------------------------------------------------------

    def names_update(self) -> Any:
        """Refresh a personality dropdown's choices (its value is kept by the page)."""
        return gr.update(choices=self.store.names())

    def template_choices(self, extra: str | None = None) -> list[str]:
        names = [MODEL_TEMPLATE, *self.service.templates.names()]
        if extra and extra not in names:
            names.append(extra)  # a template that is missing now still shows what the personality asks for
        return names

    def _editor_values(self, character: Character) -> list[Any]:
        template = character.instruction_template
        avatar = self._avatar_copy(character.name)
        return [
            character.name,
            character.greeting,
            character.context,
            character.user_name or "",
            format_parameters(character.parameters),
            gr.update(choices=self.template_choices(template), value=template or MODEL_TEMPLATE),
            avatar,
            gr.update(choices=self.collection_choices(character.knowledge), value=list(character.knowledge)),
        ]

    def collection_choices(self, chosen: Sequence[str] = ()) -> list[str]:
        """The document collections a personality may answer from (and those it names that are gone)."""
        knowledge = self.service.knowledge
        names = [c.name for c in knowledge.store.collections()] if knowledge is not None else []
        return list(dict.fromkeys([*names, *chosen]))

    def add_documents(self, name: str, chosen: list[str] | None, files: Sequence[Any] | None) -> list[Any]:
        """Documents for the personality: added to a collection of its name, which it then answers from
        (once saved): [knowledge field, status]."""
        name = (name or "").strip()
        knowledge = self.service.knowledge
        if knowledge is None:
            return [gr.skip(), _warn("Document collections are not available here.")]
        if not name:
            return [gr.skip(), _warn("Type the personality's name first: its documents are kept under it.")]
        uploads = [Path(f if isinstance(f, str) else getattr(f, "name", str(f))) for f in files or []]
        try:
            report = knowledge.add_uploads(name, [(path.name, path.read_bytes()) for path in uploads])
        except (KnowledgeError, EmbeddingError, InvalidNameError, OSError) as exc:
            return [gr.skip(), _warn(str(exc))]
        value = list(dict.fromkeys([*(chosen or []), name]))
        added = ", ".join(report.added + report.updated) or "nothing new"
        problems = "".join(f" ⚠️ {n}: {m}" for n, m in report.failed)
        status = (
            f"Added {added} to the collection **{name}**; **Save** to keep it with the personality.{problems}"
        )
        return [gr.update(choices=self.collection_choices(value), value=value), status]

    def _avatar_copy(self, name: str) -> str | None:
        """A copy of ``name``'s avatar in the scratch folder (the page may only show files from there), or
        None when it has none or it cannot be read."""
        try:
            path = self.store.avatar_path(name)
            if path is None:
                return None
            target = self._scratch("avatars") / path.name
            target.write_bytes(path.read_bytes())
        except (CharacterError, OSError):
            return None
        return str(target)

    def _describe(self, name: str) -> str:
        if self.store.is_user_character(name):
            if self.store.is_bundled(name):
                return f"your own copy, which overrides the bundled **{name}**"
            return "your own personality"
        return "a bundled personality: saving it makes your own copy, which overrides the bundled one"

    def load(self, name: str | None) -> list[Any]:
        """Fill the editor from personality ``name``: [*editor fields, source name, status]."""
        if not name:
            return [*[gr.skip()] * EDITOR_FIELDS, gr.skip(), ""]
        try:
            character = self.store.load(name)
            values = self._editor_values(character)
        except CharacterError as exc:
            return [*[gr.skip()] * EDITOR_FIELDS, gr.skip(), _warn(str(exc))]
        return [*values, name, f"**{name}** loaded ({self._describe(name)})."]

    def new(self) -> list[Any]:
        """An empty editor: [dropdown, *editor fields, source name, status]."""
        return [
            gr.update(value=None),
            "",
            "",
            "",
            "",
            "",
            gr.update(choices=self.template_choices(), value=MODEL_TEMPLATE),
            None,
            gr.update(choices=self.collection_choices(), value=[]),
            None,
            "New personality: type a name, fill in the fields and click **Save**.",
        ]

    def build_character(
        self,
        source: str | None,
        name: str,
        greeting: str,
        context: str,
        user_name: str,
        parameters: str,
        template: str | None,
        knowledge: list[str] | None = None,
    ) -> Character:
        """The edited personality: ``source`` (the one the editor was filled from) with the edited fields
        changed, every other field kept. CharacterError names what is wrong."""
        name = (name or "").strip()
        if not name:
            raise CharacterError("Type a name for the personality first.")
        base: dict[str, Any] = {"name": name}
        if source:
            try:
                base = self.store.load(source).model_dump()
            except CharacterError:
                base = {"name": name}  # deleted meanwhile: save what the editor holds
        changes: dict[str, Any] = {
            "name": name,
            "greeting": greeting or "",
            "context": context or "",
            "user_name": (user_name or "").strip() or None,
            "parameters": parse_parameters(parameters),
            "instruction_template": None if template in (None, "", MODEL_TEMPLATE) else template,
        }
        if knowledge is not None:  # None: the field was not shown; keep what the file says
            changes["knowledge"] = [n for n in knowledge if isinstance(n, str) and n.strip()]
        if name != source:
            base.pop("avatar", None)  # the avatar file belongs to the source; a new one is written on save
        try:
            return Character.model_validate({**base, **changes})
        except ValidationError as exc:
            raise CharacterError(describe_validation_error(exc)) from None

    def _avatar_bytes(self, name: str, avatar: str | None) -> bytes | None:
        """The avatar image to write, or None when there is none or it is the one already saved."""
        if not avatar:
            return None
        try:
            raw = Path(avatar).read_bytes()
        except OSError as exc:
            raise CharacterError(f"The avatar image cannot be read: {exc.strerror or exc}") from None
        try:
            current = self.store.avatar_path(name) if name in self.store.names() else None
        except CharacterError:
            current = None
        if current is not None and current.read_bytes() == raw:
            return None
        return raw

    @staticmethod
    def check_avatar(avatar: Any) -> tuple[Any, str]:
        """An image was put on the avatar: (avatar, status). One that does not decode is taken off with the
        reason; left there, Gradio's own reading of it would refuse every Save with a traceback."""
        path = avatar.get("path") if isinstance(avatar, dict) else getattr(avatar, "path", None)
        if not path:
            return gr.skip(), gr.skip()
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            name = Path(str(path)).name
            return None, _warn(
                f"The avatar {name} is not an image that can be read ({exc}). Choose a PNG, JPEG, GIF or WebP."
            )
        return gr.skip(), gr.skip()

    def save(
        self,
        source: str | None,
        name: str,
        greeting: str,
        context: str,
        user_name: str,
        parameters: str,
        template: str | None,
        avatar: str | None,
        knowledge: list[str] | None = None,
    ) -> list[Any]:
        """Save the editor as the user's personality: [dropdown, source name, status]. On an error, only the
        status changes."""
        try:
            character = self.build_character(
                source, name, greeting, context, user_name, parameters, template, knowledge
            )
            overrides = self.store.is_bundled(character.name) and not self.store.is_user_character(
                character.name
            )
            replaces = self.store.is_user_character(character.name) and character.name != source
            path = self.store.save(character, avatar_bytes=self._avatar_bytes(character.name, avatar))
        except CharacterError as exc:
            return [gr.skip(), gr.skip(), _warn(str(exc))]
        except OSError as exc:
            return [gr.skip(), gr.skip(), _warn(f"Cannot save: {exc.strerror or exc}")]
        saved = character.name
        message = f"**{saved}** saved to `{path}`."
        if overrides:
            message += (
                f" It is your own copy of the bundled **{saved}** and overrides it"
                " (delete yours to get the bundled one back)."
            )
        elif replaces:
            message += f" It replaced your earlier personality **{saved}**."
        return [gr.update(choices=self.store.names(), value=saved), saved, message]

    def ask_delete(self, name: str | None) -> list[Any]:
        """Step one of Delete: [confirmation row, status]; a bundled or unknown name is refused here."""
        if not name:
            return [gr.update(visible=False), _warn("Pick a personality to delete first.")]
        if not self.store.is_user_character(name):
            if self.store.is_bundled(name):
                message = f'"{name}" is a bundled personality and cannot be deleted.'
            else:
                message = f'No personality of yours is named "{name}".'
            return [gr.update(visible=False), _warn(message)]
        question = f"Delete **{name}** (and its avatar) for good?"
        if self.store.is_bundled(name):
            question += f" The bundled **{name}** will be used again."
        return [gr.update(visible=True), question]

    def cancel_delete(self) -> list[Any]:
        return [gr.update(visible=False), "Nothing was deleted."]

    def delete(self, name: str | None) -> list[Any]:
        """Step two of Delete: [dropdown, *editor fields, source name, confirmation row, status]."""
        hide = gr.update(visible=False)
        try:
            if not name:
                raise CharacterError("Pick a personality to delete first.")
            self.store.delete(name)
        except CharacterError as exc:
            return [gr.skip(), *[gr.skip()] * EDITOR_FIELDS, gr.skip(), hide, _warn(str(exc))]
        except OSError as exc:
            message = _warn(f"Cannot delete: {exc.strerror or exc}")
            return [gr.skip(), *[gr.skip()] * EDITOR_FIELDS, gr.skip(), hide, message]
        message = f"**{name}** deleted."
        if self.store.is_bundled(name):  # the bundled personality of that name shows again
            loaded = self.load(name)
            dropdown = gr.update(choices=self.store.names(), value=name)
            return [dropdown, *loaded[:-1], hide, f"{message} The bundled **{name}** is used again."]
        cleared = self.new()
        dropdown = gr.update(choices=self.store.names(), value=None)
        return [dropdown, *cleared[1:-1], hide, message]

    def import_file(self, file: str | None, name: str, overwrite: bool) -> list[Any]:
        """Import a personality YAML/JSON, a Character Card (JSON/PNG) or an Ollama Modelfile and show it in
        the editor: [dropdown, *editor fields, source name, status]."""
        skipped = [gr.skip(), *[gr.skip()] * EDITOR_FIELDS, gr.skip()]
        if not file:
            return [*skipped, _warn("Drop a file to import first.")]
        try:
            result = self.store.import_with_notes(
                Path(file), name=(name or "").strip() or None, overwrite=bool(overwrite)
            )
        except CharacterError as exc:
            message = str(exc)
            if "already exists" in message:
                message += " Or tick **Overwrite** and click **Import** again to replace it."
            return [*skipped, _warn(message)]
        except OSError as exc:
            return [*skipped, _warn(f"Cannot import: {exc.strerror or exc}")]
        imported = result.character.name
        loaded = self.load(imported)
        lines = [f"Imported **{imported}** from `{Path(file).name}` (saved to `{result.path}`)."]
        lines += [f"- {note}" for note in result.notes]
        dropdown = gr.update(choices=self.store.names(), value=imported)
        return [dropdown, *loaded[:-1], "\n".join(lines)]

    def export(self, name: str | None, fmt: str) -> list[Any]:
        """Export personality ``name`` as ``fmt`` to a file for download: [file, status]."""
        if not name:
            return [None, _warn("Pick a personality to export first (save a new one first).")]
        if fmt not in EXPORT_FORMATS:
            return [None, _warn(f"Unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}.")]
        export_format = cast(ExportFormat, fmt)
        try:
            file_name, content = self.store.render_export(name, export_format)
            target = self._scratch("exports") / file_name
            target.write_bytes(content)
        except CharacterError as exc:
            return [None, _warn(str(exc))]
        except OSError as exc:
            return [None, _warn(f"Cannot write the export: {exc.strerror or exc}")]
        return [str(target), f"**{name}** exported as {fmt}: download `{file_name}` below."]

    def _scratch(self, kind: str) -> Path:
        """A new empty folder for a file the page offers (an export to download, an avatar to show): under
        ``scratch_dir`` if given, else gradio's temp folder (the only places the page may serve files from)."""
        base = (
            self._scratch_dir or Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "palabre"
        )
        folder = base / kind / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- layout ----------------------------------------------------------------------------------------

    def build(self, tab: gr.Tab | None = None) -> None:
        """Draw the tab (inside a ``gr.Tab``) and wire its own events. With ``tab`` (that ``gr.Tab``), the
        personality and template lists are refreshed each time the tab is shown, so they are current after a
        page reload and after changes made elsewhere."""
        with gr.Row():
            self.dropdown = gr.Dropdown(
                choices=self.store.names(),
                value=None,
                label="Personality",
                info="Pick one to edit it. Bundled ones are never changed: saving makes your own copy.",
                elem_id="character-dropdown",
                scale=3,
            )
            new = gr.Button("New", elem_id="character-new", scale=1)
            save = gr.Button("Save", variant="primary", elem_id="character-save", scale=1)
            delete = gr.Button("Delete", variant="stop", elem_id="character-delete", scale=1)
        with gr.Row(visible=False, elem_id="character-confirm-row") as self.confirm_row:
            confirm = gr.Button("Yes, delete it", variant="stop", elem_id="character-confirm-delete")
            cancel = gr.Button("Cancel", elem_id="character-cancel-delete")
        self.status = gr.Markdown(elem_id="character-status")
        self.source = gr.State(None)  # the personality the editor was filled from

        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    self.name = gr.Textbox(
                        label="Name", info="The character's name in the chat.", elem_id="character-name"
                    )
                    self.user_name = gr.Textbox(
                        label="Your name",
                        info="Optional: your name in chats with this personality.",
                        elem_id="character-user-name",
                    )
                self.greeting = gr.Textbox(
                    label="Greeting",
                    info="The first message of a new chat. {{char}} and {{user}} are filled in.",
                    lines=3,
                    max_lines=12,
                    elem_id="character-greeting",
                )
                self.context = gr.Textbox(
                    label="Context",
                    info="Who the character is: the system message (instruct) or the chat's opening text.",
                    lines=8,
                    max_lines=30,
                    elem_id="character-context",
                )
                with gr.Row():
                    self.parameters = gr.Textbox(
                        label="Sampler parameters",
                        info="Optional: settings applied over the preset, one per line (YAML or JSON); "
                        "for a thinking model also enable_thinking, reasoning_effort, thinking_budget.",
                        placeholder=PARAMETERS_HELP,
                        lines=4,
                        max_lines=16,
                        elem_id="character-parameters",
                    )
                    self.template = gr.Dropdown(
                        choices=self.template_choices(),
                        value=MODEL_TEMPLATE,
                        label="Instruction template",
                        info=f"{MODEL_TEMPLATE} = the template found for the loaded model.",
                        elem_id="character-template",
                    )
            with gr.Column(scale=1):
                self.avatar = gr.Image(
                    type="filepath",
                    image_mode=None,  # keep the uploaded file as it is (no conversion to RGB)
                    label="Avatar",
                    sources=["upload", "clipboard"],
                    height=260,
                    elem_id="character-avatar",
                )
                self.knowledge = gr.Dropdown(
                    choices=self.collection_choices(),
                    value=[],
                    multiselect=True,
                    label="Knowledge",
                    info="Document collections this personality answers from, citing them as [n].",
                    elem_id="character-knowledge",
                )
                documents = gr.UploadButton(
                    "Add documents", file_count="multiple", size="sm", elem_id="character-documents"
                )

        with gr.Row():
            with gr.Column(), gr.Group():
                self.import_box = gr.File(
                    label="Import: drop a personality (.yaml/.json), a Character Card (.json/.png) or an "
                    "Ollama Modelfile",
                    elem_id="character-import",
                )
                with gr.Row():
                    self.import_name = gr.Textbox(
                        label="Import as",
                        placeholder="(the name in the file)",
                        elem_id="character-import-name",
                        scale=2,
                    )
                    self.overwrite = gr.Checkbox(
                        label="Overwrite",
                        info="Replace your personality of the same name.",
                        elem_id="character-import-overwrite",
                        scale=1,
                    )
                import_button = gr.Button("Import", elem_id="character-import-button")
            with gr.Column(), gr.Group():
                self.export_format = gr.Dropdown(
                    choices=[(EXPORT_LABELS[fmt], fmt) for fmt in EXPORT_FORMATS],
                    value="yaml",
                    label="Export format",
                    elem_id="character-export-format",
                )
                export = gr.Button("Export", elem_id="character-export")
                self.export_file = gr.File(
                    label="Download", interactive=False, elem_id="character-export-file"
                )

        editor = [
            self.name,
            self.greeting,
            self.context,
            self.user_name,
            self.parameters,
            self.template,
            self.avatar,
            self.knowledge,
        ]
        assert len(editor) == EDITOR_FIELDS
        documents.upload(
            self.add_documents,
            inputs=[self.name, self.knowledge, documents],
            outputs=[self.knowledge, self.status],
        )
        self.dropdown.input(self.load, inputs=[self.dropdown], outputs=[*editor, self.source, self.status])
        new.click(self.new, outputs=[self.dropdown, *editor, self.source, self.status])
        save_event = save.click(
            self.save,
            inputs=[self.source, *editor],
            outputs=[self.dropdown, self.source, self.status],
        )
        # Unprocessed: the handler checks the file itself (Gradio's image reading would raise on a broken one).
        self.avatar.upload(
            self.check_avatar, inputs=[self.avatar], outputs=[self.avatar, self.status], preprocess=False
        )
        delete.click(self.ask_delete, inputs=[self.dropdown], outputs=[self.confirm_row, self.status])
        cancel.click(self.cancel_delete, outputs=[self.confirm_row, self.status])
        delete_event = confirm.click(
            self.delete,
            inputs=[self.dropdown],
            outputs=[self.dropdown, *editor, self.source, self.confirm_row, self.status],
        )
        import_outputs = [self.dropdown, *editor, self.source, self.status]
        import_inputs = [self.import_box, self.import_name, self.overwrite]
        upload_event = self.import_box.upload(self.import_file, inputs=import_inputs, outputs=import_outputs)
        import_event = import_button.click(self.import_file, inputs=import_inputs, outputs=import_outputs)
        export.click(
            self.export, inputs=[self.dropdown, self.export_format], outputs=[self.export_file, self.status]
        )
        self.changed = [save_event, delete_event, upload_event, import_event]
        if tab is not None:
            tab.select(self.refresh, outputs=self.refresh_outputs, show_progress="hidden")

    @property
    def refresh_outputs(self) -> list[Any]:
        """What ``refresh`` fills (page load): the personality and template dropdowns."""
        return [self.dropdown, self.template]

    def refresh(self) -> list[Any]:
        """Personality and template choices (page load; after templates change)."""
        return [self.names_update(), gr.update(choices=self.template_choices())]
