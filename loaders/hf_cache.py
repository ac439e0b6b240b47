"""Prompt-prefix reuse for the transformers-based loaders: the KV cache of the last generation, kept for the next.

A chat's turn N+1 starts with the whole text of turn N, so the cache left by the last ``generate()`` already holds
the keys and values of most of the new prompt. ``PrefixCache`` keeps that one cache with the token ids it covers;
the next generation crops it to the longest common prefix with its own prompt and hands it to ``generate()``, which
then evaluates only the rest. Anything that makes the cache doubtful (another cache type, sliding-window or
linear-attention layers, offloading, a failed generation, the model moved to another device or dtype) drops it and
the prompt is evaluated in full: correctness first.

``torch`` and ``transformers`` are imported only inside the methods, like the rest of the loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def common_prefix_length(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens the two sequences share."""
    limit = min(len(cached), len(tokens))
    length = 0
    while length < limit and cached[length] == tokens[length]:
        length += 1
    return length


def is_croppable_cache(cache: Any) -> bool:
    """Whether ``cache`` is a plain full-attention DynamicCache whose every layer still holds every token it saw.

    Only then does cropping it to N tokens give exactly the cache a fresh evaluation of those N tokens would give.
    Sliding-window layers drop old tokens (and refuse to crop once the window is full), linear-attention and
    quantized layers cannot be rolled back, static caches are sized for one call, offloaded ones live elsewhere:
    all of those are refused rather than special-cased.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or getattr(cache, "offloading", False) or not cache.layers:
        return False
    length = cache.get_seq_length()
    for layer in cache.layers:
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            return False
        keys = layer.keys
        if keys is None or keys.dim() != 4 or keys.shape[0] != 1 or keys.shape[-2] != length:
            return False
    return True


@dataclass
class _Entry:
    cache: Any  # a transformers DynamicCache
    tokens: list[int]  # the ids whose keys and values it holds, in order
    placement: tuple[str, str]  # the model's (device, dtype) when the cache was made


class PrefixCache:
    """The one KV cache kept between generations of a model, with the token ids it covers."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._entry: _Entry | None = None

    @property
    def cached_tokens(self) -> int:
        """How many tokens the kept cache covers (0 when none is kept)."""
        return len(self._entry.tokens) if self._entry is not None else 0

    def clear(self) -> None:
        """Drop the kept cache (unload, a failed generation, reuse turned off)."""
        self._entry = None

    def take(self, tokens: Sequence[int], placement: tuple[str, str]) -> tuple[Any, int]:
        """The kept cache cropped to its longest common prefix with ``tokens``, and that prefix's length.

        Returns ``(None, 0)`` when nothing can be reused. Either way the cache is no longer kept here: the
        generation that takes it fills it in place, and it comes back only through ``keep`` once that generation
        ended cleanly. At least one token of ``tokens`` is always left to evaluate, so the model has logits for
        the first new token.
        """
        entry, self._entry = self._entry, None
        if entry is None or not self.enabled or entry.placement != placement:
            return None, 0
        reused = common_prefix_length(entry.tokens, tokens[: len(tokens) - 1])
        if reused == 0 or not is_croppable_cache(entry.cache):
            return None, 0
        entry.cache.crop(reused - len(entry.tokens))  # a negative count removes that many tokens from the end
        if entry.cache.get_seq_length() != reused:  # never hand generate() a cache we are unsure of
            return None, 0
        return entry.cache, reused

    def keep(self, cache: Any, sequence: Sequence[int], placement: tuple[str, str]) -> None:
        """Keep the cache a finished generation left, covering the first tokens of ``sequence`` (prompt + reply).

        generate() never evaluates the last token it samples, so the cache usually covers all but the last id.
        """
        self._entry = None
        if not self.enabled or cache is None or not is_croppable_cache(cache):
            return
        length = cache.get_seq_length()
        if 0 < length <= len(sequence):
            self._entry = _Entry(cache, [int(t) for t in sequence[:length]], placement)
