"""The Chat tab's event handlers over stored conversations (webui.core.chats.conversation).

The per-session state holds the id of the conversation shown; the messages live in the conversation store, so
the user's message is saved as soon as it is sent and the reply while it streams. Stop cancels only this
session's reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import EllipsisType
from typing import Any

import gradio as gr

from webui.core.agent import ToolSession
from webui.core.characters.store import Character, CharacterError
from webui.core.chats.agent_reply import AgentReply
from webui.core.chats.conversation import Conversations, SavedReply, chat_settings_for, params_for
from webui.core.chats.records import ChatStoreError, Conversation
from webui.core.chats.store import ChatStore
from webui.core.media import ImageError
from webui.core.params import GenerationParams
from webui.core.prompts import PromptError
from webui.core.service import ChatSettings, EngineError, Service
from webui.core.templates.store import TemplateError
from webui.ui.chat_media import PageMedia, box_parts, document_reader, model_messages, read_sent_files
from webui.ui.convert import (
    GENERATING,
    InputError,
    Message,
    chat_settings,
    chatbot_entry,
    chatbot_view,
    content_text,
    history_from,
    last_exchange,
    message_at,
    message_entry,
    normalize_history,
    personality_name,
    reply_entry,
    throttled_parts,
)
from webui.ui.helpers import context_meter, next_reply_prompt
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import CHAT, Cancellable, SessionJobs
from webui.ui.tool_steps import agent_ticks
from webui.ui.tools_panel import ToolsPanel

# One page update: (conversation id, history state, chatbot, message box, status markdown)
Update = tuple[Any, Any, Any, Any, Any]
# personality, mode, system message, character, user name, context, chat-instruct command, template
SETTINGS_COUNT = 8
BUSY = "A reply is still being generated: press Stop first."
# ImageError: images sent to a model that cannot see them (the message itself is kept).
ERRORS = (InputError, EngineError, PromptError, TemplateError, ChatStoreError, CharacterError, ImageError)
SKIP: Update = (gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())


def warn(message: str) -> str:
    """Show ``message`` as a toast; returns it as a status line."""
    gr.Warning(message)
    return f"⚠️ {message}"


def status_only(status: str) -> Update:
    return gr.skip(), gr.skip(), gr.skip(), gr.skip(), status


class ChatHandlers:
    """The Chat tab's handlers; ``values`` are the personality, the chat settings, then the Parameters tab's
    widgets."""

    def __init__(self, service: Service, params: ParametersTab, tools: ToolsPanel | None = None) -> None:
        self.service = service
        self.params = params
        self.tools = tools or ToolsPanel(None)
        self.media = PageMedia(lambda: self.service.chats.media if self.service.chats is not None else None)

    # -- the store -----------------------------------------------------------------------------------------

    @property
    def store(self) -> ChatStore:
        if self.service.chats is None:
            raise ChatStoreError("No conversation store is open: chats cannot be saved.")
        return self.service.chats

    @property
    def conversations(self) -> Conversations:
        return Conversations(self.service, self.store)

    def conversation(self, conversation_id: Any) -> Conversation | None:
        """The stored conversation ``conversation_id`` (None if there is none, e.g. deleted meanwhile)."""
        if not isinstance(conversation_id, int) or self.service.chats is None:
            return None
        try:
            return self.service.chats.get(conversation_id)
        except ChatStoreError:
            return None

    def view(self, conversation: Conversation | None, status: Any = "", box: Any = None) -> Update:
        """The page update showing ``conversation`` (None: an empty chat)."""
        history = history_from(conversation)
        return (
            conversation.id if conversation is not None else None,
            history,
            chatbot_view(history, show=self.media.content),
            gr.skip() if box is None else box,
            status,
        )

    # -- settings ------------------------------------------------------------------------------------------

    def character(self, name: str | None) -> Character | None:
        if name is None or self.service.characters is None:
            return None
        try:
            return self.service.characters.load(name)
        except CharacterError as exc:
            raise InputError(str(exc)) from exc

    def read(
        self, values: Sequence[Any], personality: str | EllipsisType | None = ...
    ) -> tuple[ChatSettings, GenerationParams]:
        """The chat settings and sampler parameters from the widget values; InputError if invalid.

        With a personality (the dropdown's, or ``personality`` when given: a conversation's own), the prompt
        follows it (chat_settings_for, params_for); without one, the Conversation settings widgets.
        """
        settings_values, param_values = values[:SETTINGS_COUNT], values[SETTINGS_COUNT:]
        chosen, *widgets = settings_values
        name = personality_name(chosen) if personality is ... else personality
        base = chat_settings(*widgets)
        params = self.params.read(param_values)
        persona = self.character(name if isinstance(name, str) else None)
        if persona is None:
            return base, params
        user = (widgets[3] or "").strip() or None
        settings = chat_settings_for(
            persona,
            mode=base.mode,
            user_name=user,
            template=base.template if isinstance(base.template, str) else None,  # the page names templates
            chat_instruct_command=base.chat_instruct_command,
        )
        return settings, params_for(persona, params)

    def status(self) -> str:
        return self.service.status_line()

    # -- streaming ----------------------------------------------------------------------------------------

    def _stream(
        self,
        jobs: SessionJobs,
        job: Any,
        render: Callable[[str], Update],
        first: Update,
        done: Callable[[], Update],
    ) -> Iterator[Update]:
        """Yield ``first``, then ``render(answer so far)`` at most every ~100 ms (also when only the reasoning
        grew), then ``done()`` with the status.

        If the conversation was cleared or switched meanwhile (the job discarded), only the status is updated.
        """
        error = ""
        try:
            yield first
            try:
                ticks = (
                    agent_ticks(job) if isinstance(job, AgentReply) else (t for t, _ in throttled_parts(job))
                )
                for text in ticks:
                    if not jobs.owns(CHAT, job):
                        break
                    yield render(text)
            except ERRORS as exc:
                error = warn(str(exc))
            discarded = not jobs.owns(CHAT, job)
        finally:
            jobs.finish(CHAT, job)
            job.cancel()  # no-op when it ended; stops the model if the page went away mid-reply
        extension_errors = [warn(message) for message in job.warnings]  # each names its extension
        status = error or "\n\n".join([*extension_errors, self.status()])
        if discarded:
            yield status_only(status)
        else:
            *update, _ = done()
            yield (*update, status)

    def _claim(self, jobs: SessionJobs, job: Cancellable) -> bool:
        if jobs.start(CHAT, job):
            return True
        job.cancel()
        return False

    def _reply(
        self,
        jobs: SessionJobs,
        conversation_id: int,
        reply: SavedReply | AgentReply,
        before: list[Message],
        box: Any,
    ) -> Iterator[Update]:
        """Stream ``reply`` as the message after ``before``, then show the store.

        The reasoning shows in its own block above the answer, open while the model thinks and closed once the
        answer begins; each tool call shows as a step (waiting, running, then its result)."""

        def render(_: str = "") -> Update:
            if isinstance(reply, AgentReply):
                rounds = reply.rounds()
                entry = reply_entry(reply.text, reply.reasoning, reply.reasoning_seconds, rounds)
                shown = before + ([entry] if reply.text or reply.reasoning or rounds else [])
            else:
                parts = reply.parts()  # the answer (with what it continues) and the reasoning so far
                shown = before + (
                    [reply_entry(parts.text, parts.reasoning, parts.reasoning_seconds)]
                    if parts.text or parts.reasoning
                    else []
                )
            view = chatbot_view(shown, thinking=reply.thinking, show=self.media.content)
            return conversation_id, shown, view, gr.skip(), gr.skip()

        first = (*render()[:3], box, GENERATING)

        def done() -> Update:
            return self.view(self.conversation(conversation_id))

        if not self._claim(jobs, reply):
            yield status_only(warn(BUSY))
            return
        yield from self._stream(jobs, reply, render, first, done)

    def _new_conversation(self, values: Sequence[Any]) -> Conversation:
        """A conversation for the first message: with the chosen personality (and its greeting) if any."""
        mode = values[1] if isinstance(values[1], str) else "instruct"
        name = personality_name(values[0])
        user = (values[4] or "").strip() or None if isinstance(values[4], str) else None
        return self.conversations.start(name, mode=mode, user_name=user)  # type: ignore[arg-type]

    # -- events -------------------------------------------------------------------------------------------

    def send(
        self, text: Any, start_with: str, conversation_id: Any, jobs: SessionJobs, *values: Any
    ) -> Iterator[Update]:
        """Save the typed message (the box's text, or its ``{"text", "files"}`` value: images and documents
        sent with it) and stream the reply (opened with ``start_with`` if it is not empty)."""
        yield from self._send(text, start_with, conversation_id, jobs, values, None)

    def _with_approval(self, gate: Any, updates: Iterator[Update]) -> Iterator[tuple[Any, ...]]:
        """Each update with the approval prompt's (visibility, text) for what ``gate`` waits on."""
        for update in updates:
            yield (*update, *self.tools.approval_view(gate))

    def send_tools(
        self,
        use_tools: bool,
        gate: Any,
        text: Any,
        start_with: str,
        conversation_id: Any,
        jobs: SessionJobs,
        *values: Any,
    ) -> Iterator[tuple[Any, ...]]:
        """Send, with the Tools panel's tools when they are on (the approval prompt shows while a call waits)."""
        yield from self._with_approval(
            gate, self._send(text, start_with, conversation_id, jobs, values, (use_tools, gate))
        )

    def regenerate_tools(
        self,
        use_tools: bool,
        gate: Any,
        start_with: str,
        conversation_id: Any,
        jobs: SessionJobs,
        *values: Any,
    ) -> Iterator[tuple[Any, ...]]:
        """Regenerate, with the Tools panel's tools when they are on."""
        yield from self._with_approval(
            gate,
            self._rework_last_reply(
                "regenerate", start_with, conversation_id, jobs, values, (use_tools, gate)
            ),
        )

    def _tool_session(self, tools: tuple[bool, Any] | None, settings: ChatSettings) -> ToolSession | None:
        if tools is None:
            return None
        use, gate = tools
        return self.tools.session(bool(use), gate, settings.character)

    def _count_tokens(self, text: str) -> int:
        return self.service.count_tokens(text)

    def _send(
        self,
        box: Any,
        start_with: str,
        conversation_id: Any,
        jobs: SessionJobs,
        values: Sequence[Any],
        tools: tuple[bool, Any] | None,
    ) -> Iterator[Update]:
        text, paths = box_parts(box)
        if not text.strip() and not paths:
            yield SKIP
            return
        if jobs.busy(CHAT):
            yield status_only(warn(BUSY))
            return
        created: Conversation | None = None
        conversation: Conversation | None = None
        try:
            # An image that cannot be decoded is refused before anything is saved (it stays in the box).
            sent = read_sent_files(
                paths, self.store.media, count_tokens=self._count_tokens, read_document=document_reader()
            )
            conversation = self.conversation(conversation_id)
            if conversation is None:
                self.read(values)  # invalid settings: no conversation is created
                conversation = created = self._new_conversation(values)
            settings, params = self.read(values, conversation.character)
            reply = self.conversations.send(
                conversation.id,
                text,
                settings,
                params,
                start_with=start_with or "",
                tools=self._tool_session(tools, settings),
                images=sent.images,
                attachments=sent.attachments,
            )
        except ImageError as exc:  # a model that cannot see: the message was kept with its images
            if conversation is None:
                yield status_only(warn(str(exc)))
                return
            kept = f"{exc} The message is kept with its images: Regenerate answers it once a vision model is loaded."
            yield self.view(self.conversation(conversation.id), warn(kept), "")
            return
        except ERRORS as exc:
            if created is not None:
                self.store.delete(created.id)
            yield status_only(warn(str(exc)))  # the message stays in the box
            return
        before = history_from(self.conversation(conversation.id))
        for note in sent.notes:
            gr.Info(note)
        yield from self._reply(jobs, conversation.id, reply, before, "")

    def _answer_last_question(
        self,
        jobs: SessionJobs,
        conversation: Conversation,
        start_with: str,
        values: Sequence[Any],
        tools: tuple[bool, Any] | None = None,
    ) -> Iterator[Update]:
        """Write a reply to the last message, a user message left without one (e.g. its reply was empty)."""
        last = conversation.messages[-1]
        try:
            settings, params = self.read(values, conversation.character)
            images = [self.store.image(ref) for ref in last.images]
            self.store.truncate(conversation.id, last.position)
            try:
                reply = self.conversations.send(
                    conversation.id,
                    last.content,
                    settings,
                    params,
                    start_with=start_with or "",
                    tools=self._tool_session(tools, settings),
                    images=images,
                    attachments=last.attachments,
                )
            except ERRORS:
                if len(self.store.get(conversation.id).messages) < len(conversation.messages):
                    self.store.append(
                        conversation.id, "user", last.content, images=images, attachments=last.attachments
                    )
                raise
        except ERRORS as exc:
            yield status_only(warn(str(exc)))
            return
        before = history_from(self.conversation(conversation.id))
        yield from self._reply(jobs, conversation.id, reply, before, gr.skip())

    def _busy_or_empty(self, jobs: SessionJobs, conversation: Conversation | None, action: str) -> str | None:
        if jobs.busy(CHAT):
            return warn(BUSY)
        if conversation is None or not conversation.messages:
            return warn(f"Nothing to {action} yet.")
        return None

    def regenerate(
        self, start_with: str, conversation_id: Any, jobs: SessionJobs, *values: Any
    ) -> Iterator[Update]:
        """Write a new version of the last reply; the earlier versions stay (◀ / ▶ switch between them)."""
        yield from self._rework_last_reply("regenerate", start_with, conversation_id, jobs, values)

    def continue_reply(
        self, start_with: str, conversation_id: Any, jobs: SessionJobs, *values: Any
    ) -> Iterator[Update]:
        """Make the last reply longer (or write one, opened with ``start_with``, if the last message is the
        user's)."""
        yield from self._rework_last_reply("continue", start_with, conversation_id, jobs, values)

    def _rework_last_reply(
        self,
        action: str,
        start_with: str,
        conversation_id: Any,
        jobs: SessionJobs,
        values: tuple[Any, ...],
        tools: tuple[bool, Any] | None = None,
    ) -> Iterator[Update]:
        """Regenerate or continue the last reply; when the last message is the user's, answer it instead."""
        conversation = self.conversation(conversation_id)
        refused = self._busy_or_empty(jobs, conversation, action)
        if refused or conversation is None:
            yield status_only(refused or "")
            return
        if conversation.messages[-1].role != "assistant":
            yield from self._answer_last_question(jobs, conversation, start_with, values, tools)
            return
        continuing = action == "continue"
        try:
            settings, params = self.read(values, conversation.character)
            reply: SavedReply | AgentReply
            if continuing:
                reply = self.conversations.continue_last(conversation.id, settings, params)
            else:  # the new version opens with "Start reply with", as a sent message's reply does
                reply = self.conversations.regenerate(
                    conversation.id,
                    settings,
                    params,
                    start_with=start_with or "",
                    tools=self._tool_session(tools, settings),
                )
        except ERRORS as exc:
            yield status_only(warn(str(exc)))
            return
        history = history_from(conversation)
        yield from self._reply(jobs, conversation.id, reply, history[:-1], gr.skip())

    def impersonate(self, conversation_id: Any, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Write the user's next message into the message box (it is saved when sent)."""
        if jobs.busy(CHAT):
            yield status_only(warn(BUSY))
            return
        conversation = self.conversation(conversation_id)
        try:
            if conversation is None:
                settings, params = self.read(values)
                stream = self.service.stream_chat_reply([], settings, params, impersonate=True)
            else:
                settings, params = self.read(values, conversation.character)
                stream = self.conversations.impersonate(conversation.id, settings, params)
        except ERRORS as exc:
            yield status_only(warn(str(exc)))
            return
        if not self._claim(jobs, stream):
            yield status_only(warn(BUSY))
            return
        last: list[str] = [""]

        def render(text: str) -> Update:
            last[0] = text
            return gr.skip(), gr.skip(), gr.skip(), text, gr.skip()

        def done() -> Update:
            return gr.skip(), gr.skip(), gr.skip(), last[0], gr.skip()

        yield from self._stream(jobs, stream, render, status_only(GENERATING), done)

    def edit(self, conversation_id: Any, jobs: SessionJobs, event: gr.EditData) -> Update:
        """A message was edited in the Chatbot: save the new text (refused while a reply is being written)."""
        conversation = self.conversation(conversation_id)
        if jobs.busy(CHAT):
            return self.view(conversation, warn(f"{BUSY} Then edit the message again."))
        if conversation is None:
            return self.view(None, warn("That message is no longer in the conversation."))
        try:
            shown, reasoning = chatbot_entry(history_from(conversation), event.index)
            if reasoning:
                raise InputError(
                    "The reasoning and tool steps are kept as they happened: edit the answer below them."
                )
            message = message_at(conversation, shown)
            self.store.set_content(message.id, content_text(event.value))  # the answer alone
        except ERRORS as exc:
            return self.view(conversation, warn(str(exc)))
        return self.view(self.conversation(conversation.id), "Message edited.")

    def remove_last(self, conversation_id: Any, jobs: SessionJobs) -> Update:
        """Remove the last reply (stopping it if it is being written) and the message it answered.

        That message goes back into the box.
        """
        jobs.discard(CHAT)
        conversation = self.conversation(conversation_id)
        if conversation is None:
            return self.view(None)
        position, text = last_exchange(conversation)
        if position is None:
            return self.view(conversation, "Nothing to remove.")
        question = [message_entry(m) for m in conversation.messages if m.position == position]
        box = self.media.box_value(text, question[0] if question else None)  # with its images and files
        try:
            self.store.truncate(conversation.id, position)
        except ChatStoreError as exc:
            return self.view(conversation, warn(str(exc)))
        return self.view(self.conversation(conversation.id), "", box or None)

    def switch_alternative(self, conversation_id: Any, jobs: SessionJobs, step: int) -> Update:
        """◀ / ▶: show the previous or next version of the last reply."""
        conversation = self.conversation(conversation_id)
        if jobs.busy(CHAT):
            return self.view(conversation, warn(BUSY))
        if conversation is None or not conversation.messages:
            return self.view(conversation)
        reply = conversation.messages[-1]
        count = len(reply.alternatives)
        if reply.role != "assistant" or count < 2:
            return self.view(conversation)
        index = (reply.active + step) % count
        try:
            self.store.select_alternative(reply.id, index)
        except ChatStoreError as exc:
            return self.view(conversation, warn(str(exc)))
        return self.view(self.conversation(conversation.id), f"Version {index + 1} of {count}.")

    def previous_alternative(self, conversation_id: Any, jobs: SessionJobs) -> Update:
        return self.switch_alternative(conversation_id, jobs, -1)

    def next_alternative(self, conversation_id: Any, jobs: SessionJobs) -> Update:
        return self.switch_alternative(conversation_id, jobs, 1)

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
        loader = self.conversations.image_loader() if self.service.chats is not None else None
        try:
            messages = model_messages(history, loader)
        except ChatStoreError as exc:  # an image file gone: sending would say so too
            return f"Context: {exc}"
        return context_meter(self.service, normalize_history(history), settings, params, messages)

    def prompt_text(self, history: Any, start_with: str, *values: Any) -> tuple[str | None, str]:
        """Send to Default / Notebook: (the next reply's prompt as the model would see it, or None; the status
        line to show when there is none)."""
        try:
            settings, params = self.read(values)
            # The documents' text as the model reads it; images cannot travel in a text box.
            shown = [{"role": m.role, "content": m.content} for m in model_messages(history, None)]
            text = next_reply_prompt(self.service, shown, settings, params, start_with)
        except (InputError, EngineError) as exc:
            return None, warn(str(exc))
        return text, ""
