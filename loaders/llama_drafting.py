"""Draft tokens for speculative decoding in the llama.cpp slots: prompt lookup (n-grams of the sequence itself)
or a small draft model of the same vocabulary.

A drafter proposes the tokens it guesses come next; the scheduler evaluates the generated token and the drafts
in one batch, samples every position with the request's own sampler chain and keeps drafts only while they
equal what was sampled. Each kept token is sampled exactly as without drafting (the logits at a position
depend only on the tokens before it), so greedy output is the same token for token, and any sampler keeps its
distribution; only the speed changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from webui.core.loader import LoaderError

MAX_NGRAM = 4
MIN_NGRAM = 2  # a single repeated token is too weak a hint in free text: it drafts mostly misses
# Text whose tokens probe a loaded model's batch kernels (see measure_exactness): words, digits and code.
PROBE_TEXT = (
    "The quick brown fox jumps over the lazy dog, 42 times. def twice(x):\n    return [y * 2 for y in x]\n"
)
PROBE_PREFIX = 8  # probe tokens evaluated first, as a prompt
PROBE_POSITIONS = 16  # positions compared, one-token decoding against batches
# Where the probe cannot tell (batches larger than it measured) greedy trusts a choice only by this margin over
# the runner-up. With flash attention off, SmolLM2-135M's batched rows differ from one-token decoding by up to
# 1.52 logits at every batch size; with it on, by nothing up to 9 rows; gemma-3-270m's (Q4_K_M, flash attention
# on) by nothing up to 3 rows, then by up to 2.9 among its top 20 logits (kernels chosen by the batch's rows).
CLOSE_CALL = 1.5


@dataclass(frozen=True)
class BatchExactness:
    """How far a batch's logits can be trusted to be one-token decoding's, measured on the loaded model.

    Drafting evaluates a token and its drafts in one batch, and llama.cpp may pick other kernels (other
    rounding) for a batch of several rows: a greedy near tie could then go another way than one-by-one
    decoding. Batches of up to ``exact_rows`` rows gave one-token decoding's logits bit for bit; a larger one
    is trusted only where the best logit leads by more than ``margin``.
    """

    exact_rows: int
    margin: float

    def close_call_margin(self, rows: int) -> float:
        """The lead a greedy choice needs in a batch of ``rows`` rows (0: any lead, the rows are exact)."""
        return 0.0 if rows <= self.exact_rows else self.margin


def measure_exactness(
    lib: Any, ctx: Any, batch: Any, seq_id: int, n_vocab: int, tokens: list[int], most_rows: int
) -> BatchExactness:
    """Decode ``tokens`` one at a time and in batches of 2..``most_rows`` rows in sequence ``seq_id`` of
    ``ctx`` (emptied after), and compare the logits; about a quarter of a second on a small CPU model."""
    import numpy as np

    memory = lib.llama_get_memory(ctx)
    prefix, probe = tokens[:PROBE_PREFIX], tokens[PROBE_PREFIX : PROBE_PREFIX + PROBE_POSITIONS]

    def decode(part: list[int], start: int) -> list[Any] | None:
        for i, token in enumerate(part):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = True
        batch.n_tokens = len(part)
        if lib.llama_decode(ctx, batch) != 0:
            return None
        return [
            np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()
            for i in range(len(part))
        ]

    unknown = BatchExactness(1, CLOSE_CALL)
    try:
        if len(probe) < 2 or decode(prefix, 0) is None:
            return unknown
        single: list[Any] = []
        for i, token in enumerate(probe):
            rows = decode([token], len(prefix) + i)
            if rows is None:
                return unknown
            single += rows
        tops = [row.argsort()[-20:] for row in single]  # a greedy choice is made among these
        exact, moved = 1, 0.0
        for size in range(2, min(most_rows, len(probe)) + 1):
            lib.llama_memory_seq_rm(memory, seq_id, len(prefix), -1)
            batched: list[Any] = []
            for start in range(0, len(probe), size):
                rows = decode(probe[start : start + size], len(prefix) + start)
                if rows is None:
                    return unknown
                batched += rows
            if exact == size - 1 and all(np.array_equal(a, b) for a, b in zip(single, batched, strict=True)):
                exact = size
                continue
            worst = max(
                float(np.abs(a[top] - b[top]).max()) for a, b, top in zip(single, batched, tops, strict=True)
            )
            moved = max(moved, worst)
        # Each of the two leading logits may move by ``moved``; the probe saw only a few positions: 1.5x more.
        # Batches larger than the probe's are not known to be exact either.
        return BatchExactness(exact, max(CLOSE_CALL, 3.0 * moved))
    finally:
        lib.llama_memory_seq_rm(memory, seq_id, -1, -1)


class Drafter(Protocol):
    """What the slots ask of a drafter: hear each token of the sequence, guess the next ones."""

    def append(self, token: int) -> None: ...

    def draft(self, most: int) -> list[int]: ...


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


class DraftModel:
    """A small GGUF with the target's vocabulary, in its own llama.cpp context (one sequence per slot), that
    drafts greedily for the target. Its cache keeps each slot's tokens, so a step evaluates only what is new."""

    def __init__(
        self, lib: Any, path: Path, target_vocab: Any, *, slots: int, n_ctx: int, threads: int
    ) -> None:
        self._lib = lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not model:
            raise LoaderError(f"llama.cpp could not load the draft model {path.name}.")
        self._model = model
        try:
            self._vocab = lib.llama_model_get_vocab(model)
            _check_vocabulary(lib, path.name, self._vocab, target_vocab)
            context = lib.llama_context_default_params()
            context.n_ctx = n_ctx * slots
            context.n_seq_max = slots
            context.kv_unified = False
            context.n_batch = context.n_ubatch = 512
            context.n_threads = context.n_threads_batch = threads
            context.no_perf = True
            ctx = lib.llama_init_from_model(model, context)
            if not ctx:
                raise LoaderError(f"llama.cpp could not make a context for the draft model {path.name}.")
        except BaseException:
            lib.llama_model_free(model)
            raise
        self._ctx = ctx
        self._memory = lib.llama_get_memory(ctx)
        self._batch = lib.llama_batch_init(512, 0, 1)
        chain_params = lib.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._greedy = lib.llama_sampler_chain_init(chain_params)
        lib.llama_sampler_chain_add(self._greedy, lib.llama_sampler_init_greedy())
        self._cells: list[list[int]] = [[] for _ in range(slots)]
        self.name = path.name

    def draft(self, seq_id: int, tokens: list[int], most: int) -> list[int]:
        """Up to ``most`` tokens the draft model expects after ``tokens`` (sequence ``seq_id``'s text)."""
        if most <= 0 or not tokens:
            return []
        lib = self._lib
        cells = self._cells[seq_id]
        keep = 0
        limit = min(len(cells), len(tokens) - 1)  # the last token is evaluated again for fresh logits
        while keep < limit and cells[keep] == tokens[keep]:
            keep += 1
        if not lib.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
            lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            keep = 0
        del cells[keep:]
        if not self._decode(seq_id, tokens[keep:]):
            return []
        drafts: list[int] = []
        while True:
            token = int(lib.llama_sampler_sample(self._greedy, self._ctx, -1))
            if lib.llama_vocab_is_eog(self._vocab, token):
                break
            drafts.append(token)
            if len(drafts) >= most or not self._decode(seq_id, [token]):
                break
        return drafts

    def _decode(self, seq_id: int, tokens: list[int]) -> bool:
        """Evaluate ``tokens`` after sequence ``seq_id``'s cells (logits for the last one); False on failure."""
        lib = self._lib
        batch = self._batch
        cells = self._cells[seq_id]
        for start in range(0, len(tokens), 512):
            part = tokens[start : start + 512]
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = len(cells) + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = start + i == len(tokens) - 1
            batch.n_tokens = len(part)
            if lib.llama_decode(self._ctx, batch) != 0:
                lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
                cells.clear()
                return False
            cells.extend(part)
        return True

    def free(self) -> None:
        lib = self._lib
        if self._ctx is not None:
            lib.llama_sampler_free(self._greedy)
            lib.llama_batch_free(self._batch)
            lib.llama_free(self._ctx)
            lib.llama_model_free(self._model)
            self._ctx = None


class ModelDrafts:
    """One request's drafting by a ``DraftModel``: the sequence so far, drafted for in the request's slot."""

    def __init__(self, model: DraftModel, seq_id: int, tokens: list[int]) -> None:
        self._model = model
        self._seq_id = seq_id
        self._tokens = list(tokens)

    def append(self, token: int) -> None:
        self._tokens.append(token)

    def draft(self, most: int) -> list[int]:
        return self._model.draft(self._seq_id, self._tokens, most)


def _check_vocabulary(lib: Any, name: str, draft: Any, target: Any) -> None:
    """LoaderError unless the draft model's tokens are the target's (same ids, same text)."""
    size = lib.llama_vocab_n_tokens(draft)
    if size != lib.llama_vocab_n_tokens(target):
        raise LoaderError(
            f"The draft model {name} has another vocabulary ({size} tokens, the model has "
            f"{lib.llama_vocab_n_tokens(target)}): choose a smaller model of the same family."
        )
    step = max(1, size // 512)
    for token in range(0, size, step):
        if lib.llama_vocab_get_text(draft, token) != lib.llama_vocab_get_text(target, token):
            raise LoaderError(
                f"The draft model {name} has another vocabulary (token {token} differs): choose a smaller "
                "model of the same family."
            )
