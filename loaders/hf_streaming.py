"""The pieces that let a transformers ``generate()`` running in a thread stream into our Chunk contract.

Imported only by the transformers-based loaders, once torch is needed anyway.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Collection, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, TextIteratorStreamer

from webui.core.loader import CancelToken, TokenLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a SentencePiece byte-fallback token
_SCORE_SLICE = 256  # prompt positions scored at once


class CountingStreamer(TextIteratorStreamer):
    """transformers' TextIteratorStreamer that also counts the new tokens and keeps end tokens out of the text.

    End-of-generation tokens are neither shown nor counted, as in the llama.cpp loader; ``last_token`` tells
    whether generation ended on one.
    """

    def __init__(
        self,
        tokenizer: Any,
        hidden_tokens: Collection[int],
        *,
        skip_special_tokens: bool,
        logprobs: LogprobRecorder | None = None,
    ) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=skip_special_tokens)
        self._hidden = frozenset(hidden_tokens)
        self.generated = 0
        self.last_token: int | None = None
        self._logprobs = logprobs
        # With ``logprobs``: one entry per counted token, appended before the token is counted.
        self.entries: list[TokenLogprob] = []

    def put(self, value: torch.Tensor) -> None:
        if self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        ids = [int(t) for t in value.reshape(-1).tolist()]
        if ids:
            self.last_token = ids[-1]
        kept = [t for t in ids if t not in self._hidden]
        if self._logprobs is not None:
            for token_id in ids:
                entry = self._logprobs.chosen(token_id)
                if token_id not in self._hidden:
                    self.entries.append(entry)
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


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte (the inverse of the map byte-level BPE vocabularies use)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


class TokenPieces:
    """Each token's text and exact bytes: byte-level BPE vocabularies are mapped back to their bytes,
    SentencePiece ones read ``▁`` as a space and ``<0xNN>`` as that byte; special tokens are their own
    text. A token that is part of a UTF-8 character shows as a replacement character."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._special = frozenset(int(t) for t in getattr(tokenizer, "all_special_ids", ()))
        self._bytes = _byte_decoder() if _byte_level(tokenizer) else None
        self._known: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token_id: int) -> tuple[str, bytes]:
        known = self._known.get(token_id)
        if known is None:
            data = self._data(token_id)
            known = self._known[token_id] = (data.decode("utf-8", errors="replace"), data)
        return known

    def _data(self, token_id: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if token_id in self._special:
            return piece.encode()
        if self._bytes is not None:
            mapped = [self._bytes.get(char) for char in piece]
            if all(byte is not None for byte in mapped):
                return bytes(byte for byte in mapped if byte is not None)
            return piece.encode()  # an added token outside the byte alphabet: its own text
        byte = _BYTE_TOKEN.fullmatch(piece)
        if byte is not None:
            return bytes([int(byte.group(1), 16)])
        return piece.replace("▁", " ").encode()


def _byte_level(tokenizer: Any) -> bool:
    """Whether a fast tokenizer decodes with the byte-level decoder (GPT-2, Llama 3, Qwen ...)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return False
    try:
        state = json.loads(decoder.__getstate__())
    except (TypeError, ValueError, AttributeError):
        return False
    kinds = [state.get("type")] + [part.get("type") for part in state.get("decoders", []) or []]
    return "ByteLevel" in kinds


class LogprobRecorder:
    """The log-softmax of the model's own logits at each step, read by a forward hook before any logits
    processor or warper sees them; the streamer asks it for the chosen token's entry. With ``prompt_ids``
    the first forward pass must return logits for every prompt position: it also scores the prompt."""

    def __init__(
        self, pieces: TokenPieces, top: int, *, steps: bool = True, prompt_ids: Sequence[int] | None = None
    ) -> None:
        self._pieces = pieces
        self._top = top
        self._steps = steps  # False: only the prompt is scored
        self._prompt_ids = list(prompt_ids) if prompt_ids is not None else None
        self._rows: deque[torch.Tensor] = deque()
        self.prompt: tuple[TokenLogprob | None, ...] = ()

    def hook(self, module: Any, args: Any, output: Any) -> None:
        """A forward hook: keep the last position's logprobs (and score the prompt on the first pass)."""
        logits = (output.logits if hasattr(output, "logits") else output[0])[0]
        with torch.no_grad():
            if self._prompt_ids is not None:
                ids, self._prompt_ids = self._prompt_ids, None
                self.prompt = (None, *self._score(logits, ids))
            if self._steps:
                self._rows.append(torch.log_softmax(logits[-1].float(), dim=-1))

    def _score(self, logits: torch.Tensor, ids: Sequence[int]) -> list[TokenLogprob]:
        """Each prompt token after the first, scored by the logits of the position before it (a slice of
        positions at a time, so the vocabulary-wide copies stay small)."""
        if logits.shape[0] < len(ids):  # the pass did not return every position's logits
            return []
        positions = logits[logits.shape[0] - len(ids) : -1]
        entries: list[TokenLogprob] = []
        for start in range(0, positions.shape[0], _SCORE_SLICE):
            rows = torch.log_softmax(positions[start : start + _SCORE_SLICE].float(), dim=-1)
            entries += [self._entry(row, ids[start + 1 + i]) for i, row in enumerate(rows)]
        return entries

    def chosen(self, token_id: int) -> TokenLogprob:
        """The entry of the token chosen at the oldest step not yet asked about."""
        return self._entry(self._rows.popleft(), token_id)

    def _entry(self, row: torch.Tensor, token_id: int) -> TokenLogprob:
        top: tuple[TokenLogprob, ...] = ()
        if self._top > 0:
            values, indices = torch.topk(row, self._top)
            top = tuple(
                self._plain(int(i), float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            )
        text, data = self._pieces(token_id)
        return TokenLogprob(token_id, text, data, float(row[token_id]), top)

    def _plain(self, token_id: int, logprob: float) -> TokenLogprob:
        text, data = self._pieces(token_id)
        return TokenLogprob(token_id, text, data, logprob)
