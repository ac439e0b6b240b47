"""Replies as they stream: tidying a chat reply's whitespace, continuing one, and the extensions' chunk and
reply hooks; for a raw completion, its continuation as generated.

The engine already applies stop strings and keeps the cancel token of each generation; a stream here wraps
one GenerationJob and only changes the text the front ends see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from webui.core.engine import GenerationJob
from webui.core.extensions.hooks import GenerationKind
from webui.core.extensions.manager import ExtensionManager
from webui.core.loader import Chunk, GenerationStats
from webui.core.params import GenerationParams
from webui.core.prompts import BuiltPrompt

__all__ = ["CompletionStream", "ReplyStream", "extend_reply", "tidy_reply"]


@dataclass
class ReplyStream:
    """A reply being generated: iterate for text deltas; ``job`` holds stats once done.

    ``warnings`` lists the extensions' errors (from building the prompt, then while streaming).
    """

    prompt: BuiltPrompt
    job: GenerationJob
    continuing: bool = False
    extensions: ExtensionManager | None = None
    warnings: list[str] = field(default_factory=list)
    _chunks: Iterator[Chunk] = field(init=False)

    def __post_init__(self) -> None:
        self.warnings.extend(self.prompt.warnings)
        self._chunks = tidy_reply(self.job, strip_leading=not self.continuing)
        extensions = self.extensions
        if extensions is not None and extensions.changes_replies():
            self._chunks = extend_reply(self._chunks, extensions, self.warnings, "chat")

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def stats(self) -> GenerationStats | None:
        return self.job.stats


@dataclass
class CompletionStream:
    """A raw completion being generated: iterate for text deltas (the continuation only, whitespace kept).

    ``prompt`` and ``params`` are what the model got, after the extensions' completion hooks; ``warnings``
    lists the extensions' errors (from those hooks, then while streaming).
    """

    job: GenerationJob
    extensions: ExtensionManager | None = None
    warnings: list[str] = field(default_factory=list)
    _chunks: Iterator[Chunk] = field(init=False)

    def __post_init__(self) -> None:
        self._chunks = iter(self.job)
        if self.extensions is not None and self.extensions.changes_replies():
            self._chunks = extend_reply(self._chunks, self.extensions, self.warnings, "completion")

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks

    def text(self) -> str:
        """Run to the end and return the whole continuation (with the extensions' changes)."""
        return "".join(chunk.text for chunk in self)

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def prompt(self) -> str:
        return self.job.prompt

    @property
    def params(self) -> GenerationParams:
        return self.job.params

    @property
    def stats(self) -> GenerationStats | None:
        return self.job.stats

    @property
    def finish_reason(self) -> str | None:
        return self.job.finish_reason


def tidy_reply(chunks: Iterable[Chunk], *, strip_leading: bool) -> Iterator[Chunk]:
    """Drop the space after "Name:" that opens a chat reply and the whitespace that ends any reply.

    Trailing whitespace is held back until more text follows, so streaming stays incremental.
    """
    started = not strip_leading
    pending = ""
    for chunk in chunks:
        text = chunk.text
        if not started:
            text = text.lstrip()
            started = bool(text)
        text = pending + text
        body = text.rstrip()
        pending = text[len(body) :]
        if chunk.finish_reason is not None:
            pending = ""
        yield replace(chunk, text=body)


def extend_reply(
    chunks: Iterable[Chunk], extensions: ExtensionManager, warnings: list[str], kind: GenerationKind
) -> Iterator[Chunk]:
    """Each delta through the extensions' modify_chunk; the whole reply through modify_reply at the end.

    A reply hook can only add text at the end of what has streamed; any other change is reported.
    """
    streamed = ""
    finished = False

    def ending() -> str:
        final = extensions.modify_reply(streamed, kind, warnings)
        if final.startswith(streamed):
            return final[len(streamed) :]
        warnings.append(
            "An extension changed the reply's text after it had streamed; only text added at the end can be "
            "applied, so the change was skipped."
        )
        return ""

    for chunk in chunks:
        text = chunk.text
        if text:
            text = extensions.modify_chunk(text, kind, warnings)
        streamed += text
        if chunk.finish_reason is not None and not finished:
            finished = True
            text += ending()
        yield replace(chunk, text=text)
    if not finished:
        extra = ending()
        if extra:
            yield Chunk(text=extra)
