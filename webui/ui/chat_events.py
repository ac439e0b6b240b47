"""The Chat tab's event handlers: replies stream into the history; Stop cancels only this session's reply."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from webui.core.engine import EngineError
from webui.core.params import GenerationParams
from webui.core.prompts import PromptError
from webui.core.service import ChatSettings, ReplyStream, Service
from webui.core.templates import TemplateError
from webui.ui.convert import (
    GENERATING,
    InputError,
    Message,
    apply_edit,
    chat_settings,
    chatbot_view,
    drop_trailing_replies,
    normalize_history,
    open_reply,
    remove_last_exchange,
    throttled_text,
    to_chat_messages,
)
from webui.ui.helpers import context_meter, next_reply_prompt
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import CHAT, SessionJobs

# One page update: (history state, chatbot, message box, status markdown)
Update = tuple[Any, Any, Any, Any]
SETTINGS_COUNT = 7  # mode, system message, character, user name, context, chat-instruct command, template
BUSY = "A reply is still being generated: press Stop first."


def warn(message: str) -> str:
    """Show ``message`` as a toast; returns it as a status line."""
    gr.Warning(message)
    return f"⚠️ {message}"


class ChatHandlers:
    """The Chat tab's handlers; ``values`` are the chat settings then the Parameters tab's widgets."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.service = service
        self.params = params

    def read(self, values: Sequence[Any]) -> tuple[ChatSettings, GenerationParams]:
        """The chat settings and sampler parameters from the widget values; InputError if invalid."""
        settings_values, param_values = values[:SETTINGS_COUNT], values[SETTINGS_COUNT:]
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
            return warn(BUSY)
        try:
            settings, params = self.read(values)
            stream = self.service.stream_chat_reply(
                to_chat_messages(history),
                settings,
                params,
                continue_last=continue_last,
                impersonate=impersonate,
            )
        except (InputError, EngineError, PromptError, TemplateError) as exc:
            return warn(str(exc))
        if not jobs.start(CHAT, stream):
            stream.cancel()
            return warn(BUSY)
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
                error = warn(str(exc))
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

    def _new_reply(
        self,
        jobs: SessionJobs,
        history: list[Message],
        start_with: str | None,
        values: Sequence[Any],
        first: Callable[[list[Message]], Update],
    ) -> Iterator[Update] | str:
        """Start the next reply to ``history``, opened with ``start_with`` if given; the error text if not.

        ``first(shown history)`` is the update sent as soon as the reply has started.
        """
        opened, continuing = open_reply(history, start_with)
        started = self._start(jobs, opened, values, continue_last=continuing)
        if isinstance(started, str):
            return started
        if not continuing:
            opened.append({"role": "assistant", "content": ""})
        base = opened[-1]["content"]
        shown = opened if base else opened[:-1]
        return self._reply(jobs, opened, started, first(list(shown)), base)

    # -- events -------------------------------------------------------------------------------------------

    def send(
        self, text: str, start_with: str, history: Any, jobs: SessionJobs, *values: Any
    ) -> Iterator[Update]:
        """Send the typed message and stream the reply (opened with ``start_with`` if it is not empty)."""
        history = normalize_history(history)
        text = text or ""
        if not text.strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        history.append({"role": "user", "content": text})
        reply = self._new_reply(
            jobs, history, start_with, values, lambda shown: (shown, chatbot_view(shown), "", GENERATING)
        )
        if isinstance(reply, str):
            history.pop()  # history kept as it was; the message stays in the box
            yield history, chatbot_view(history), gr.skip(), reply
            return
        yield from reply

    def regenerate(self, start_with: str, history: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Replace the last reply with a new one."""
        history = drop_trailing_replies(normalize_history(history))
        if not history:
            yield gr.skip(), gr.skip(), gr.skip(), warn("Nothing to regenerate yet.")
            return
        reply = self._new_reply(
            jobs,
            history,
            start_with,
            values,
            lambda shown: (shown, chatbot_view(shown), gr.skip(), GENERATING),
        )
        if isinstance(reply, str):
            yield gr.skip(), gr.skip(), gr.skip(), reply
            return
        yield from reply

    def continue_reply(
        self, start_with: str, history: Any, jobs: SessionJobs, *values: Any
    ) -> Iterator[Update]:
        """Make the last reply longer (or write one, opened with ``start_with``, if the last message is the
        user's)."""
        history = normalize_history(history)
        if not history:
            yield gr.skip(), gr.skip(), gr.skip(), warn("Nothing to continue yet.")
            return
        if history[-1]["role"] != "assistant":
            reply = self._new_reply(
                jobs,
                history,
                start_with,
                values,
                lambda shown: (shown, chatbot_view(shown), gr.skip(), GENERATING),
            )
            if isinstance(reply, str):
                yield gr.skip(), gr.skip(), gr.skip(), reply
                return
            yield from reply
            return
        started = self._start(jobs, history, values, continue_last=True)
        if isinstance(started, str):
            yield gr.skip(), gr.skip(), gr.skip(), started
            return
        first = (gr.skip(), gr.skip(), gr.skip(), GENERATING)
        yield from self._reply(jobs, history, started, first, history[-1]["content"])

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

    def edit(self, history: Any, jobs: SessionJobs, event: gr.EditData) -> Update:
        """A message was edited in the Chatbot: keep the new text (refused while a reply is being written)."""
        history = normalize_history(history)
        if jobs.busy(CHAT):
            return history, chatbot_view(history), gr.skip(), warn(f"{BUSY} Then edit the message again.")
        try:
            edited = apply_edit(history, event.index, event.value)
        except InputError as exc:
            return history, chatbot_view(history), gr.skip(), warn(str(exc))
        return edited, chatbot_view(edited), gr.skip(), "Message edited."

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

    # -- the prompt as the model sees it ------------------------------------------------------------------

    def meter(self, history: Any, *values: Any) -> str:
        """The context meter: the next reply's prompt tokens out of the context size."""
        try:
            settings, params = self.read(values)
        except InputError as exc:
            return f"Context: {exc}"
        return context_meter(self.service, normalize_history(history), settings, params)

    def prompt_text(self, history: Any, start_with: str, *values: Any) -> tuple[str | None, str]:
        """Send to Default / Notebook: (the next reply's prompt as the model would see it, or None; the status
        line to show when there is none)."""
        try:
            settings, params = self.read(values)
            text = next_reply_prompt(self.service, normalize_history(history), settings, params, start_with)
        except (InputError, EngineError) as exc:
            return None, warn(str(exc))
        return text, ""
