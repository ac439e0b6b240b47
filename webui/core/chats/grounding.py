"""What a user's message is given with: the text of the files sent with it (whole when it fits the context),
else the passages of them that answer it, plus passages from the conversation's and personality's document
collections; numbered as sources the reply cites as [n].

Files too long to give whole go into the conversation's own hidden collection, so later messages of the same
conversation are answered from them too. The result is saved with the message (``GroundingRecord``): every
later prompt shows the same text after it, and a reply's citations are read against the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from webui.core.chats.records import AttachmentRecord, ConversationSummary, GroundingRecord
from webui.core.documents.attach import Source, format_sources, format_whole
from webui.core.documents.extract import Document, Section
from webui.core.knowledge import KnowledgeBase
from webui.core.knowledge.grounding import TOP_K, search_collections
from webui.core.prompts import ChatMessage

MARGIN_TOKENS = 64  # what the template's own tokens around the messages may take


def conversation_collection(conversation: ConversationSummary) -> str:
    """The hidden collection holding a conversation's files that were too long to give whole (named by its
    id and creation time: SQLite may give a deleted conversation's id to a new one)."""
    return f"chat-{conversation.id}-{int(conversation.created_at * 1000)}"


_PAGE_MARK = re.compile(r"^\[page (\d+)\]\n", re.MULTILINE)


def documents_of(attachments: Sequence[AttachmentRecord]) -> list[Document]:
    """The files of a message whose text was extracted, as documents; a PDF's ``[page n]`` marks (the page
    keeps its text so) become its pages again, so passages found in it name their page."""
    documents = []
    for a in attachments:
        if not a.text or not a.text.strip():
            continue
        marks = list(_PAGE_MARK.finditer(a.text)) if a.kind == "pdf" else []
        if not marks:
            sections = (Section(0, len(a.text), 1 if a.kind == "pdf" else None),)
            documents.append(Document(a.name, a.kind, a.sha256, a.text, sections, a.size))
            continue
        pages: list[str] = []
        numbers: list[int] = []
        for mark, following in zip(marks, [*marks[1:], None], strict=True):
            pages.append(a.text[mark.end() : following.start() if following else len(a.text)].strip())
            numbers.append(int(mark.group(1)))
        text, offset, sections_list = "", 0, []
        for number, page in zip(numbers, pages, strict=True):
            if text:
                text += "\n\n"
                offset += 2
            sections_list.append(Section(offset, offset + len(page), number))
            text += page
            offset += len(page)
        documents.append(Document(a.name, "pdf", a.sha256, text, tuple(sections_list), a.size))
    return documents


def with_grounding(content: str, grounding: GroundingRecord | None) -> str:
    """A user's message as the model reads it: what the user wrote, then what it was given with."""
    if grounding is None or not grounding.context:
        return content
    return f"{content}\n\n{grounding.context}" if content else grounding.context


class Grounder:
    """Decides, for one message, what its files and collections add (see the module docstring)."""

    def __init__(
        self,
        knowledge: KnowledgeBase | None,
        count_tokens: Callable[[str], int],
        top_k: int = TOP_K,
    ) -> None:
        self.knowledge = knowledge
        self.count_tokens = count_tokens
        self.top_k = top_k

    def ground(
        self,
        conversation: ConversationSummary,
        text: str,
        attachments: Sequence[AttachmentRecord],
        collections: Sequence[str],
        history: Sequence[ChatMessage],
        prompt_tokens: int,
    ) -> GroundingRecord | None:
        """What the message ``text`` (sent with ``attachments``, after ``history``) is given with, within the
        ``prompt_tokens`` a prompt may take; None when it is given nothing."""
        names = list(dict.fromkeys(n for n in collections if n))
        documents = documents_of(attachments)
        hidden = conversation_collection(conversation)
        earlier_files = (
            self.knowledge is not None and self.knowledge.store.find_collection(hidden) is not None
        )
        if earlier_files and hidden not in names:  # files of earlier messages of this conversation
            names.append(hidden)
        if not documents and not names:
            return None
        used = self.count_tokens("\n".join(m.content for m in (*history, ChatMessage("user", text))))
        available = max(0, prompt_tokens - used - MARGIN_TOKENS)
        parts: list[str] = []
        notes: list[str] = []
        if documents:
            whole = format_whole(documents)
            tokens = self.count_tokens(whole)
            listed = ", ".join(d.name for d in documents)
            if tokens <= available:
                parts.append(whole)
                notes.append(f"given whole: {listed} ({tokens:,} tokens)")
                available -= tokens
            elif self.knowledge is None:
                notes.append(f"not given: {listed} ({tokens:,} tokens, {available:,} available)")
            else:
                self.knowledge.add_documents(hidden, documents, hidden=True)
                if hidden not in names:
                    names.append(hidden)
                notes.append(f"too long to give whole ({tokens:,} tokens, {available:,} available): {listed}")
        hidden = conversation_collection(conversation)
        earlier_files = (
            self.knowledge is not None and self.knowledge.store.find_collection(hidden) is not None
        )
        if earlier_files and hidden not in names:  # files of earlier messages of this conversation
            names.append(hidden)
        sources: tuple[Source, ...] = ()
        if names and self.knowledge is not None:
            found = search_collections(self.knowledge, names, text, self.top_k)
            chosen = list(found.sources)
            while chosen and self.count_tokens(format_sources(chosen)) > available:
                chosen.pop()  # the least relevant first
            sources = tuple(chosen)
            if sources:
                parts.append(format_sources(sources))
                documents_used = ", ".join(dict.fromkeys(s.document for s in sources))
                how = found.note.split(" — ", 1)
                notes.append(
                    f"through retrieval: {len(sources)} passage{'s' if len(sources) != 1 else ''} "
                    f"from {documents_used}" + (f" — {how[1]}" if len(how) > 1 else "")
                )
            elif found.sources:
                notes.append("no passage fits the context")
            elif found.note:
                notes.append(found.note.replace(hidden, "this chat's files"))
        if not parts and not notes:
            return None
        return GroundingRecord("\n\n".join(parts), "; ".join(notes), sources)
