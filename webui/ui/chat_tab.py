"""Chat tab: stored conversations (a list beside the chat) and a Chatbot the reply streams into (Markdown,
highlighted code, copy and edit per message, ◀ / ▶ between the versions of a regenerated reply).

The handlers live in chat_events.py and conversations_panel.py; this module draws the tab and wires events.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core.agent import ApprovalGate, Toolbox
from webui.core.prompts import DEFAULT_CHAT_INSTRUCT_COMMAND
from webui.core.service import ChatSettings, Service
from webui.core.settings import SettingsFile
from webui.ui.chat_events import ChatHandlers
from webui.ui.chat_media import BOX_FILE_TYPES
from webui.ui.conversations_panel import ConversationHandlers
from webui.ui.convert import MODES, NO_PERSONALITY
from webui.ui.knowledge_picker import KnowledgePicker
from webui.ui.parameters_tab import ParametersTab
from webui.ui.tools_panel import ToolsPanel

__all__ = ["ChatHandlers", "ChatTab", "ConversationHandlers"]


class ChatTab:
    """Draws the Chat tab (the conversation list beside the chat); ``wire`` connects it to the Parameters tab's
    widgets."""

    def __init__(
        self,
        service: Service,
        params: ParametersTab,
        settings: SettingsFile | None = None,
        toolbox: Toolbox | None = None,
    ) -> None:
        self.tools = ToolsPanel(toolbox)
        self.handlers = ChatHandlers(service, params, self.tools)
        self.panel = ConversationHandlers(self.handlers, settings)
        self.params = params
        handlers = self.handlers
        self.picker = KnowledgePicker(
            service.knowledge, lambda: handlers.conversations, handlers._new_conversation
        )

    def refresh_characters(self, current: str | None = None) -> Any:
        """The personality dropdown's update after personalities were created or deleted (Character tab).

        Wire it with ``inputs=[chat.personality], outputs=[chat.personality]``.
        """
        return self.panel.refresh_characters(current)

    def _build_sidebar(self) -> None:
        self.personality = gr.Dropdown(
            self.panel.personality_choices(),
            value=NO_PERSONALITY,
            label="Personality",
            info="Picking one starts a new conversation with it.",
            elem_id="chat-personality",
        )
        self.new_chat = gr.Button("New chat", variant="primary", size="sm", elem_id="chat-clear")
        self.search = gr.Textbox(
            show_label=False, placeholder="Search titles and messages", elem_id="chat-search", lines=1
        )
        self.show_all = gr.Checkbox(label="All personalities", value=False, elem_id="chat-show-all")
        self.conversation_list = gr.Radio(
            [], label="Conversations", elem_id="chat-conversations", elem_classes=["conversation-list"]
        )
        with gr.Accordion("Rename, delete, branch, export, import", open=False, elem_id="chat-manage"):
            self.title = gr.Textbox(show_label=False, placeholder="New title", elem_id="chat-title", lines=1)
            self.rename = gr.Button("Rename", size="sm", elem_id="chat-rename")
            self.delete = gr.Button("Delete", size="sm", variant="stop", elem_id="chat-delete")
            with gr.Row():
                self.confirm_delete = gr.Button(
                    "Confirm delete", size="sm", variant="stop", visible=False, elem_id="chat-delete-confirm"
                )
                self.cancel_delete = gr.Button(
                    "Cancel", size="sm", visible=False, elem_id="chat-delete-cancel"
                )
            self.branch_from = gr.Number(
                label="Branch from message #",
                info="Click a message to pick it; empty = the last one.",
                precision=0,
                minimum=1,
                elem_id="chat-branch-number",
            )
            self.branch = gr.Button("Branch here", size="sm", elem_id="chat-branch")
            self.export = gr.Button("Export JSON", size="sm", elem_id="chat-export")
            self.export_file = gr.File(label="Download", visible=False, elem_id="chat-export-file")
            self.import_button = gr.UploadButton(
                "Import JSON", file_types=[".json"], size="sm", elem_id="chat-import"
            )

    def build(self) -> None:
        """Draw the tab (inside a ``gr.Tab``); ``wire`` connects it once the Parameters tab exists."""
        self.history = gr.State([])
        self.conversation = gr.State(None)
        self.remembered = gr.BrowserState(None, storage_key="palabre-conversation", secret="palabre")
        self.gate = gr.State(ApprovalGate(), delete_callback=lambda gate: gate.cancel())
        folders = self.handlers.media.folders()
        if folders:  # the stored images and files are served as they are (see PageMedia)
            gr.set_static_paths(folders)
            self.handlers.media.direct = True
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=240, elem_id="chat-sidebar"):
                self._build_sidebar()
            with gr.Column(scale=4):
                self._build_chat()

    def _build_chat(self) -> None:
        self.chatbot = gr.Chatbot(
            label="Chat",
            elem_id="chatbot",
            height=520,
            buttons=["copy", "copy_all"],
            editable="all",
            render_markdown=True,
            group_consecutive_messages=False,  # one bubble per message, so edits map to one message
            feedback_options=None,
            placeholder="Type a message below to start a conversation.",
        )
        self.tools.build_approval()  # shown while a tool call waits for the user's answer
        with gr.Row(equal_height=True):
            self.previous = gr.Button("◀", size="sm", visible=False, scale=0, elem_id="chat-alt-prev")
            self.versions = gr.Markdown(visible=False, elem_id="chat-alt-label")
            self.next = gr.Button("▶", size="sm", visible=False, scale=0, elem_id="chat-alt-next")
        with gr.Row():
            # Images and documents come with the message: the 📎 button, a paste, or a drop on the box.
            self.message = gr.MultimodalTextbox(
                show_label=False,
                placeholder="Send a message (Enter sends, Shift+Enter for a new line); attach, paste or drop "
                "images and documents",
                lines=1,
                max_lines=12,
                scale=8,
                elem_id="chat-input",
                autofocus=True,
                sources=["upload"],
                file_types=BOX_FILE_TYPES,
                file_count="multiple",
                submit_btn=False,  # the Send button beside it sends
                max_plain_text_length=1_000_000,  # pasted text stays text (a long paste would become a file)
            )
            self.send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            self.stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        with gr.Row(equal_height=True, elem_id="chat-thinking"):  # shown for a model that thinks
            self.params.build_thinking()
        with gr.Row():
            self.regenerate = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
            self.cont = gr.Button("Continue", size="sm", elem_id="chat-continue")
            self.remove = gr.Button("Remove last", size="sm", elem_id="chat-remove-last")
            self.impersonate = gr.Button("Impersonate", size="sm", elem_id="chat-impersonate")
        with gr.Row(equal_height=True):
            self.status = gr.Markdown(elem_id="chat-status")
            self.meter = gr.Markdown(elem_id="chat-context")
        with gr.Row():
            self.mode = gr.Radio(
                list(MODES),
                value="instruct",
                label="Mode",
                info="instruct: the model's template; chat: a character; chat-instruct: both.",
                elem_id="chat-mode",
                scale=2,
            )
            self.start_with = gr.Textbox(
                label="Start reply with",
                placeholder="e.g. Sure thing!",
                info="The next reply begins with this text and the model continues it.",
                elem_id="chat-start-with",
                scale=2,
            )
        with gr.Row():
            self.to_default = gr.Button("Send to Default", size="sm", elem_id="chat-to-default")
            self.to_notebook = gr.Button("Send to Notebook", size="sm", elem_id="chat-to-notebook")
        with gr.Accordion("Conversation settings", open=False):
            gr.Markdown("With a personality chosen, its name and context are used instead of these.")
            self.system = gr.Textbox(label="System message (instruct)", lines=3, elem_id="chat-system")
            with gr.Row():
                self.character = gr.Textbox(
                    label="Character name (chat)", value=ChatSettings().character_name
                )
                self.user = gr.Textbox(
                    label="Your name (chat)", placeholder=ChatSettings().user_name, elem_id="chat-user"
                )
            self.context = gr.Textbox(
                label="Context (chat)", lines=4, info="Who the character is, the scene."
            )
            self.command = gr.Textbox(
                label="Chat-instruct command",
                value=DEFAULT_CHAT_INSTRUCT_COMMAND,
                lines=4,
                info="Wraps the chat for an instruction model; <|character|> and <|prompt|> are filled in.",
                elem_id="chat-command",
            )
        self.tools.build()
        self.knowledge = self.picker.build()

    @property
    def values(self) -> list[Any]:
        """The widgets every chat handler reads: the personality, the chat settings, the template, then the
        parameters."""
        settings = [self.personality, self.mode, self.system, self.character, self.user, self.context]
        return [*settings, self.command, self.params.template, *self.params.components]

    @property
    def view_outputs(self) -> list[Any]:
        """What every chat update writes (see chat_events.Update)."""
        return [self.conversation, self.history, self.chatbot, self.message, self.status]

    def _decorate(self, event: Any) -> Any:
        """After ``event``: the conversation list, the versions of the last reply, the remembered id, the meter."""
        event.then(
            self.panel.decorate,
            inputs=[self.conversation, self.personality, self.show_all, self.search],
            outputs=[self.conversation_list, self.versions, self.previous, self.next, self.remembered],
            show_progress="hidden",
        )
        event.then(
            self.handlers.meter,
            inputs=[self.history, *self.values],
            outputs=[self.meter],
            show_progress="hidden",
        )
        return event

    def wire(self, jobs: gr.State) -> list[Any]:
        """Connect the buttons; returns the reply events (the page refreshes the status after them)."""
        h = self.handlers
        values = self.values
        outputs = self.view_outputs
        stream_opts: dict[str, Any] = {
            "outputs": outputs,
            "show_progress": "minimal",
            "concurrency_limit": None,
        }
        conversation_inputs = [self.conversation, jobs, *values]
        reply_inputs = [self.start_with, *conversation_inputs]
        tool_inputs = [self.tools.use, self.gate]
        tool_opts = {**stream_opts, "outputs": [*outputs, self.tools.approval, self.tools.approval_md]}
        send_inputs = [*tool_inputs, self.message, *reply_inputs]
        events = [
            self.send.click(h.send_tools, inputs=send_inputs, **tool_opts),
            self.message.submit(h.send_tools, inputs=send_inputs, **tool_opts),
            self.regenerate.click(h.regenerate_tools, inputs=[*tool_inputs, *reply_inputs], **tool_opts),
            self.cont.click(h.continue_reply, inputs=reply_inputs, **stream_opts),
            self.impersonate.click(h.impersonate, inputs=conversation_inputs, **stream_opts),
        ]
        quick: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden"}
        self.stop.click(h.stop, inputs=[jobs], outputs=None, queue=False, show_progress="hidden")
        changes = [
            self.remove.click(h.remove_last, inputs=[self.conversation, jobs], **quick),
            self.chatbot.edit(h.edit, inputs=[self.conversation, jobs], **quick),
            self.previous.click(h.previous_alternative, inputs=[self.conversation, jobs], **quick),
            self.next.click(h.next_alternative, inputs=[self.conversation, jobs], **quick),
        ]
        for event in (*events, *changes, *self._wire_panel(jobs)):
            self._decorate(event)
        self.tools.wire(self.gate)
        self._decorate(
            self.knowledge.input(
                self.picker.choose,
                inputs=[self.knowledge, self.conversation, *values],
                outputs=[self.conversation, self.status],
                show_progress="hidden",
            )
        )
        for trigger in (self.conversation.change, self.knowledge.focus):  # focus: collections made since
            trigger(
                self.picker.show, inputs=[self.conversation], outputs=[self.knowledge], show_progress="hidden"
            )
        meter: dict[str, Any] = {
            "inputs": [self.history, *values],
            "outputs": [self.meter],
            "show_progress": "hidden",
        }
        self.mode.change(h.meter, **meter)
        self.params.template.change(h.meter, **meter)
        for spec, widget in zip(self.params.specs, self.params.components, strict=True):
            if spec.name in ("max_new_tokens", "truncation_length"):  # the meter's "kept for the reply" part
                widget.change(h.meter, **meter)
        return events

    def _wire_panel(self, jobs: gr.State) -> list[Any]:
        """The conversation list's events; returns those that change the conversation shown."""
        p = self.panel
        quick: dict[str, Any] = {"show_progress": "hidden"}
        shown = [*self.view_outputs, self.personality]
        start_inputs = [self.personality, self.mode, self.user, jobs]
        list_inputs = [self.conversation, self.personality, self.show_all, self.search]
        for trigger in (self.search.change, self.show_all.input):
            trigger(p.listing, inputs=list_inputs, outputs=[self.conversation_list], **quick)
        self.rename.click(
            p.rename, inputs=[self.conversation, self.title], outputs=[self.status, self.title], **quick
        ).then(p.listing, inputs=list_inputs, outputs=[self.conversation_list], **quick)
        confirm = [self.confirm_delete, self.cancel_delete]
        self.delete.click(p.ask_delete, inputs=[self.conversation], outputs=[*confirm, self.status], **quick)
        self.cancel_delete.click(p.cancel_delete, outputs=[*confirm, self.status], **quick)
        self.chatbot.select(p.branch_number, inputs=[self.conversation], outputs=[self.branch_from], **quick)
        self.export.click(
            p.export, inputs=[self.conversation], outputs=[self.export_file, self.status], **quick
        )
        return [
            self.conversation_list.input(
                p.open, inputs=[self.conversation_list, jobs], outputs=[*shown, self.remembered], **quick
            ),
            self.personality.select(
                p.choose_personality, inputs=start_inputs, outputs=self.view_outputs, **quick
            ),
            self.new_chat.click(p.new_chat, inputs=start_inputs, outputs=self.view_outputs, **quick),
            self.chatbot.clear(p.new_chat, inputs=start_inputs, outputs=self.view_outputs, **quick),
            self.confirm_delete.click(
                p.delete,
                inputs=[self.conversation, self.personality, jobs],
                outputs=[*self.view_outputs, *confirm],
                **quick,
            ),
            self.branch.click(
                p.branch,
                inputs=[self.conversation, self.branch_from, jobs],
                outputs=self.view_outputs,
                **quick,
            ),
            self.import_button.upload(
                p.import_file, inputs=[self.import_button, self.personality, jobs], outputs=shown, **quick
            ),
        ]

    def wire_load(self, blocks: gr.Blocks) -> Any:
        """Page load: show the conversation this browser showed last (or the most recent one), and the Tools
        panel as saved."""
        blocks.load(self.tools.refresh, outputs=self.tools.refresh_outputs, show_progress="hidden")
        blocks.load(
            self.picker.show, inputs=[self.conversation], outputs=[self.knowledge], show_progress="hidden"
        )
        event = blocks.load(
            self.panel.restore,
            inputs=[self.remembered],
            outputs=[*self.view_outputs, self.personality],
            show_progress="hidden",
        )
        return self._decorate(event)

    def _send_to(self, tab_id: str) -> Any:
        def send(history: Any, start_with: str, *values: Any) -> tuple[Any, Any, Any]:
            text, status = self.handlers.prompt_text(history, start_with, *values)
            if text is None:
                return gr.skip(), gr.skip(), status
            return text, gr.Tabs(selected=tab_id), gr.skip()

        return send

    def wire_send_to(
        self, tabs: gr.Tabs, default_box: gr.Textbox, notebook_box: gr.Textbox
    ) -> tuple[Any, Any]:
        """Send to Default / Notebook: the next reply's prompt goes into that tab's box, which is shown.

        Returns the two click events (Default's, Notebook's).
        """
        events = []
        for button, tab_id, box in (
            (self.to_default, "default", default_box),
            (self.to_notebook, "notebook", notebook_box),
        ):
            events.append(
                button.click(
                    self._send_to(tab_id),
                    inputs=[self.history, self.start_with, *self.values],
                    outputs=[box, tabs, self.status],
                    show_progress="hidden",
                )
            )
        return events[0], events[1]
