"""Reading a reply's raw text as it streams: reasoning apart from the answer, stop strings on the answer, tool
calls out of it. One reader per generation; the engine feeds it every loader chunk.

Order matters: the reasoning splitter reads the raw text first (a stop string or a JSON brace inside the
reasoning means nothing), stop strings end the answer only, and the tool-call parser reads the answer that
stop strings let through. A loader that already tells the parts apart (a server's chat endpoint) sends
``Chunk.reasoning`` and ``Chunk.tool_calls`` itself; those pass unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webui.core.loader import Chunk, ToolCallDelta
from webui.core.reasoning.formats import FORMATS as REASONING_FORMATS
from webui.core.reasoning.formats import Phase, ReasoningFormat
from webui.core.reasoning.splitter import ReasoningSplitter
from webui.core.stops import StopStringMatcher
from webui.core.tools.base import ToolFormat
from webui.core.tools.stream import ToolCallParser

__all__ = ["ReplyFormat", "ReplyReader"]


@dataclass(frozen=True)
class ReplyFormat:
    """How to read one reply: the model's thinking format, and its tool-call format when tools were offered.

    ``tools`` is None when the request offered no tools (then tool-call markup is just text).
    """

    reasoning: ReasoningFormat = REASONING_FORMATS["none"]
    tools: ToolFormat | None = None
    tool_definitions: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def parses(self) -> bool:
        """Whether anything needs reading at all (otherwise text passes straight through)."""
        return self.reasoning.thinks or self.tools is not None


class ReplyReader:
    """Feed loader chunks; get the chunks a front end sees (answer, reasoning and tool-call parts apart)."""

    def __init__(
        self,
        fmt: ReplyFormat | None,
        prompt: str,
        stops: Sequence[str],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.format = fmt or ReplyFormat()
        self._stops = StopStringMatcher(stops)
        self._splitter = (
            ReasoningSplitter(self.format.reasoning, prompt) if self.format.reasoning.thinks else None
        )
        tools = self.format.tools
        self._tools = ToolCallParser(tools, self.format.tool_definitions, rng) if tools is not None else None
        self.raw = ""  # every character the model wrote (plus any forced closing marker)
        self.reasoning_tokens = 0
        self._loader_calls: set[int] = set()  # indexes of the calls a loader sent itself

    @property
    def stopped(self) -> bool:
        """A stop string matched: the answer is over."""
        return self._stops.stopped

    @property
    def stop_string(self) -> str | None:
        """The stop string that ended the answer, if one did."""
        return self._stops.matched

    @property
    def calls_made(self) -> int:
        """How many tool calls the reply made (parsed here or sent by the loader)."""
        return len(self._loader_calls) + (self._tools.call_count if self._tools is not None else 0)

    @property
    def in_reasoning(self) -> bool:
        """Whether the model is writing reasoning now (a thinking budget counts these tokens)."""
        return self._splitter is not None and self._splitter.phase is Phase.REASONING

    def feed(self, chunk: Chunk) -> Chunk:
        """The reader's view of a loader chunk (its text parts replaced; tokens and usage kept)."""
        self.raw += chunk.text
        if self.in_reasoning:
            self.reasoning_tokens += chunk.tokens
        reasoning, answer = chunk.reasoning, chunk.text
        if self._splitter is not None and chunk.text:
            split = self._splitter.feed(chunk.text)
            reasoning, answer = reasoning + split.reasoning, split.answer
        text, calls = self._answer(self._stops.feed(answer))
        return Chunk(
            text,
            tokens=chunk.tokens,
            reasoning=reasoning,
            tool_calls=self._count(chunk.tool_calls) + calls,
            prompt=chunk.prompt,
        )

    def force_close(self) -> str:
        """End the reasoning now (a thinking budget ran out): the text to append to the model's input."""
        close = self.format.reasoning.forced_close
        if self._splitter is not None and self.in_reasoning and close:
            self.raw += close
            split = self._splitter.feed(close)
            assert not split.answer  # a closing marker holds no answer text
            return close
        return ""

    def finish(self) -> Chunk:
        """The stream ended: everything still held back (an unfinished marker is text after all)."""
        reasoning = answer = ""
        if self._splitter is not None:
            split = self._splitter.flush()
            reasoning, answer = split.reasoning, split.answer
        visible = self._stops.feed(answer) + self._stops.flush()
        text, calls = self._answer(visible)
        if self._tools is not None:
            tail = self._tools.flush()
            text += tail.content
            calls += tail.tool_calls
        return Chunk(text, reasoning=reasoning, tool_calls=calls)

    def _answer(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if self._tools is None or not text:
            return text, ()
        parsed = self._tools.feed(text)
        return parsed.content, parsed.tool_calls

    def _count(self, calls: tuple[ToolCallDelta, ...]) -> tuple[ToolCallDelta, ...]:
        """Note the calls a loader sent itself, so the reply's finish reason says it called tools."""
        self._loader_calls.update(call.index for call in calls)
        return calls
