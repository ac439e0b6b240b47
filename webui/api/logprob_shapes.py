"""Token log-probabilities in each protocol's shape, from the core's TokenLogprob entries.

OpenAI chat completions and Ollama: one object per token, ``{token, logprob, bytes, top_logprobs: [{token,
logprob, bytes}]}``. OpenAI (legacy) completions: parallel lists ``{tokens, token_logprobs, top_logprobs,
text_offset}``, where ``top_logprobs`` maps each position's most likely tokens (and the chosen one) to their
logprobs, and an echoed prompt's first token has no logprob (``null``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from webui.core.loader import TokenLogprob

_SLACK = 8  # how far past its expected place an echoed prompt token's text is looked for


class TopLogprobOut(BaseModel):
    """One of the most likely tokens at a position."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprobOut):
    """A generated token's logprob with the most likely tokens at its position (OpenAI chat, Ollama)."""

    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(BaseModel):
    """A chat choice's (or chunk choice's) ``logprobs``: its answer tokens."""

    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class CompletionLogprobs(BaseModel):
    """A completion choice's ``logprobs`` in the legacy shape."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


def top_out(entry: TokenLogprob) -> TopLogprobOut:
    return TopLogprobOut(token=entry.token, logprob=entry.logprob, bytes=list(entry.token_bytes))


def token_out(entry: TokenLogprob) -> TokenLogprobOut:
    """``{token, logprob, bytes, top_logprobs}`` of one generated token."""
    return TokenLogprobOut(
        token=entry.token,
        logprob=entry.logprob,
        bytes=list(entry.token_bytes),
        top_logprobs=[top_out(top) for top in entry.top],
    )


def tokens_out(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """The entries as plain dicts (an event's or Ollama response's ``logprobs``)."""
    return [token_out(entry).model_dump() for entry in entries]


def chat_logprobs(entries: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[token_out(entry) for entry in entries])


@dataclass
class CompletionOffsets:
    """Builds a completion choice's legacy ``logprobs``, keeping each token's ``text_offset`` in the text the
    choice returns (the echoed prompt ``prefix`` first, then the generated text), across streamed chunks."""

    prefix: str = ""
    offset: int = field(init=False)  # where the next generated token's text begins

    def __post_init__(self) -> None:
        self.offset = len(self.prefix)

    def prompt(self, entries: Sequence[TokenLogprob | None]) -> CompletionLogprobs:
        """The echoed prompt's tokens. Each is looked for in the prefix from where the last one ended; one not
        found close by (a BOS token, a piece of a character, the first token, whose text the loader does not
        give) takes the offset there and moves it by nothing."""
        shape = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        position = 0
        for index, entry in enumerate(entries):
            token = entry.token if entry is not None else ""
            found = self.prefix.find(token, position, position + len(token) + _SLACK) if token else -1
            if found != -1:
                position = found
            shape.tokens.append(token)
            shape.text_offset.append(position)
            if found != -1:
                position += len(token)
            if entry is None or index == 0:
                shape.token_logprobs.append(None)
                shape.top_logprobs.append(None)
            else:
                shape.token_logprobs.append(entry.logprob)
                shape.top_logprobs.append(_top_map(entry))
        return shape

    def generated(self, entries: Sequence[TokenLogprob]) -> CompletionLogprobs:
        """Generated tokens, each with the most likely tokens and itself in ``top_logprobs``."""
        shape = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        for entry in entries:
            shape.tokens.append(entry.token)
            shape.token_logprobs.append(entry.logprob)
            shape.top_logprobs.append(_top_map(entry))
            shape.text_offset.append(self.offset)
            self.offset += len(entry.token)
        return shape


def joined(first: CompletionLogprobs, second: CompletionLogprobs) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=first.tokens + second.tokens,
        token_logprobs=first.token_logprobs + second.token_logprobs,
        top_logprobs=first.top_logprobs + second.top_logprobs,
        text_offset=first.text_offset + second.text_offset,
    )


def _top_map(entry: TokenLogprob) -> dict[str, float]:
    """The most likely tokens at the entry's position and the entry itself, token text -> logprob (the more
    likely of two tokens with the same text wins)."""
    tops: dict[str, float] = {}
    for top in (*entry.top, entry):
        tops.setdefault(top.token, top.logprob)
    return tops
