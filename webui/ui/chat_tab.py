"""Chat tab: the conversation streams into a Chatbot (Markdown, highlighted code, copy and edit per message).

The handlers live in chat_events.py; this module draws the tab and wires its events.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core.prompts import DEFAULT_CHAT_INSTRUCT_COMMAND
from webui.core.service import ChatSettings, Service
from webui.ui.chat_events import ChatHandlers
from webui.ui.convert import MODES
from webui.ui.parameters_tab import ParametersTab

__all__ = ["ChatHandlers", "ChatTab"]


class ChatTab:
    """Draws the Chat tab; ``wire`` connects it to the Parameters tab's widgets."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.handlers = ChatHandlers(service, params)
        self.params = params

    def build(self) -> None:
        """Draw the tab (inside a ``gr.Tab``); ``wire`` connects it once the Parameters tab exists."""
        self.history = gr.State([])
        self.chatbot = gr.Chatbot(
            label="Chat",
            elem_id="chatbot",
            height=520,
            buttons=["copy", "copy_all"],
            editable="all",
            render_markdown=True,
            group_consecutive_messages=False,  # one bubble per message, so edits map to one message
            feedback_options=None,
            placeholder="Load a model in the Model tab, then type a message below.",
        )
        with gr.Row():
            self.message = gr.Textbox(
                show_label=False,
                placeholder="Send a message (Enter sends, Shift+Enter for a new line)",
                lines=1,
                max_lines=12,
                scale=8,
                elem_id="chat-input",
                autofocus=True,
            )
            self.send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            self.stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
        with gr.Row():
            self.regenerate = gr.Button("Regenerate", size="sm", elem_id="chat-regenerate")
            self.cont = gr.Button("Continue", size="sm", elem_id="chat-continue")
            self.remove = gr.Button("Remove last", size="sm", elem_id="chat-remove-last")
            self.impersonate = gr.Button("Impersonate", size="sm", elem_id="chat-impersonate")
            self.clear = gr.Button("New chat", size="sm", elem_id="chat-clear")
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
            self.system = gr.Textbox(label="System message (instruct)", lines=3, elem_id="chat-system")
            with gr.Row():
                self.character = gr.Textbox(
                    label="Character name (chat)", value=ChatSettings().character_name
                )
                self.user = gr.Textbox(label="Your name (chat)", value=ChatSettings().user_name)
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

    @property
    def values(self) -> list[Any]:
        """The widgets every chat handler reads: the chat settings, the template, then the parameters."""
        settings = [self.mode, self.system, self.character, self.user, self.context, self.command]
        return [*settings, self.params.template, *self.params.components]

    def wire(self, jobs: gr.State) -> list[Any]:
        """Connect the buttons; returns the reply events (the page refreshes the status after them)."""
        h = self.handlers
        values = self.values
        outputs = [self.history, self.chatbot, self.message, self.status]
        stream_opts: dict[str, Any] = {
            "outputs": outputs,
            "show_progress": "minimal",
            "concurrency_limit": None,
        }
        history_inputs = [self.history, jobs, *values]
        reply_inputs = [self.start_with, *history_inputs]
        events = [
            self.send.click(h.send, inputs=[self.message, *reply_inputs], **stream_opts),
            self.message.submit(h.send, inputs=[self.message, *reply_inputs], **stream_opts),
            self.regenerate.click(h.regenerate, inputs=reply_inputs, **stream_opts),
            self.cont.click(h.continue_reply, inputs=reply_inputs, **stream_opts),
            self.impersonate.click(h.impersonate, inputs=history_inputs, **stream_opts),
        ]
        quick: dict[str, Any] = {"outputs": outputs, "show_progress": "hidden"}
        self.stop.click(h.stop, inputs=[jobs], outputs=None, queue=False, show_progress="hidden")
        changes = [
            self.remove.click(h.remove_last, inputs=[self.history, jobs], **quick),
            self.clear.click(h.clear, inputs=[jobs], **quick),
            self.chatbot.clear(h.clear, inputs=[jobs], **quick),
            self.chatbot.edit(h.edit, inputs=[self.history, jobs], **quick),
        ]
        meter: dict[str, Any] = {
            "inputs": [self.history, *values],
            "outputs": [self.meter],
            "show_progress": "hidden",
        }
        for event in (*events, *changes):
            event.then(h.meter, **meter)
        self.mode.change(h.meter, **meter)
        self.params.template.change(h.meter, **meter)
        return events

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
