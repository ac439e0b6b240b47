"""Draft tokens for speculative decoding in the llama.cpp slots: prompt lookup (n-grams of the sequence itself).

A drafter proposes the tokens it guesses come next; the scheduler evaluates the generated token and the drafts
in one batch, samples every position with the request's own sampler chain and keeps drafts only while they
equal what was sampled. Each kept token is sampled exactly as without drafting (the logits at a position
depend only on the tokens before it), so greedy output is the same token for token, and any sampler keeps its
distribution; only the speed changes.
"""

from __future__ import annotations

MAX_NGRAM = 4
MIN_NGRAM = 2  # a single repeated token is too weak a hint in free text: it drafts mostly misses


class PromptLookup:
    """Drafts what followed the latest earlier occurrence of the sequence's last n-gram (longest first).

    For each n it keeps, per n-gram, the position that followed its latest occurrence, updated as tokens are
    appended, so a draft costs a few dictionary lookups however long the sequence is.
    """

    def __init__(self, tokens: list[int], max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> None:
        self._tokens: list[int] = []
        self._sizes = range(max_ngram, min_ngram - 1, -1)
        self._follow: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self._sizes}
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add the sequence's next token (a sampled one, or one of the prompt)."""
        tokens = self._tokens
        end = len(tokens)
        for n in self._sizes:
            if end >= n:
                self._follow[n][tuple(tokens[end - n :])] = end
        tokens.append(token)

    def draft(self, most: int) -> list[int]:
        """Up to ``most`` tokens guessed to come next; empty when no n-gram repeats."""
        tokens = self._tokens
        end = len(tokens)
        if most <= 0:
            return []
        for n in self._sizes:
            if end < n:
                continue
            start = self._follow[n].get(tuple(tokens[end - n :]))
            if start is not None:
                return tokens[start : min(start + most, end)]
        return []
