"""The conversation list beside the chat: personality, search, new / rename / delete / branch / export / import.

The handlers return page updates in the Chat tab's order (see chat_events.Update); ChatTab wires them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from webui.core.chats.records import ChatStoreError, Conversation
from webui.core.safe_load import load_json
from webui.core.settings import SettingsFile
from webui.ui.chat_events import ERRORS, ChatHandlers, Update, status_only, warn
from webui.ui.convert import (
    MODES,
    NO_PERSONALITY,
    InputError,
    alternative_label,
    chatbot_entry,
    conversation_label,
    export_file_name,
    history_from,
    message_at,
    personality_name,
    visible_positions,
)
from webui.ui.state import CHAT, SessionJobs

LIST_LIMIT = 200


class ConversationHandlers:
    """What the conversation list's widgets do, over the chat handlers' store."""

    def __init__(self, chat: ChatHandlers, settings: SettingsFile | None = None) -> None:
        self.chat = chat
        self.settings = settings

    # -- personalities -------------------------------------------------------------------------------------

    def personality_names(self) -> list[str]:
        characters = self.chat.service.characters
        return characters.names() if characters is not None else []

    def personality_choices(self) -> list[str]:
        return [NO_PERSONALITY, *self.personality_names()]

    def shown_personality(self, name: str | None) -> str:
        """The dropdown value for ``name`` ("(none)" when it is None or no longer exists)."""
        return name if name is not None and name in self.personality_names() else NO_PERSONALITY

    def refresh_characters(self, current: str | None = None) -> Any:
        """The personality dropdown with the current personalities (after one is created or deleted)."""
        choices = self.personality_choices()
        if current is None:
            return gr.update(choices=choices)
        return gr.update(choices=choices, value=current if current in choices else NO_PERSONALITY)

    def remember(self, name: str | None) -> str:
        if self.settings is None:
            return ""
        try:
            self.settings.update(character=name)
        except (OSError, ValueError) as exc:
            return warn(f"The personality could not be remembered: {exc}")
        return ""

    # -- the list ------------------------------------------------------------------------------------------

    def listing(self, conversation_id: Any, personality: Any, show_all: bool, search: str | None) -> Any:
        """The conversation list: the personality's conversations (or all), newest first, matching ``search``."""
        store = self.chat.service.chats
        if store is None:
            return gr.update(choices=[], value=None)
        character: Any = ... if show_all else personality_name(personality)
        try:
            found = store.conversations(character=character, search=search or None, limit=LIST_LIMIT)
        except ChatStoreError as exc:
            warn(str(exc))
            found = []
        choices = [(conversation_label(s, show_character=bool(show_all)), s.id) for s in found]
        ids = {s.id for s in found}
        return gr.update(choices=choices, value=conversation_id if conversation_id in ids else None)

    def decorate(
        self, conversation_id: Any, personality: Any, show_all: bool, search: str | None
    ) -> tuple[Any, Any, Any, Any, Any]:
        """After any change: (the list, the "2/3" versions label, ◀, ▶, the id the browser remembers)."""
        conversation = self.chat.conversation(conversation_id)
        label = alternative_label(conversation)
        shown = gr.update(visible=label is not None)
        return (
            self.listing(conversation_id, personality, show_all, search),
            gr.update(value=f"Reply version **{label}**" if label else "", visible=label is not None),
            shown,
            shown,
            conversation.id if conversation is not None else None,
        )

    # -- opening and starting conversations ----------------------------------------------------------------

    def _show(self, conversation: Conversation | None, status: Any = "") -> tuple[Any, ...]:
        """(*the page update, the personality dropdown value)."""
        name = conversation.character if conversation is not None else None
        personality = gr.update(choices=self.personality_choices(), value=self.shown_personality(name))
        return (*self.chat.view(conversation, status), personality)

    def open(self, clicked: Any, jobs: SessionJobs) -> tuple[Any, ...]:
        """A conversation in the list was clicked: show it (a reply being written is stopped and kept).

        Returns the page update, the personality dropdown and the id this browser remembers.
        """
        jobs.discard(CHAT)
        conversation = self.chat.conversation(clicked)
        if conversation is None:
            return (*self.chat.view(None, warn("That conversation no longer exists.")), gr.skip(), None)
        return (*self._show(conversation), conversation.id)  # remembered at once (a reload may follow)

    def new_chat(self, personality: Any, mode: str, user: str | None, jobs: SessionJobs) -> Update:
        """A new conversation with the chosen personality (its greeting first); without one, an empty chat
        that is saved with its first message."""
        jobs.discard(CHAT)
        name = personality_name(personality)
        if name is None:
            return self.chat.view(None, "", "")
        try:
            conversation = self.chat.conversations.start(
                name,
                mode=mode if mode in MODES else "instruct",  # type: ignore[arg-type]
                user_name=(user or "").strip() or None,
            )
        except ERRORS as exc:
            return self.chat.view(None, warn(str(exc)), "")
        return self.chat.view(conversation, "", "")

    def choose_personality(self, personality: Any, mode: str, user: str | None, jobs: SessionJobs) -> Update:
        """A personality was picked: remember it and start a conversation with it."""
        remembered = self.remember(personality_name(personality))
        *update, status = self.new_chat(personality, mode, user, jobs)
        return (*update, status or remembered)

    def restore(self, remembered: Any) -> tuple[Any, ...]:
        """Page load: the conversation this browser showed last, else the most recently changed one."""
        conversation = self.chat.conversation(remembered)
        store = self.chat.service.chats
        if conversation is None and store is not None:
            try:
                recent = store.conversations(limit=1)
            except ChatStoreError:
                recent = []
            conversation = self.chat.conversation(recent[0].id) if recent else None
        if conversation is not None:
            return self._show(conversation, gr.skip())  # the status line shows the loaded model
        saved = self.settings.load().character if self.settings is not None else None
        choices = self.personality_choices()
        update = gr.update(choices=choices, value=self.shown_personality(saved))
        return (*self.chat.view(None, gr.skip()), update)

    # -- rename, delete, branch ----------------------------------------------------------------------------

    def rename(self, conversation_id: Any, title: str | None) -> tuple[Any, Any]:
        """(status, the title box) after renaming the shown conversation."""
        if not isinstance(conversation_id, int):
            return warn("There is no conversation to rename yet: send a message first."), gr.skip()
        try:
            self.chat.store.rename(conversation_id, title or "")
        except ChatStoreError as exc:
            return warn(str(exc)), gr.skip()
        return "Conversation renamed.", ""

    def ask_delete(self, conversation_id: Any) -> tuple[Any, Any, Any]:
        """Delete, first click: show the confirmation buttons (nothing is deleted yet)."""
        conversation = self.chat.conversation(conversation_id)
        if conversation is None:
            return gr.skip(), gr.skip(), warn("There is no conversation to delete.")
        ask = f'Delete "{conversation.title}" and its {len(conversation.messages)} messages? Confirm below.'
        return gr.update(visible=True), gr.update(visible=True), ask

    @staticmethod
    def cancel_delete() -> tuple[Any, Any, Any]:
        return gr.update(visible=False), gr.update(visible=False), "Not deleted."

    def delete(self, conversation_id: Any, personality: Any, jobs: SessionJobs) -> tuple[Any, ...]:
        """Confirmed: delete the shown conversation; the personality's most recent other one is shown."""
        hide = (gr.update(visible=False), gr.update(visible=False))
        conversation = self.chat.conversation(conversation_id)
        if conversation is None:
            return (*self.chat.view(None, warn("There is no conversation to delete.")), *hide)
        jobs.discard(CHAT)
        try:
            self.chat.conversations.delete(conversation.id)
            left = self.chat.store.conversations(character=personality_name(personality), limit=1)
        except ChatStoreError as exc:
            return (*self.chat.view(conversation, warn(str(exc))), *hide)
        shown = self.chat.conversation(left[0].id) if left else None
        return (*self.chat.view(shown, f'Deleted "{conversation.title}".'), *hide)

    def branch(self, conversation_id: Any, number: Any, jobs: SessionJobs) -> Update:
        """A new conversation with the messages up to message ``number`` (1 = the first shown)."""
        conversation = self.chat.conversation(conversation_id)
        if conversation is None:
            return self.chat.view(None, warn("There is no conversation to branch yet."))
        try:
            shown = len(visible_positions(history_from(conversation)))
            index = int(number) - 1 if number not in (None, "") else shown - 1
            if not 0 <= index < shown:
                raise InputError(f"There is no message #{index + 1}: this conversation shows {shown}.")
            message = message_at(conversation, index)
            summary = self.chat.store.branch(conversation.id, message.id)
        except (ValueError, TypeError, *ERRORS) as exc:
            text = str(exc) if isinstance(exc, (InputError, ChatStoreError)) else f"No message #{number}."
            return self.chat.view(conversation, warn(text))
        jobs.discard(CHAT)
        return self.chat.view(self.chat.conversation(summary.id), f"Branched at message #{index + 1}.")

    def branch_number(self, conversation_id: Any, event: gr.SelectData) -> Any:
        """A message was clicked in the Chatbot: it becomes the "branch from message #" (a reply's reasoning
        block counts as that reply)."""
        try:
            shown, _ = chatbot_entry(history_from(self.chat.conversation(conversation_id)), event.index)
        except InputError:
            return gr.skip()
        return shown + 1

    # -- export / import -----------------------------------------------------------------------------------

    def export(self, conversation_id: Any) -> tuple[Any, str]:
        """(the file to download, status): the shown conversation as Palabre's JSON, every version included."""
        conversation = self.chat.conversation(conversation_id)
        if conversation is None:
            return gr.update(value=None, visible=False), warn("There is no conversation to export yet.")
        try:
            data = self.chat.store.export_json(conversation.id)
            folder = Path(tempfile.mkdtemp(prefix="palabre-export-"))
            path = folder / export_file_name(conversation.title)
            path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        except (ChatStoreError, OSError) as exc:
            return gr.update(value=None, visible=False), warn(f"Export failed: {exc}")
        return gr.update(value=str(path), visible=True), f'Exported "{conversation.title}".'

    def import_file(self, file: Any, personality: Any, jobs: SessionJobs) -> tuple[Any, ...]:
        """An uploaded chat file (Palabre's JSON or text-generation-webui's history) becomes a conversation."""
        path = getattr(file, "name", file)
        if not path:
            return (*status_only(warn("No file was uploaded.")), gr.skip())
        try:
            data = load_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return (*status_only(warn(f"This is not a JSON chat file: {exc}")), gr.skip())
        own = isinstance(data, dict) and data.get("format") == "palabre-chat"
        try:
            summary = self.chat.store.import_json(
                data, character=None if own else personality_name(personality)
            )
        except ChatStoreError as exc:
            return (*status_only(warn(f"Import failed: {exc}")), gr.skip())
        jobs.discard(CHAT)
        return self._show(self.chat.conversation(summary.id), f'Imported "{summary.title}".')
