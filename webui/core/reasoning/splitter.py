"""Streaming split of a reply into reasoning and answer deltas; markers never leak, even split across chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from webui.core.reasoning.formats import Phase, ReasoningFormat, initial_phase

_TAIL = 64  # longer than any marker


class Split(NamedTuple):
    """One step's output: the reasoning delta and the answer delta (``Chunk.reasoning`` and ``Chunk.text``)."""

    reasoning: str
    answer: str


class ReasoningSplitter:
    """Feed text deltas, get (reasoning, answer) deltas; holds back only what could still start a marker."""

    def __init__(self, fmt: ReasoningFormat, prompt: str = "", *, phase: Phase | None = None) -> None:
        """Start from the phase the rendered ``prompt`` implies (inside reasoning after a prefilled open tag)."""
        self.format = fmt
        self.phase = phase if phase is not None else initial_phase(fmt, prompt)
        self._buffer = ""
        self._reasoning_started = False
        # Set on entering reasoning: whitespace right after an opening marker is layout, dropped.
        self._fresh_reasoning = True
        self._answer_started = False
        self._answer_tail = (
            ""  # the end of the answer so far, enough to find an opening marker split over deltas
        )
        self._literal_open = False  # the answer holds an opening marker as text
        # Whitespace at the end of the reasoning so far: shown only if more reasoning follows, so the
        # "\n" before </think> never reaches the page.
        self._pending_ws = ""
        self._out_reasoning: list[str] = []
        self._out_answer: list[str] = []

    @property
    def reasoning_seen(self) -> bool:
        """Whether any reasoning text has come out."""
        return self._reasoning_started

    def feed(self, text: str) -> Split:
        """Take the next delta; return what can be released now."""
        self._buffer += text
        self._drain(final=False)
        return self._take()

    def flush(self) -> Split:
        """End of stream: release what was held (an unfinished marker is plain text after all)."""
        self._drain(final=True)
        self._pending_ws = ""
        return self._take()

    def _markers(self) -> dict[str, Phase | None]:
        """The markers that mean something in the current phase, each with the phase it leads to (None: stay)."""
        fmt = self.format
        found: dict[str, Phase | None] = {}
        if self.phase is Phase.REASONING:
            # A model given a prefilled <think> sometimes writes it again; it is a duplicate, not content.
            found.update(dict.fromkeys(fmt.open_markers, None))
            found.update(dict.fromkeys(fmt.close_markers, Phase.ANSWER))
            return found
        if self.phase is Phase.AWAIT:
            found.update(dict.fromkeys(fmt.answer_markers, Phase.ANSWER))
            # A lone closing tag before any reasoning: the model skipped thinking; the tag is not answer text.
            found.update(dict.fromkeys(fmt.close_markers, Phase.ANSWER))
            found.update(dict.fromkeys(fmt.open_markers, Phase.REASONING))
            return found
        found.update(dict.fromkeys(fmt.answer_markers, None))
        if not self._literal_open:
            # A lone closing marker in the answer closes nothing (a small model repeating a forced </think>):
            # dropped. After an opening marker the model wrote as text, the pair is text too.
            found.update(dict.fromkeys(fmt.close_markers, None))
        if fmt.reopens:
            found.update(dict.fromkeys(fmt.open_markers, Phase.REASONING))
        return found

    def _drain(self, *, final: bool) -> None:
        """Move everything that is settled from the buffer to the outputs, switching phase at each marker."""
        while self._buffer:
            markers = self._markers()
            hit = _earliest(self._buffer, markers)
            hold = len(self._buffer) if final else _hold_start(self._buffer, markers)
            if hit is not None and hit[0] < hold:
                at, marker = hit
                before = self.phase
                self._emit(self._buffer[:at])
                self._buffer = self._buffer[at:]
                if self.phase is not before or marker not in self._markers():
                    # Answer text came first, so the marker must be read again by the answer's rules: the
                    # outcome may not depend on whether the text and the marker arrived in one delta.
                    continue
                self._buffer = self._buffer[len(marker) :]
                target = markers[marker]
                if target is not None:
                    self._switch(target)
                continue
            self._emit(self._buffer[:hold])
            self._buffer = self._buffer[hold:]
            return

    def _switch(self, phase: Phase) -> None:
        """Enter ``phase``; leaving reasoning drops its trailing whitespace."""
        if self.phase is Phase.REASONING and phase is not Phase.REASONING:
            self._pending_ws = ""
        elif phase is Phase.REASONING and self._reasoning_started:
            # A second analysis message (gpt-oss): a paragraph break keeps it apart, shown only if text follows.
            self._pending_ws = "\n\n"
        if phase is Phase.REASONING:
            self._fresh_reasoning = True
        self.phase = phase

    def _emit(self, text: str) -> None:
        """Send settled text to the part the current phase names."""
        if not text:
            return
        if self.phase is Phase.REASONING:
            self._emit_reasoning(text)
            return
        if self.phase is Phase.AWAIT:
            if not text.strip():
                return  # whitespace before the first marker belongs to nobody
            # No marker came: the reply is all answer, its spacing kept (a continued reply's " next words").
            self.phase = Phase.ANSWER
            self._answer_started = True
        if not self._answer_started:
            # The "\n\n" after </think> (or after a header) is layout, not the answer.
            text = text.lstrip()
            if not text:
                return
            self._answer_started = True
        self._answer_tail = (self._answer_tail + text)[-_TAIL:]
        self._literal_open = self._literal_open or any(
            m in self._answer_tail for m in self.format.open_markers
        )
        self._out_answer.append(text)

    def _emit_reasoning(self, text: str) -> None:
        """Reasoning text, with leading whitespace dropped and trailing whitespace held until more follows."""
        if self._fresh_reasoning:
            text = text.lstrip()
            if not text:
                return
            self._fresh_reasoning = False
        text = self._pending_ws + text
        body = text.rstrip()
        self._pending_ws = text[len(body) :]
        if body:
            self._reasoning_started = True
            self._out_reasoning.append(body)

    def _take(self) -> Split:
        """Hand over what was released since the last call."""
        out = Split("".join(self._out_reasoning), "".join(self._out_answer))
        self._out_reasoning.clear()
        self._out_answer.clear()
        return out


