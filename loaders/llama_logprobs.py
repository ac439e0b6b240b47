"""Token log-probabilities from llama.cpp's logits: the log-softmax of the model's own logits at a batch index,
before any sampler transform (temperature, penalties, top-k ...), as llama.cpp's server reports them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from webui.core.loader import TokenLogprob


class LogprobReader:
    """Reads one position's logits from a llama.cpp context and turns them into ``TokenLogprob``s."""

    def __init__(self, lib: Any, n_vocab: int, piece: Callable[[int], bytes]) -> None:
        self._lib = lib
        self._n_vocab = n_vocab
        self._piece = piece  # a token's bytes, special tokens written out

    def log_softmax(self, ctx: Any, index: int) -> np.ndarray:
        """The log-softmax over the vocabulary of the logits at batch ``index`` of the last decode (float64)."""
        pointer = self._lib.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def entry(self, logprobs: np.ndarray, token: int, top_n: int) -> TokenLogprob:
        """``token``'s entry, with the ``top_n`` most likely tokens at that position (most likely first)."""
        top: tuple[TokenLogprob, ...] = ()
        if top_n > 0:
            n = min(top_n, self._n_vocab)
            best = np.argpartition(-logprobs, n - 1)[:n]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            top = tuple(self._plain(int(t), float(logprobs[t])) for t in best)
        return self._plain(token, float(logprobs[token]), top)

    def _plain(self, token: int, logprob: float, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
        data = self._piece(token)
        return TokenLogprob(token, data.decode("utf-8", errors="replace"), data, logprob, top)
