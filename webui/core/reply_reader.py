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
from dataclasses import dataclass, field, replace
from typing import Any

from webui.core.loader import Chunk, TokenLogprob, ToolCallDelta
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


def reasoning_apart(chunk: Chunk) -> list[Chunk]:
    """``chunk`` as front ends want it: reasoning never in the same chunk as answer text or tool calls (a chunk
    of several tokens can hold the end of one and the start of the other), the reasoning first."""
    if not (chunk.reasoning and (chunk.text or chunk.tool_calls)):
        return [chunk]
    thought = Chunk(
        reasoning=chunk.reasoning, tokens=chunk.reasoning_tokens, reasoning_tokens=chunk.reasoning_tokens
    )
    rest = replace(chunk, reasoning="", tokens=chunk.tokens - chunk.reasoning_tokens, reasoning_tokens=0)
    return [thought, rest]


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
        self._logprobs = _HeldLogprobs()

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
        """The reader's view of a loader chunk (its text parts replaced; tokens, usage, drafting counts and the
        prompt's logprobs kept; the tokens' logprobs go out with the text they belong to)."""
        self._logprobs.add(chunk.logprobs, len(self.raw), chunk.text)
        self.raw += chunk.text
        counted = self.reasoning_tokens
        reasoning, answer = chunk.reasoning, chunk.text
        if self._splitter is None or not chunk.text:
            # Reasoning a loader split off itself (a remote server's) has no text beside it.
            if self.in_reasoning or (chunk.reasoning and not chunk.text):
                self.reasoning_tokens += chunk.tokens
        else:
            # Token by token where the loader says which text is which token's: a chunk that holds the end of
            # the reasoning and the start of the answer counts only the reasoning's tokens as reasoning.
            by_token = len(chunk.pieces) == chunk.tokens > 1 and "".join(chunk.pieces) == chunk.text
            units = [(piece, 1) for piece in chunk.pieces] if by_token else [(chunk.text, chunk.tokens)]
            answer = ""
            for piece, tokens in units:
                if self.in_reasoning:
                    self.reasoning_tokens += tokens
                split = self._splitter.feed(piece)
                reasoning, answer = reasoning + split.reasoning, answer + split.answer
        shown = self._stops.feed(answer)
        # What the stop strings hold back (or cut off) is the end of the raw text: tokens that begin there wait.
        self._logprobs.held += len(answer) - len(shown)
        text, calls = self._answer(shown)
        return Chunk(
            text,
            tokens=chunk.tokens,
            reasoning=reasoning,
            tool_calls=self._count(chunk.tool_calls) + calls,
            prompt=chunk.prompt,
            logprobs=self._logprobs.release(len(self.raw)),
            prompt_logprobs=chunk.prompt_logprobs,
            drafted=chunk.drafted,
            accepted=chunk.accepted,
            reasoning_tokens=self.reasoning_tokens - counted,
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
        # After a stop string only the tokens that began before it count; otherwise every token does.
        logprobs = self._logprobs.release(len(self.raw), final=not self.stopped)
        return Chunk(text, reasoning=reasoning, tool_calls=calls, logprobs=logprobs)

    def _answer(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if self._tools is None or not text:
            return text, ()
        parsed = self._tools.feed(text)
        return parsed.content, parsed.tool_calls

    def _count(self, calls: tuple[ToolCallDelta, ...]) -> tuple[ToolCallDelta, ...]:
        """Note the calls a loader sent itself, so the reply's finish reason says it called tools."""
        self._loader_calls.update(call.index for call in calls)
        return calls


class _HeldLogprobs:
    """The generated tokens' logprobs waiting for their text: a token goes out once the text where it begins
    is shown, so a token that a stop string cut off is never reported (as llama.cpp's server does)."""

    def __init__(self) -> None:
        self._waiting: list[
            tuple[int, TokenLogprob]
        ] = []  # (where the token begins in the raw text, logprob)
        self.held = 0  # characters at the end of the raw text held back (or cut off) by the stop strings

    def add(self, logprobs: Sequence[TokenLogprob], start: int, text: str) -> None:
        """Note a chunk's tokens; ``start`` is where its ``text`` begins in the raw text."""
        position = start
        for entry in logprobs:
            self._waiting.append((min(position, start + len(text)), entry))
            position += len(entry.token_bytes.decode("utf-8", errors="ignore"))

    def release(self, raw_length: int, *, final: bool = False) -> tuple[TokenLogprob, ...]:
        """The waiting tokens that begin in shown text (every one when ``final``)."""
        if not self._waiting:
            return ()
        shown = raw_length - self.held
        ready = [entry for start, entry in self._waiting if final or start < shown]
        self._waiting = [] if final else [(start, entry) for start, entry in self._waiting if start >= shown]
        return tuple(ready)
