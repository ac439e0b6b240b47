"""The streaming tool-call parser: text deltas in, content deltas and ToolCallDelta parts out."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webui.core.loader import ToolCallDelta
from webui.core.tools.base import FAIL, Marker, RawCall, Schemas, ToolFormat, is_mistral_id, new_call_id
from webui.core.tools.formats import get_tool_format

# Every marker's closing tag and every bracketed value end in one of these; anything else cannot finish a call.
_SETTLING = frozenset("}])>|｜")
# Near the marker a reader may still reject the text at any character (a wrong prefix), so it reads each time.
_EAGER_CHARS = 64


@dataclass(frozen=True)
class ToolParseDelta:
    """What one fed piece of text turned into: answer text, and tool-call parts in the loader's own shape."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class ParsedToolCall:
    """A finished call: ``arguments`` is a JSON object text, as OpenAI's API carries it."""

    id: str
    name: str
    arguments: str


class ToolCallParser:
    """Splits a streamed reply into content and tool calls for one family; feed deltas, then ``flush()``.

    Text is held back only from an opening marker (or a tail that could become one) until the call it opens
    resolves, so ordinary text streams without delay and a split marker never reaches the content.
    """

    def __init__(
        self,
        fmt: str | ToolFormat,
        tools: Sequence[Mapping[str, Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.format = get_tool_format(fmt) if isinstance(fmt, str) else fmt
        self._schemas = Schemas.from_tools(tools)
        self._rng = rng or random.Random()
        self._buf = ""
        self._inside: Marker | None = None
        self._spoken = False  # real text was said: markers that only open a reply no longer count
        self._count = 0
        self._finished = False
        self._checked = 0  # buffer length at the last inconclusive read of the pending call

    @property
    def call_count(self) -> int:
        """How many calls have been emitted so far."""
        return self._count

    def feed(self, text: str) -> ToolParseDelta:
        """Take the next piece of the reply; returns whatever can be told apart already."""
        if self._finished:
            raise RuntimeError("feed() after flush()")
        self._buf += text
        return self._run(final=False)

    def flush(self) -> ToolParseDelta:
        """The reply ended: resolve a pending call (leniently) or give its text back as content."""
        out = self._run(final=True)
        self._finished = True
        return out

    def _run(self, final: bool) -> ToolParseDelta:
        """Advance over the buffer as far as the text allows."""
        content: list[str] = []
        calls: list[ToolCallDelta] = []
        while True:
            if self._inside is not None:
                if not final and self._nothing_new():
                    break
                match = self._inside.read(self._buf, final, self._schemas)
                if match is None:
                    if not final:
                        self._checked = len(self._buf)
                        break
                    match = FAIL
                if match is FAIL:
                    # Not a call after all: the marker is text, and scanning goes on right after it.
                    size = len(self._inside.text)
                    self._say(content, self._buf[:size])
                    self._buf = self._buf[size:]
                else:
                    for call in match.calls:
                        calls.extend(self._deltas(call))
                    self._buf = self._buf[match.end :]
                self._inside = None
                self._checked = 0
                self._schemas.scans.clear()
                continue
            pos, marker = self._find_marker()
            if marker is not None:
                self._say(content, self._buf[:pos])
                self._buf = self._buf[pos:]
                self._inside = marker
                continue
            keep = 0 if final else self._partial_tail()
            self._say(content, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            break
        return ToolParseDelta("".join(content), tuple(calls))

    def _nothing_new(self) -> bool:
        """Whether a pending call can be left alone: past its opening, only a closing character can settle it.

        Readers give the same answer on any longer text once they have one, so skipping them is safe; it keeps
        a long call (a whole file as an argument) from being re-read on every token.
        """
        if self._checked < _EAGER_CHARS:
            return False
        return not any(c in _SETTLING for c in self._buf[self._checked :])

    def _say(self, content: list[str], text: str) -> None:
        """Pass text on as content, noting whether it was more than whitespace."""
        if text:
            content.append(text)
            if text.strip(" \t\r\n;"):  # Llama 3.x may separate its JSON calls with ';'
                self._spoken = True

    def _find_marker(self) -> tuple[int, Marker | None]:
        """The earliest marker in the buffer (the longest at a tie); opening-only ones only before any text."""
        best: tuple[int, Marker | None] = (-1, None)
        lead = len(self._buf) - len(self._buf.lstrip(" \t\r\n;"))
        for marker in self.format.markers:
            if marker.at_start:
                if self._spoken or not self._buf.startswith(marker.text, lead):
                    continue
                pos = lead
            else:
                pos = self._buf.find(marker.text)
                if pos < 0:
                    continue
            current, chosen = best
            if chosen is None or pos < current or (pos == current and len(marker.text) > len(chosen.text)):
                best = (pos, marker)
        return best

    def _partial_tail(self) -> int:
        """How many trailing characters could still grow into a marker, so they wait for the next piece."""
        keep = 0
        for marker in self.format.markers:
            if marker.at_start:
                continue  # a lone '{' or '[' opens them and is found whole, never as a prefix
            for size in range(min(len(marker.text) - 1, len(self._buf)), keep, -1):
                if marker.text.startswith(self._buf[-size:]):
                    keep = size
                    break
        return keep

    def _deltas(self, call: RawCall) -> list[ToolCallDelta]:
        """A call as the stream sends it: id and name once, then the arguments text."""
        index = self._count
        self._count += 1
        style = self.format.id_style
        if (style == "model" and call.id) or (style == "mistral" and is_mistral_id(call.id)):
            call_id = call.id
        else:
            call_id = new_call_id(self._rng, "mistral" if style == "mistral" else "openai")
        return [ToolCallDelta(index, call_id, call.name, ""), ToolCallDelta(index, arguments=call.arguments)]


def accumulate(deltas: Sequence[ToolParseDelta]) -> tuple[str, list[ParsedToolCall]]:
    """Rebuild the content and the calls from streamed parts, as an OpenAI client's accumulator would."""
    content = "".join(d.content for d in deltas)
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for d in deltas:
        for part in d.tool_calls:
            ids[part.index] = ids.get(part.index, "") + part.id
            names[part.index] = names.get(part.index, "") + part.name
            args[part.index] = args.get(part.index, "") + part.arguments
    return content, [ParsedToolCall(ids[i], names[i], args[i]) for i in sorted(ids)]


def parse_tool_calls(
    text: str,
    fmt: str | ToolFormat,
    tools: Sequence[Mapping[str, Any]] | None = None,
    rng: random.Random | None = None,
) -> tuple[str, list[ParsedToolCall]]:
    """A finished reply as (content, calls); the same parser as streaming, so both always agree."""
    parser = ToolCallParser(fmt, tools, rng)
    return accumulate([parser.feed(text), parser.flush()])
