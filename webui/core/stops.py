"""Stop strings matched across chunk boundaries: text that could be the start of a stop string is held back."""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    """Feed streamed text deltas; get back only the text that is safe to show.

    A stop string may arrive split over several chunks ("\\nUs" + "er:"), so the tail of the text that could
    still become a stop string is held until the next delta decides it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(sorted({s for s in stops if s}, key=len, reverse=True))
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, delta: str) -> str:
        """Add ``delta``; return the text that can be shown now (empty once a stop string matched)."""
        if self.stopped:
            return ""
        if not self._stops:
            return delta
        text = self._pending + delta
        first: tuple[int, str] | None = None
        for stop in self._stops:
            index = text.find(stop)
            if index != -1 and (first is None or index < first[0]):
                first = (index, stop)
        if first is not None:
            self.stopped = True
            self.matched = first[1]
            self._pending = ""
            return text[: first[0]]
        hold = self._longest_partial_suffix(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back text, at the end of a generation that no stop string ended."""
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest

    def _longest_partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best
