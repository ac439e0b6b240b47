"""The Chat tab's Knowledge choice: the document collections the shown conversation answers from.

The choice is the conversation's (saved with it); choosing before the first message starts the conversation.
A personality's own collections (``knowledge:`` in its file) are searched as well, whatever is chosen here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from webui.core.chats.conversation import Conversations
from webui.core.chats.records import ChatStoreError, Conversation
from webui.core.knowledge import KnowledgeBase

NOT_AVAILABLE = "Document collections are not available here (no knowledge store)."


class KnowledgePicker:
    """A multi-choice of collections bound to the conversation shown."""

    def __init__(
        self,
        knowledge: KnowledgeBase | None,
        conversations: Callable[[], Conversations],
        start: Callable[[list[Any]], Conversation],
    ) -> None:
        self.knowledge = knowledge
        self.conversations = conversations
        self.start = start  # a new conversation from the Chat tab's values (personality, mode, ...)

    def names(self) -> list[str]:
        return [] if self.knowledge is None else [c.name for c in self.knowledge.store.collections()]

    def show(self, conversation_id: Any) -> Any:
        """The choices (collections may have been made since) and the conversation's own choice."""
        chosen: list[str] = []
        if isinstance(conversation_id, int):
            try:
                chosen = self.conversations().store.knowledge(conversation_id)
            except ChatStoreError:
                chosen = []
        names = self.names()
        return gr.update(choices=list(dict.fromkeys([*names, *chosen])), value=chosen)

    def choose(self, chosen: list[str] | None, conversation_id: Any, *values: Any) -> tuple[Any, str]:
        """Save the choice with the conversation (started now when there is none yet)."""
        if self.knowledge is None:
            return gr.skip(), NOT_AVAILABLE
        names = [name for name in chosen or [] if isinstance(name, str)]
        try:
            if not isinstance(conversation_id, int):
                if not names:
                    return gr.skip(), ""
                conversation_id = self.start(list(values)).id
            self.conversations().store.set_knowledge(conversation_id, names)
        except (ChatStoreError, ValueError) as exc:
            return gr.skip(), f"⚠️ {exc}"
        said = (
            f"Answers from {', '.join(names)}, with numbered sources." if names else "No collection chosen."
        )
        return conversation_id, said

    def build(self) -> gr.Dropdown:
        return gr.Dropdown(
            choices=self.names(),
            value=[],
            multiselect=True,
            label="Knowledge",
            info="Document collections (Knowledge tab) this conversation answers from, citing them as [n].",
            elem_id="chat-knowledge",
        )