def _earliest(buffer: str, markers: dict[str, Phase | None]) -> tuple[int, str] | None:
    """The first complete marker in ``buffer`` (the longest one where two start at the same place)."""
    best: tuple[int, str] | None = None
    for marker in markers:
        at = buffer.find(marker)
        if at < 0:
            continue
        if best is None or at < best[0] or (at == best[0] and len(marker) > len(best[1])):
            best = (at, marker)
    return best


def _hold_start(buffer: str, markers: dict[str, Phase | None]) -> int:
    """Where the held-back tail begins: the earliest position from which the rest could still grow into a marker."""
    longest = max((len(m) for m in markers), default=0)
    for at in range(max(0, len(buffer) - longest + 1), len(buffer)):
        rest = buffer[at:]
        if any(len(m) > len(rest) and m.startswith(rest) for m in markers):
            return at
    return len(buffer)


def split_reasoning(text: str, fmt: ReasoningFormat, prompt: str = "") -> Split:
    """Split a finished reply (non-streaming) into its reasoning and its answer."""
    splitter = ReasoningSplitter(fmt, prompt)
    first = splitter.feed(text)
    last = splitter.flush()
    return Split(first.reasoning + last.reasoning, first.answer + last.answer)


def split_stream(deltas: Iterable[str], fmt: ReasoningFormat, prompt: str = "") -> Iterator[Split]:
    """Split a stream of text deltas, yielding only the non-empty steps, the held tail flushed at the end."""
    splitter = ReasoningSplitter(fmt, prompt)
    for delta in deltas:
        out = splitter.feed(delta)
        if out.reasoning or out.answer:
            yield out
    out = splitter.flush()
    if out.reasoning or out.answer:
        yield out
