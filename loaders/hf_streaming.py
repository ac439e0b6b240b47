"""The pieces that let a transformers ``generate()`` running in a thread stream into our Chunk contract.

Imported only by the transformers-based loaders, once torch is needed anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import torch
from transformers import StoppingCriteria, TextIteratorStreamer

from webui.core.loader import CancelToken


class CountingStreamer(TextIteratorStreamer):
    """transformers' TextIteratorStreamer that also counts the new tokens and keeps end tokens out of the text.

    End-of-generation tokens are neither shown nor counted, as in the llama.cpp loader; ``last_token`` tells
    whether generation ended on one.
    """

    def __init__(self, tokenizer: Any, hidden_tokens: Collection[int], *, skip_special_tokens: bool) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=skip_special_tokens)
        self._hidden = frozenset(hidden_tokens)
        self.generated = 0
        self.last_token: int | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        ids = [int(t) for t in value.reshape(-1).tolist()]
        if ids:
            self.last_token = ids[-1]
        kept = [t for t in ids if t not in self._hidden]
        if kept:
            # Counted before the text is queued, so a reader that sees the text also sees its tokens.
            self.generated += len(kept)
            super().put(torch.tensor(kept))


class CancelCriteria(StoppingCriteria):
    """Stops generate() when the user cancels this generation or the reader stops listening."""

    def __init__(self, cancel: CancelToken, abandoned: threading.Event) -> None:
        self.cancel = cancel
        self.abandoned = abandoned

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        stop = self.cancel.cancelled or self.abandoned.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
