"""Chats that are saved as they happen: a conversation in the ChatStore driven through the Service.

The user's message is saved before its reply is read; the reply is saved while it streams (at most every
SAVE_INTERVAL_S) and once more when it ends or is stopped. A crash or ``kill -9`` therefore loses no earlier
message and at most the last half second of the reply being written.

A thinking model's reasoning is saved apart from its answer, with how long the model thought (from its first
reasoning to the first answer text); the prompt builder never sends an earlier turn's reasoning back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass

from webui.core.agent.loop import ToolSession
from webui.core.characters.store import DEFAULT_USER_NAME, Character, CharacterError
from webui.core.chats.agent_reply import AgentReply, expand, with_documents
from webui.core.chats.grounding import Grounder, conversation_collection, with_grounding
from webui.core.chats.records import AttachmentRecord, GroundingRecord, ImageRef, ToolRoundRecord
from webui.core.chats.store import ChatStore, Conversation, StoredMessage
from webui.core.engine import EngineError
from webui.core.knowledge import KnowledgeError
from webui.core.loader import Chunk, GenerationStats, renders_own_template, sees_images
from webui.core.media import Image, ImageError
from webui.core.params import GenerationParams
from webui.core.prompts import DEFAULT_CHAT_INSTRUCT_COMMAND, ChatMessage, Mode
from webui.core.service import ChatSettings, ReplyStream, Service

SAVE_INTERVAL_S = 0.5


LoadImage = Callable[[ImageRef], Image]


def history_of(conversation: Conversation, load_image: LoadImage | None = None) -> list[ChatMessage]:
    """The shown version of every message (its reasoning apart, a reply's tool calls and their results
    before it, a user's images, loaded with ``load_image``, and the text of the files sent with it), as the
    prompt builder takes them. Without ``load_image`` the images are left out."""
    return [
        message
        for stored in conversation.messages
        for message in expand(stored, tuple(map(load_image, stored.images)) if load_image else ())
    ]


def chat_settings_for(
    character: Character | None,
    *,
    mode: Mode = "instruct",
    user_name: str | None = None,
    template: str | None = None,
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND,
) -> ChatSettings:
    """How a personality shapes the prompt: its context (system message in instruct mode), names, template."""
    if character is None:
        return ChatSettings(
            mode=mode,
            template=template,
            user_name=user_name or DEFAULT_USER_NAME,
            chat_instruct_command=chat_instruct_command,
        )
    user = user_name or character.user_name or DEFAULT_USER_NAME
    instruct = mode == "instruct"
    return ChatSettings(
        mode=mode,
        template=template or character.instruction_template,
        system_message=character.context_for(user, include_examples=False) if instruct else "",
        character_name=character.name,
        user_name=user,
        context="" if instruct else character.context_for(user),
        chat_instruct_command=chat_instruct_command,
        character=character,
    )


def params_for(character: Character | None, base: GenerationParams) -> GenerationParams:
    """The chosen preset with the personality's own sampler settings on top."""
    return base.overlay(character.params_overlay()) if character is not None else base


@dataclass(frozen=True)
class ReplyParts:
    """What a reply has written so far: the answer, the reasoning, and how long it thought (None: no
    reasoning, or still thinking)."""

    text: str
    reasoning: str = ""
    reasoning_seconds: float | None = None


# Creates the reply's message, or updates it (by id); both return the message as saved.
CreateReply = Callable[[ReplyParts], StoredMessage]
UpdateReply = Callable[[int, ReplyParts], StoredMessage]


class SavedReply:
    """A reply streaming into the store: iterate for its chunks; ``message`` is the saved message.

    The answer (``text``) and the reasoning (``reasoning``) are kept apart; ``thinking`` is True while the
    model reasons and has not begun its answer, and ``reasoning_seconds`` says how long it thought once it has
    stopped. ``prefix`` and ``reasoning_prefix`` are what the reply continues (Continue, Start reply with).
    """

    def __init__(
        self,
        stream: ReplyStream,
        create: CreateReply,
        update: UpdateReply,
        prefix: str = "",
        *,
        reasoning_prefix: str = "",
        seconds_before: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self._create = create
        self._update = update
        self._prefix = prefix
        self._reasoning_prefix = reasoning_prefix
        self._seconds_before = seconds_before
        self._clock = clock
        self.text = ""
        self.reasoning = ""
        self.message: StoredMessage | None = None
        self._saved: ReplyParts | None = None
        self._thinking_since: float | None = None  # when the first reasoning came
        self._thought_for: float | None = None  # set once the reasoning is over
        self._finished = False

    @property
    def thinking(self) -> bool:
        """The model is reasoning and has not begun its answer."""
        return self._thinking_since is not None and self._thought_for is None and not self._finished

    @property
    def reasoning_seconds(self) -> float | None:
        """How long the model thought (with what the continued reply had thought before); None while it is
        still thinking, or when it did not think at all."""
        if self._thought_for is None:
            return self._seconds_before
        return (self._seconds_before or 0.0) + self._thought_for

    @property
    def full_reasoning(self) -> str:
        """The reasoning as shown (with the reasoning of the reply it continues)."""
        return self._reasoning_prefix + self.reasoning

    def parts(self) -> ReplyParts:
        """The reply as it would be saved now (the reasoning trimmed)."""
        return ReplyParts(self.full_text, self.full_reasoning.strip(), self.reasoning_seconds)

    def _stop_thinking(self) -> None:
        if self._thinking_since is not None and self._thought_for is None:
            self._thought_for = max(0.0, self._clock() - self._thinking_since)

    def _save(self) -> None:
        parts = self.parts()
        if parts == self._saved or not (parts.text.strip() or parts.reasoning):
            return
        if self.message is None:
            self.message = self._create(parts)
        else:
            self.message = self._update(self.message.id, parts)
        self._saved = parts

    def __iter__(self) -> Iterator[Chunk]:
        last_save = self._clock()
        try:
            for chunk in self.stream:
                if chunk.reasoning:
                    if self._thinking_since is None:
                        self._thinking_since = self._clock()
                    self.reasoning += chunk.reasoning
                if chunk.text or chunk.tool_calls:
                    self._stop_thinking()  # the answer has begun
                self.text += chunk.text
                if (chunk.text or chunk.reasoning) and self._clock() - last_save >= SAVE_INTERVAL_S:
                    self._save()
                    last_save = self._clock()
                yield chunk
        finally:
            self._stop_thinking()
            self._finished = True
            self._save()  # also when stopped or when the reader went away

    def cancel(self) -> None:
        self.stream.cancel()

    @property
    def full_text(self) -> str:
        """The reply as shown (with the text it continues, when continuing)."""
        return self._prefix + self.text

    @property
    def stats(self) -> GenerationStats | None:
        return self.stream.stats

    @property
    def warnings(self) -> list[str]:
        """The extensions' errors while building the prompt and streaming (each names its extension)."""
        return self.stream.warnings


@dataclass
class Conversations:
    """Start, send, regenerate, continue and impersonate in stored conversations."""

    service: Service
    store: ChatStore

    def _character(self, name: str | None) -> Character | None:
        if name is None or self.service.characters is None:
            return None
        try:
            return self.service.characters.load(name)
        except CharacterError as exc:
            raise EngineError(str(exc)) from exc

    def start(
        self, character: str | None = None, *, mode: Mode = "instruct", user_name: str | None = None
    ) -> Conversation:
        """A new conversation; a personality's greeting becomes its first message."""
        persona = self._character(character)
        summary = self.store.create(character=character, mode=mode)
        if persona is not None and persona.greeting.strip():
            self.store.append(summary.id, "assistant", persona.greeting_for(user_name or persona.user_name))
        return self.store.get(summary.id)

    def delete(self, conversation_id: int) -> None:
        """Delete the conversation, and the files of it that were kept for retrieval."""
        conversation = self.store.get(conversation_id)
        self.store.delete(conversation_id)
        if self.service.knowledge is not None:
            hidden = conversation_collection(conversation)
            with suppress(KnowledgeError):  # the conversation is gone; a file left behind harms nothing
                if self.service.knowledge.store.find_collection(hidden) is not None:
                    self.service.knowledge.remove(hidden)

    def _history(self, conversation: Conversation) -> list[ChatMessage]:
        """Example messages of the personality (Modelfile MESSAGEs), then the stored messages."""
        persona = self._character(conversation.character)
        examples: list[ChatMessage] = []
        if persona is not None:
            examples = [
                ChatMessage(m.role, m.content) for m in persona.example_messages_for(persona.user_name)
            ]
        return [*examples, *history_of(conversation, self.image_loader())]

    def image_loader(self) -> LoadImage | None:
        """How the history's images are read for the loaded model: not at all for a model that cannot see
        them (an image sent earlier must not stop a text-only model from going on with the conversation;
        a new message's images still reach it, and it refuses them)."""
        state = self.service.engine.state
        if state is None or not (sees_images(state.model) or renders_own_template(state.model)):
            return None
        return self.store.image

    def _model_name(self) -> str | None:
        state = self.service.engine.state
        return state.entry.name if state else None

    def send(
        self,
        conversation_id: int,
        text: str,
        settings: ChatSettings,
        params: GenerationParams,
        *,
        start_with: str = "",
        tools: ToolSession | None = None,
        images: Sequence[Image] = (),
        attachments: Sequence[AttachmentRecord] = (),
    ) -> SavedReply | AgentReply:
        """Save the user's message (with its images and files) and stream the reply (forced to begin with
        ``start_with`` if given); with ``tools``, the reply runs the tool loop (AgentReply).

        Images the model cannot see raise ModelCannotSeeError (an ImageError, webui.core.media) after the
        message was saved: what the user sent is kept, and a vision model can answer it later (Regenerate)."""
        if not text.strip() and not images and not attachments:
            raise EngineError("The message is empty.")
        conversation = self.store.get(conversation_id)
        earlier = self._history(conversation)
        grounding = self._ground(conversation, text, attachments, earlier, settings, params)
        content = (
            with_grounding(text, grounding) if grounding is not None else with_documents(text, attachments)
        )
        question = ChatMessage("user", content, images=tuple(images))
        history = [*earlier, question]
        if start_with:
            history.append(ChatMessage("assistant", start_with))

        def save_question() -> None:
            self.store.append(
                conversation_id, "user", text, images=images, attachments=attachments, grounding=grounding
            )

        if tools is not None and tools.tools:
            agent = self._agent_reply(tools, history, settings, params, start_with, lambda *a: new(*a))
            save_question()
            agent_model = self._model_name()

            def new(
                text: str, reasoning: str, seconds: float | None, rounds: tuple[ToolRoundRecord, ...]
            ) -> StoredMessage:
                if agent.message is not None:
                    return self._save_agent(agent.message.id, text, reasoning, seconds, rounds)
                return self.store.append(
                    conversation_id,
                    "assistant",
                    text,
                    model=agent_model,
                    reasoning=reasoning,
                    reasoning_seconds=seconds,
                    tool_rounds=rounds,
                )

            return agent
        try:
            stream = self.service.stream_chat_reply(history, settings, params, continue_last=bool(start_with))
        except ImageError:  # the engine's refusal (a model that cannot see): the message is kept all the same
            if images:
                save_question()
            raise
        save_question()
        model = self._model_name()

        def create(parts: ReplyParts) -> StoredMessage:
            return self.store.append(
                conversation_id,
                "assistant",
                parts.text,
                model=model,
                reasoning=parts.reasoning,
                reasoning_seconds=parts.reasoning_seconds,
            )

        return SavedReply(stream, create, self._update, prefix=start_with)

    def _ground(
        self,
        conversation: Conversation,
        text: str,
        attachments: Sequence[AttachmentRecord],
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
    ) -> GroundingRecord | None:
        """What the message is given with: its files (whole or by retrieval) and the passages of the
        conversation's and the personality's collections that answer it."""
        collections = self.store.knowledge(conversation.id)
        if settings.character is not None:
            collections += settings.character.knowledge
        if not attachments and not collections and self.service.knowledge is None:
            return None
        try:
            prompt_tokens = self.service.prompt_budget(params).prompt_tokens
        except EngineError:  # nothing loaded yet: the reply loads the model; give files whole if they can be
            prompt_tokens = 2**31
        grounder = Grounder(self.service.knowledge, self._count_tokens)
        return grounder.ground(conversation, text, attachments, collections, history, prompt_tokens)

    def _count_tokens(self, text: str) -> int:
        try:
            return self.service.count_tokens(text)
        except EngineError:  # nothing loaded (the reply loads it): about four characters a token
            return len(text) // 4 + 1

    def _agent_reply(
        self,
        tools: ToolSession,
        history: list[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        start_with: str,
        save: Callable[[str, str, float | None, tuple[ToolRoundRecord, ...]], StoredMessage],
    ) -> AgentReply:
        loop = tools.loop(self.service)
        return AgentReply(loop, history, settings, params, save, prefix=start_with, on_cancel=tools.on_cancel)

    def _save_agent(
        self,
        message_id: int,
        text: str,
        reasoning: str,
        seconds: float | None,
        rounds: tuple[ToolRoundRecord, ...],
    ) -> StoredMessage:
        return self.store.set_content(
            message_id, text, reasoning=reasoning, reasoning_seconds=seconds, tool_rounds=rounds
        )

    def _history_before(self, conversation: Conversation) -> list[ChatMessage]:
        """The history without the last message (and without that reply's tool rounds)."""
        persona_and_all = self._history(conversation)
        return persona_and_all[: len(persona_and_all) - len(expand(conversation.messages[-1]))]

    def _update(self, message_id: int, parts: ReplyParts) -> StoredMessage:
        """Save what a streaming reply has written so far: its answer, reasoning and thinking time."""
        return self.store.set_content(
            message_id, parts.text, reasoning=parts.reasoning, reasoning_seconds=parts.reasoning_seconds
        )

    def _last_reply(self, conversation: Conversation) -> StoredMessage:
        if not conversation.messages or conversation.messages[-1].role != "assistant":
            raise EngineError("There is no reply to work on: the last message is not the assistant's.")
        return conversation.messages[-1]

    def regenerate(
        self,
        conversation_id: int,
        settings: ChatSettings,
        params: GenerationParams,
        *,
        start_with: str = "",
        tools: ToolSession | None = None,
    ) -> SavedReply | AgentReply:
        """Write a new version of the last reply (forced to begin with ``start_with`` if given, as in send);
        the earlier versions stay (switch between them)."""
        conversation = self.store.get(conversation_id)
        last = self._last_reply(conversation)
        history = self._history_before(conversation)
        if start_with:
            history.append(ChatMessage("assistant", start_with))
        if tools is not None and tools.tools:
            agent = self._agent_reply(tools, history, settings, params, start_with, lambda *a: new(*a))
            agent_model = self._model_name()

            def new(
                text: str, reasoning: str, seconds: float | None, rounds: tuple[ToolRoundRecord, ...]
            ) -> StoredMessage:
                if agent.message is not None:
                    return self._save_agent(agent.message.id, text, reasoning, seconds, rounds)
                return self.store.add_alternative(
                    last.id,
                    text,
                    model=agent_model,
                    reasoning=reasoning,
                    reasoning_seconds=seconds,
                    tool_rounds=rounds,
                )

            return agent
        stream = self.service.stream_chat_reply(history, settings, params, continue_last=bool(start_with))
        model = self._model_name()

        def create(parts: ReplyParts) -> StoredMessage:
            return self.store.add_alternative(
                last.id,
                parts.text,
                model=model,
                reasoning=parts.reasoning,
                reasoning_seconds=parts.reasoning_seconds,
            )

        return SavedReply(stream, create, self._update, prefix=start_with)

    def continue_last(
        self, conversation_id: int, settings: ChatSettings, params: GenerationParams
    ) -> SavedReply:
        """Make the last reply longer."""
        conversation = self.store.get(conversation_id)
        last = self._last_reply(conversation)
        history = history_of(conversation, self.image_loader())
        stream = self.service.stream_chat_reply(history, settings, params, continue_last=True)
        return SavedReply(
            stream,
            lambda parts: self._update(last.id, parts),
            self._update,
            prefix=last.content,
            reasoning_prefix=last.reasoning,
            seconds_before=last.reasoning_seconds,
        )

    def impersonate(
        self, conversation_id: int, settings: ChatSettings, params: GenerationParams
    ) -> ReplyStream:
        """Write the user's next message (not saved: it goes into the message box)."""
        history = self._history(self.store.get(conversation_id))
        return self.service.stream_chat_reply(history, settings, params, impersonate=True)
