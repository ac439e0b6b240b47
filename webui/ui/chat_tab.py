"""Chat tab: the conversation streams into a Chatbot; Stop cancels only this session's reply."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from webui.core.engine import EngineError
from webui.core.prompts import DEFAULT_CHAT_INSTRUCT_COMMAND, PromptError
from webui.core.service import ChatSettings, ReplyStream, Service
from webui.core.templates import TemplateError
from webui.ui.convert import (
    GENERATING,
    MODES,
    InputError,
    Message,
    chat_settings,
    chatbot_view,
    drop_trailing_replies,
    normalize_history,
    remove_last_exchange,
    throttled_text,
    to_chat_messages,
)
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import CHAT, SessionJobs

# One page update: (history state, chatbot, message box, status markdown)
Update = tuple[Any, Any, Any, Any]
_SETTINGS_COUNT = 7  # mode, system message, character, user name, context, chat-instruct command, template


def _warn(message: str) -> str:
    gr.Warning(message)
    return f"⚠️ {message}"


class ChatHandlers:
    """The Chat tab's event handlers; ``values`` are the chat settings then the Parameters tab's widgets."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.service = service
        self.params = params

    def _read(self, values: Sequence[Any]) -> tuple[ChatSettings, Any]:
        settings_values, param_values = values[:_SETTINGS_COUNT], values[_SETTINGS_COUNT:]
        return chat_settings(*settings_values), self.params.read(param_values)

    def status(self) -> str:
        return self.service.status_line()

    # -- streaming ----------------------------------------------------------------------------------------

    def _start(
        self,
        jobs: SessionJobs,
        history: list[Message],
        values: Sequence[Any],
        *,
        continue_last: bool = False,
        impersonate: bool = False,
    ) -> ReplyStream | str:
        """Start a reply for ``history``: the stream, or the error text to show."""
        if jobs.busy(CHAT):
            return _warn("A reply is still being generated: press Stop first.")
        try:
            settings, params = self._read(values)
            stream = self.service.stream_chat_reply(
                to_chat_messages(history),
                settings,
                params,
                continue_last=continue_last,
                impersonate=impersonate,
            )
        except (InputError, EngineError, PromptError, TemplateError) as exc:
            return _warn(str(exc))
        if not jobs.start(CHAT, stream):
            stream.cancel()
            return _warn("A reply is still being generated: press Stop first.")
        return stream

    def _stream(
        self,
        jobs: SessionJobs,
        stream: ReplyStream,
        render: Callable[[str], Update],
        first: Update,
    ) -> Iterator[Update]:
        """Yield ``first``, then ``render(text so far)`` at most every ~50 ms, then the final text and status.

        If the conversation was cleared meanwhile (the job discarded), only the status is updated at the end.
        """
        text = ""
        error = ""
        try:
            yield first
            try:
                for text in throttled_text(stream):
                    if not jobs.owns(CHAT, stream):
                        break
                    yield render(text)
            except EngineError as exc:
                error = _warn(str(exc))
            discarded = not jobs.owns(CHAT, stream)
        finally:
            jobs.finish(CHAT, stream)
            stream.cancel()  # no-op when it ended; stops the model if the page went away mid-reply
        status = error or self.status()
        if discarded:
            yield gr.skip(), gr.skip(), gr.skip(), status
        else:
            *update, _ = render(text)
            yield (*update, status)

    def _reply(
        self, jobs: SessionJobs, history: list[Message], stream: ReplyStream, first: Update, base: str = ""
    ) -> Iterator[Update]:
        """Stream the reply into the last (assistant) message of ``history``; drop it if it stays empty."""

        def render(text: str) -> Update:
            history[-1] = {"role": "assistant", "content": base + text}
            shown = history if history[-1]["content"] else history[:-1]
            return list(shown), chatbot_view(shown), gr.skip(), gr.skip()

        yield from self._stream(jobs, stream, render, first)

    # -- events -------------------------------------------------------------------------------------------

    def send(self, text: str, history: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Send the typed message and stream the reply."""
        history = normalize_history(history)
        text = text or ""
        if not text.strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        history.append({"role": "user", "content": text})
        started = self._start(jobs, history, values)
        if isinstance(started, str):
            history.pop()  # history kept as it was; the message stays in the box
            yield history, chatbot_view(history), gr.skip(), started
            return
        first = (list(history), chatbot_view(history), "", GENERATING)
        history.append({"role": "assistant", "content": ""})
        yield from self._reply(jobs, history, started, first)

    def regenerate(self, history: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Replace the last reply with a new one."""
        history = drop_trailing_replies(normalize_history(history))
        if not history:
            yield gr.skip(), gr.skip(), gr.skip(), _warn("Nothing to regenerate yet.")
            return
        started = self._start(jobs, history, values)
        if isinstance(started, str):
            yield gr.skip(), gr.skip(), gr.skip(), started
            return
        first = (list(history), chatbot_view(history), gr.skip(), GENERATING)
        history.append({"role": "assistant", "content": ""})
        yield from self._reply(jobs, history, started, first)

    def continue_reply(self, history: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Make the last reply longer (or write one if the last message is the user's)."""
        history = normalize_history(history)
        if not history:
            yield gr.skip(), gr.skip(), gr.skip(), _warn("Nothing to continue yet.")
            return
        continuing = history[-1]["role"] == "assistant"
        started = self._start(jobs, history, values, continue_last=continuing)
        if isinstance(started, str):
            yield gr.skip(), gr.skip(), gr.skip(), started
            return
        base = history[-1]["content"] if continuing else ""
        if not continuing:
            history.append({"role": "assistant", "content": ""})
        first = (gr.skip(), gr.skip(), gr.skip(), GENERATING)
        yield from self._reply(jobs, history, started, first, base)

    def impersonate(self, history: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Write the user's next message into the message box."""
        history = normalize_history(history)
        started = self._start(jobs, history, values, impersonate=True)
        if isinstance(started, str):
            yield gr.skip(), gr.skip(), gr.skip(), started
            return

        def render(text: str) -> Update:
            return gr.skip(), gr.skip(), text, gr.skip()

        yield from self._stream(jobs, started, render, (gr.skip(), gr.skip(), gr.skip(), GENERATING))

    def remove_last(self, history: Any, jobs: SessionJobs) -> Update:
        """Remove the last reply (stopping it if it is being written) and the message it answered.

        That message goes back into the box.
        """
        jobs.discard(CHAT)
        trimmed, text = remove_last_exchange(normalize_history(history))
        return trimmed, chatbot_view(trimmed), text or gr.skip(), ""

    def clear(self, jobs: SessionJobs) -> Update:
        """Start a new conversation (a reply being written is stopped and dropped)."""
        jobs.discard(CHAT)
        return [], [], gr.skip(), ""

    @staticmethod
    def stop(jobs: SessionJobs) -> None:
        """Stop this session's reply (nobody else's)."""
        jobs.cancel(CHAT)


class ChatTab:
    """Draws the Chat tab; ``build`` wires it to the Parameters tab's widgets."""

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
            buttons=["copy"],
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
        self.status = gr.Markdown(elem_id="chat-status")
        with gr.Row():
            self.mode = gr.Radio(
                list(MODES),
                value="instruct",
                label="Mode",
                info="instruct: the model's template; chat: a character; chat-instruct: both.",
                elem_id="chat-mode",
            )
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
            )

    def wire(self, jobs: gr.State) -> list[Any]:
        """Connect the buttons; returns the reply events (the page refreshes the status after them)."""
        h = self.handlers
        settings = [self.mode, self.system, self.character, self.user, self.context, self.command]
        values = [*settings, self.params.template, *self.params.components]
        outputs = [self.history, self.chatbot, self.message, self.status]
        stream_opts: dict[str, Any] = {
            "outputs": outputs,
            "show_progress": "minimal",
            "concurrency_limit": None,
        }
        history_inputs = [self.history, jobs, *values]
        events = [
            self.send.click(h.send, inputs=[self.message, *history_inputs], **stream_opts),
            self.message.submit(h.send, inputs=[self.message, *history_inputs], **stream_opts),
            self.regenerate.click(h.regenerate, inputs=history_inputs, **stream_opts),
            self.cont.click(h.continue_reply, inputs=history_inputs, **stream_opts),
            self.impersonate.click(h.impersonate, inputs=history_inputs, **stream_opts),
        ]
        self.stop.click(h.stop, inputs=[jobs], outputs=None, queue=False, show_progress="hidden")
        self.remove.click(h.remove_last, inputs=[self.history, jobs], outputs=outputs, show_progress="hidden")
        self.clear.click(h.clear, inputs=[jobs], outputs=outputs, show_progress="hidden")
        self.chatbot.clear(h.clear, inputs=[jobs], outputs=outputs, show_progress="hidden")
        return events
