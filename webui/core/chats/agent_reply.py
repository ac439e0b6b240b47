"""A reply that uses tools, saved as it happens: the tool loop's rounds (calls, approvals, results) and the
answer go into the conversation store while they stream, so a reload shows every step again.

The stored reply is one assistant message: its ``tool_rounds`` hold what the model wrote, thought and called
in each round with each call's result and status, and its content and reasoning are the final answer's. The
prompt builder gets the rounds back as assistant tool-call messages and ``tool`` results (``expand``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from webui.core.agent.loop import LoopUpdate, ToolLoop, ToolStep
from webui.core.chats.grounding import documents_of, with_grounding
from webui.core.chats.records import AttachmentRecord, StoredMessage, ToolCallRecord, ToolRoundRecord
from webui.core.documents.attach import format_whole
from webui.core.loader import GenerationStats
from webui.core.media import Image
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage, ToolCall
from webui.core.service import ChatSettings

SAVE_INTERVAL_S = 0.5


def with_documents(content: str, attachments: Sequence[AttachmentRecord]) -> str:
    """A message's text as the model reads it: what the user wrote, then the text of each file sent with it
    (those whose text was extracted) in the documents' ATTACHMENTS block (``format_whole``)."""
    documents = documents_of(attachments)
    return f"{content}\n\n{format_whole(documents)}" if documents else content


def expand(message: StoredMessage, images: tuple[Image, ...] = ()) -> list[ChatMessage]:
    """A stored message as the model is shown it: each tool round (the call message, then the results), then
    the answer (left out when the reply stopped before answering) with ``images`` (the message's, loaded) and
    the text of its files."""
    out: list[ChatMessage] = []
    for round_ in message.tool_rounds:
        calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in round_.calls)
        out.append(ChatMessage("assistant", round_.text, reasoning=round_.reasoning, tool_calls=calls))
        out.extend(ChatMessage("tool", c.result, tool_call_id=c.id, name=c.name) for c in round_.calls)
    if message.content or message.reasoning or not message.tool_rounds:
        # A message saved with what it was given (files whole or passages found for it) shows that again;
        # one saved before that existed shows its files' text.
        content = (
            with_grounding(message.content, message.grounding)
            if message.grounding is not None
            else with_documents(message.content, message.attachments)
        )
        out.append(ChatMessage(message.role, content, reasoning=message.reasoning, images=images))  # type: ignore[arg-type]
    return out


def step_record(step: ToolStep) -> ToolCallRecord:
    return ToolCallRecord(step.id, step.name, step.arguments, step.result, step.status, step.seconds)


# Saves the reply so far: (answer, reasoning, reasoning seconds, rounds) -> the stored message.
SaveReply = Callable[[str, str, float | None, tuple[ToolRoundRecord, ...]], StoredMessage]


class AgentReply:
    """Iterate for the loop's updates; ``rounds()``, ``text``, ``reasoning`` are the reply so far, ``waiting``
    the call that waits for the user's approval (None when none does)."""

    def __init__(
        self,
        loop: ToolLoop,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        save: SaveReply,
        *,
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self._on_cancel = on_cancel  # e.g. the approval gate's: a call waiting for an answer is rejected
        self._history = list(history)
        self._settings = settings
        self._params = params
        self._save_reply = save
        self._prefix = prefix
        self._clock = clock
        self.message: StoredMessage | None = None
        self.waiting: ToolStep | None = None
        self._thinking_since: float | None = None
        self._thought_for: float | None = None
        self._finished = False
        self._saved: tuple[object, ...] | None = None

    # -- the reply so far --------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        return (self._prefix if not self.loop.rounds else "") + self.loop.answer

    @property
    def reasoning(self) -> str:
        return self.loop.reasoning.strip()

    @property
    def thinking(self) -> bool:
        return self._thinking_since is not None and self._thought_for is None and not self._finished

    @property
    def reasoning_seconds(self) -> float | None:
        return self._thought_for

    def rounds(self) -> tuple[ToolRoundRecord, ...]:
        return tuple(
            ToolRoundRecord(r.text, r.reasoning.strip(), tuple(step_record(s) for s in r.steps))
            for r in self.loop.rounds
        )

    @property
    def stats(self) -> GenerationStats | None:
        return self.loop.stream.stats if self.loop.stream is not None else None

    @property
    def warnings(self) -> list[str]:
        return self.loop.warnings

    # -- running -----------------------------------------------------------------------------------------

    def _save(self) -> None:
        rounds = self.rounds()
        state = (self.text, self.reasoning, self.reasoning_seconds, rounds)
        if state == self._saved or not (self.text.strip() or self.reasoning or rounds):
            return
        self.message = self._save_reply(self.text, self.reasoning, self.reasoning_seconds, rounds)
        self._saved = state

    def _track_thinking(self, update: LoopUpdate) -> None:
        if update.kind == "round":
            self._thinking_since = self._thought_for = None
        elif update.kind == "text":
            if self.loop.reasoning and self._thinking_since is None:
                self._thinking_since = self._clock()
            if self.loop.answer and self._thinking_since is not None and self._thought_for is None:
                self._thought_for = max(0.0, self._clock() - self._thinking_since)

    def __iter__(self) -> Iterator[LoopUpdate]:
        last_save = self._clock()
        try:
            for update in self.loop.run(
                self._history, self._settings, self._params, continue_last=bool(self._prefix)
            ):
                self._track_thinking(update)
                if update.kind == "approval":
                    self.waiting = update.step
                    self._save()  # the call shows (awaiting) on reload too
                else:
                    self.waiting = None
                if update.kind != "text" or self._clock() - last_save >= SAVE_INTERVAL_S:
                    self._save()
                    last_save = self._clock()
                yield update
        finally:
            if self._thinking_since is not None and self._thought_for is None:
                self._thought_for = max(0.0, self._clock() - self._thinking_since)
            self._finished = True
            self.waiting = None
            self._save()

    def cancel(self) -> None:
        self.loop.cancel()
        if self._on_cancel is not None:
            self._on_cancel()
