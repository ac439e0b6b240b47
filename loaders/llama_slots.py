"""Slots for the llama.cpp loader: every generation runs here, several decoded together, one batch per step.

The model gets its own llama.cpp context with ``n_seq_max = parallel`` (one sequence per slot, each with the
full per-slot context: ``kv_unified`` off, so one long chat never starves the others) and ONE scheduler
thread; ``parallel`` 1 is one slot. Each step it builds one ``llama_batch`` from every active slot: the next token of each
generating one, then prompt tokens of new requests (chunked to ``n_batch``), calls ``llama_decode`` once and
samples each sequence at its own batch index with its own sampler chain (built from its request's
GenerationParams by the loader's ``_SamplerChain``).

Each slot keeps the cells it has evaluated (text tokens, and whole images by SHA-256), so the next turn of a
chat goes to the free slot sharing most of its prompt and evaluates only the rest. A cancelled or abandoned
request frees its slot at the next step. Images are evaluated per slot by libmtmd (its helper takes a seq_id):
an image decode is its own ``llama_decode`` call, made between two steps.

The per-token path is lean on purpose (it is what one stream's speed comes down to): sampling runs in
llama.cpp's C sampler chain, token pieces are cached, and nothing reads the logits into Python unless the
request asked for log-probabilities. With drafting on (see loaders.llama_drafting) a generating slot puts its
drafts after its next token in the same batch, and keeps those the sampler confirms.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loaders.llama_drafting import (
    CLOSE_CALL,
    BatchExactness,
    Drafter,
    ModelDrafts,
    PromptLookup,
    measure_exactness,
)
from webui.core.loader import CancelToken, Chunk, FinishReason, LoaderError, PromptUsage, TokenLogprob

if TYPE_CHECKING:
    from loaders.llama_drafting import DraftModel
    from loaders.llama_logprobs import LogprobReader
    from loaders.llama_vision import Piece, Projector

_END = object()
# A shorter shared prefix is evaluated again with the rest: it saves next to nothing, and one batch gives the
# same numbers as a fresh evaluation (llama.cpp rounds differently when a prompt is split into batches).
MIN_REUSE = 16
# A cell of a slot's evaluated prefix: a text token, or a whole image (SHA-256, positions, tokens).
Cell = int | tuple[str, int, int]


@dataclass
class SlotRequest:
    """One generation handed to the scheduler: its prompt as units (tokens and image pieces) and its sampler."""

    units: list[int | Piece]
    n_tokens: int  # context cells the prompt takes (tokens, image tokens included)
    sampler: Any  # a loaders.llama_cpp._SamplerChain (freed by the scheduler when the request ends)
    max_new_tokens: int
    special: bool  # detokenize special tokens (skip_special_tokens off)
    cancel: CancelToken
    projector: Projector | None = None
    logprobs: int = -1  # -1: none; else the token's log-probability and this many alternatives
    prompt_logprobs: bool = False  # score every prompt token (the prompt is evaluated in full)
    draft_max: int = 0  # most tokens drafted per step by prompt lookup (0: no drafting)
    draft_len: int = 0  # tokens drafted next step: grows while drafts are kept, shrinks when they miss
    greedy: bool = False  # temperature 0: drafting must give exactly the tokens one-by-one decoding gives
    # Tokens sampled within this long of the last chunk handed out wait to go with the next (0: none wait; chunks
    # that already wait for a busy reader still go as one; -1: never merged, every token its own chunk, as a
    # thinking budget counts them). Every chunk wakes three threads on its way to a client, which a small
    # machine pays for in generation speed; 20 ms is far below what a reader notices.
    flush_s: float = 0.0
    held: Chunk | None = None  # tokens waiting to be handed out
    sent_at: float = 0.0  # when the last chunk was handed out
    solo: bool = False  # decode the next token without drafts (a close call in a batch is decided alone)
    usage: PromptUsage = field(default_factory=lambda: PromptUsage(0))
    out: Any = None  # queue.SimpleQueue of Chunk | BaseException | _END
    done: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # the reader went away (closed the stream)
    next_unit: int = 0
    produced: int = 0
    budget: int = 0
    pending: int | None = None  # the sampled token still to be evaluated
    index: int | None = None  # its logits' index in this step's batch
    drafts: list[int] = field(
        default_factory=list
    )  # this step's drafts, at the batch indices after ``index``
    drafter: Drafter | None = None
    scored: list[tuple[int, int]] = field(default_factory=list)  # (batch index, unit) of prompt tokens scored
    prompt_scores: list[TokenLogprob | None] = field(default_factory=list)
    decoder: Any = None

    def cell(self, unit: int | Piece) -> Cell:
        if isinstance(unit, int):
            return unit
        return (unit.sha256, unit.n_pos, unit.n_tokens)


@dataclass
class Slot:
    seq_id: int
    cells: list[Cell] = field(default_factory=list)
    n_pos: int = 0  # the next position of the sequence
    request: SlotRequest | None = None
    last_used: int = 0


class SlotScheduler:
    """``parallel`` sequences of one llama.cpp context, decoded together by one thread."""

    def __init__(
        self,
        lib: Any,
        llm: Any,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        is_end: Callable[[int], bool],
        piece: Callable[[int, bool], bytes],
        logprob_reader: LogprobReader,
        *,
        can_trim: bool = True,
        draft_model: DraftModel | None = None,
        flash_attn_type: int = -1,
        probe_tokens: list[int] | None = None,
        draft_max: int = 0,
    ) -> None:
        import queue

        self._queue = queue
        self._lib = lib
        params = lib.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * parallel
        params.n_seq_max = parallel
        params.kv_unified = False  # every slot its own n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.no_perf = True
        # -1 auto: llama.cpp uses flash attention where the device supports it (as llama-server does). Besides
        # speed (8 parallel clients here: ~67 -> ~88 tok/s), its small batches' rows equal one-token decoding bit
        # for bit on the models measured, so greedy drafting needs no close-call checks; without it they differ.
        params.flash_attn_type = flash_attn_type
        if parallel > 1:
            # llama.cpp runs every batch of more than one token on n_threads_batch, and a step of several
            # generating sequences is such a batch: it runs on the generation threads (n_threads). On a busy
            # small machine more threads spin-wait on each other and collapse; switching counts per step was
            # slower still (measured), so prompt chunks run on n_threads too.
            params.n_threads_batch = params.n_threads
        ctx = lib.llama_init_from_model(llm.model, params)
        if not ctx:
            raise LoaderError(
                f"llama.cpp could not make a context for {parallel} slots of {n_ctx} tokens "
                "(not enough memory? lower parallel or n_ctx)."
            )
        self.ctx: Any = ctx
        self._memory = lib.llama_get_memory(ctx)
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, parallel)
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)

        self._is_end = is_end
        self._piece = piece
        self._logprobs = logprob_reader
        self._n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(llm.model)))
        self._ends: dict[int, bool] = {}
        self._pieces: dict[tuple[int, bool], bytes] = {}
        # Drafting needs the rejected drafts removed from a sequence (not possible for recurrent models).
        self.can_trim = can_trim
        self._draft_model = draft_model  # drafts for every slot when set (else prompt lookup, if asked)
        # Where a batch's rows may differ from one-token decoding (greedy drafting decides near ties alone).
        self.exactness = BatchExactness(1, CLOSE_CALL)
        if probe_tokens and draft_max > 0 and can_trim:
            self.exactness = measure_exactness(
                lib, ctx, self._batch, 0, self._n_vocab, probe_tokens, draft_max + 1
            )
        self._slots = [Slot(seq_id) for seq_id in range(parallel)]
        self._inbox: list[SlotRequest] = []
        self._waiting: list[SlotRequest] = []
        self._cond = threading.Condition()
        self._closed = False
        self._uses = 0
        self._thread = threading.Thread(target=self._loop, name="palabre-llama-slots", daemon=True)
        self._thread.start()

    # -- the reader's side ------------------------------------------------------------------------------------

    def run(self, request: SlotRequest) -> Iterator[Chunk]:
        """Hand ``request`` to the scheduler and yield its chunks; closing early frees its slot."""
        request.out = self._queue.SimpleQueue()
        with self._cond:
            if self._closed:
                request.sampler.free()
                raise LoaderError("The model was unloaded.")
            self._inbox.append(request)
            self._cond.notify()
        held: Any = None  # what ended the last batch of waiting chunks (the end, or an error)
        try:
            while True:
                item, held = (held, None) if held is not None else (request.out.get(), None)
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                # Chunks that waited while the reader was busy go out as one: under load (many streams on a
                # small machine) every hop downstream then costs once per batch of tokens, not per token.
                waiting: list[Chunk] = []
                while request.flush_s >= 0 and held is None and not request.out.empty():
                    more = request.out.get()
                    if isinstance(more, Chunk):
                        waiting.append(more)
                    else:
                        held = more
                yield _merged(item, waiting) if waiting else item
        finally:
            request.abandoned = True
            with self._cond:
                self._cond.notify()
            request.done.wait()  # the scheduler no longer touches its prompt (image chunks are freed next)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        lib = self._lib
        lib.llama_batch_free(self._batch)
        lib.llama_free(self.ctx)
        self.ctx = None
        if self._draft_model is not None:
            self._draft_model.free()

    # -- the scheduler thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._inbox and not self._waiting and not self._busy():
                        self._cond.wait()
                    if self._closed:
                        break
                    self._waiting.extend(self._inbox)
                    self._inbox.clear()
                self._admit()
                self._drop_stopped()
                if self._busy():
                    self._step()
        finally:
            with self._cond:
                self._closed = True
                left = [*self._inbox, *self._waiting]
                self._inbox.clear()
                self._waiting.clear()
            for request in left:
                request.sampler.free()
                request.out.put(LoaderError("The model was unloaded."))
                request.out.put(_END)
                request.done.set()
            for slot in self._slots:
                if slot.request is not None:
                    self._fail(slot, LoaderError("The model was unloaded."))

    def _busy(self) -> bool:
        return any(slot.request is not None for slot in self._slots)

    def _admit(self) -> None:
        """Give each waiting request the free slot whose evaluated prefix it shares most."""
        while self._waiting:
            free = [slot for slot in self._slots if slot.request is None]
            if not free:
                return
            request = self._waiting.pop(0)
            if request.cancel.cancelled or request.abandoned:
                self._end_unplaced(request)
                continue
            cells = [request.cell(unit) for unit in request.units]
            best, shared = free[0], -1
            for slot in free:
                # A prefix too short to be kept counts as none: a new chat that merely opens like another (the
                # same few template tokens) goes to the least recently used slot instead of evicting that chat.
                n = _shared(slot.cells, cells)
                n = n if n >= MIN_REUSE else 0
                if n > shared or (n == shared and slot.last_used < best.last_used):
                    best, shared = slot, n
            self._place(best, request, cells)

    def _place(self, slot: Slot, request: SlotRequest, cells: list[Cell]) -> None:
        """Keep the shared prefix in ``slot`` (at least one unit is evaluated for fresh logits)."""
        lib = self._lib
        keep = min(_shared(slot.cells, cells), len(cells) - 1)
        if request.prompt_logprobs or keep < MIN_REUSE:
            keep = 0
        positions = sum(_positions(cell) for cell in slot.cells[:keep])
        if keep == 0 or not lib.llama_memory_seq_rm(self._memory, slot.seq_id, positions, -1):
            lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            keep, positions = 0, 0
        del slot.cells[keep:]
        slot.n_pos = positions
        reused = sum(_tokens(cell) for cell in cells[:keep])
        request.usage = PromptUsage(request.n_tokens, reused)
        request.next_unit = keep
        request.budget = min(request.max_new_tokens, self.n_ctx - request.n_tokens)
        request.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if request.prompt_logprobs:
            request.prompt_scores = [None]  # the first token has nothing before it
        if request.draft_max > 0 and self.can_trim:
            tokens = [unit for unit in request.units if isinstance(unit, int)]
            model = self._draft_model
            request.drafter = ModelDrafts(model, slot.seq_id, tokens) if model else PromptLookup(tokens)
            request.draft_len = max(1, request.draft_max // 2)
        self._uses += 1
        slot.last_used = self._uses
        slot.request = request
        if request.budget <= 0:
            self._finish(slot, "length")

    def _end_unplaced(self, request: SlotRequest) -> None:
        request.sampler.free()
        request.out.put(Chunk("", finish_reason="cancelled", prompt=PromptUsage(request.n_tokens)))
        request.out.put(_END)
        request.done.set()

    def _drop_stopped(self) -> None:
        for slot in self._slots:
            request = slot.request
            if request is not None and (request.cancel.cancelled or request.abandoned):
                self._finish(slot, "cancelled")

    def _step(self) -> None:
        lib = self._lib
        batch = self._batch
        n = 0
        sampled: list[Slot] = []
        active = [slot for slot in self._slots if slot.request is not None]
        # The next token of every generating sequence first, each followed by its drafts.
        for slot in active:
            request = slot.request
            assert request is not None
            request.index = None
            request.drafts = []
            if request.pending is None:
                continue
            n = self._add(batch, n, request.pending, slot, True)
            request.index = n - 1
            request.pending = None
            sampled.append(slot)
            if request.solo:
                request.solo = False
            elif request.drafter is not None:
                room = min(
                    request.draft_len,
                    request.budget - request.produced - 1,  # the step samples one more than it drafts
                    self.n_ctx - slot.n_pos - 1,
                    self.n_batch - n - (len(active) - len(sampled)),  # leave room for the others' tokens
                )
                if request.greedy and len(active) == 1:
                    # A greedy reply must be the undrafted one, so its drafts stay within the rows whose logits
                    # (and cache entries) equal one-token decoding's: none where even two rows differ (flash
                    # attention off). Past them a near tie can be decided alone, but the cache keeps the batch's
                    # rounding, which later steps read: on an AVX2-only CPU the reply then drifted from the
                    # undrafted one. (Beside other sequences every step is a batch of several rows anyway.)
                    room = min(room, self.exactness.exact_rows - n)
                request.drafts = request.drafter.draft(room)
                for token in request.drafts:
                    n = self._add(batch, n, token, slot, True)
        # Then prompt units, oldest request first, as far as the batch holds.
        for slot in sorted(active, key=lambda s: s.last_used):
            request = slot.request
            if request is None or request.index is not None or request.next_unit >= len(request.units):
                continue
            units = request.units
            last = len(units) - 1
            if not isinstance(units[request.next_unit], int):
                if not self._image(slot, request):
                    continue
                if request.next_unit > last:  # the prompt ended with the image: its logits are there now
                    self._sample(slot, -1)
                continue
            request.scored.clear()
            while n < self.n_batch and request.next_unit <= last:
                unit = units[request.next_unit]
                if not isinstance(unit, int):
                    break
                final = request.next_unit == last
                n = self._add(batch, n, unit, slot, final or request.prompt_logprobs)
                if request.prompt_logprobs and not final:
                    request.scored.append((n - 1, request.next_unit + 1))
                request.next_unit += 1
                if final:
                    request.index = n - 1
                    sampled.append(slot)
            if request.scored:
                sampled.append(slot)
        if n == 0:
            return
        if n > len(sampled):  # prompt tokens or drafts: a longer step, so nothing waits through it
            for slot in active:
                if slot.request is not None:
                    self._hand_out(slot.request)
        batch.n_tokens = n
        status = lib.llama_decode(self.ctx, batch)
        if status != 0:
            error = LoaderError(f"llama.cpp could not decode the batch (error {status}).")
            for slot in active:
                if slot.request is not None:
                    self._fail(slot, error)
            return
        for slot in sampled:
            request = slot.request
            if request is None:
                continue
            if request.scored:
                self._score_prompt(request)
            if request.index is not None:
                self._sample(slot, request.index)
                request.index = None

    def _add(self, batch: Any, n: int, token: int, slot: Slot, logits: bool) -> int:
        batch.token[n] = token
        batch.pos[n] = slot.n_pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = slot.seq_id
        batch.logits[n] = logits
        slot.n_pos += 1
        slot.cells.append(token)
        return n + 1

    def _image(self, slot: Slot, request: SlotRequest) -> bool:
        """Evaluate the image that is ``request``'s next unit into ``slot``'s sequence; False when it failed."""
        piece = request.units[request.next_unit]
        assert request.projector is not None and not isinstance(piece, int)
        last = request.next_unit == len(request.units) - 1
        try:
            slot.n_pos = request.projector.eval_image(
                self.ctx, piece, slot.n_pos, slot.seq_id, self.n_batch, last
            )
        except LoaderError as exc:
            self._fail(slot, exc)
            return False
        slot.cells.append(request.cell(piece))
        request.next_unit += 1
        return True

    def _score_prompt(self, request: SlotRequest) -> None:
        """The log-probability of each prompt token scored in this step, from the logits before it."""
        reader = self._logprobs
        top = max(request.logprobs, 0)
        for index, unit in request.scored:
            token = request.units[unit]
            assert isinstance(token, int)
            request.prompt_scores.append(reader.entry(reader.log_softmax(self.ctx, index), token, top))
        request.scored.clear()

    def _sample(self, slot: Slot, index: int) -> None:
        """Sample at ``index`` and at each of the step's drafts while they match; hand out one chunk."""
        request = slot.request
        assert request is not None
        drafts = request.drafts
        request.drafts = []
        # The batch holds [token, *drafts] at the end of the sequence: ``evaluated[i]`` sits at ``index + i``.
        evaluated = [
            cell for cell in slot.cells[len(slot.cells) - len(drafts) - 1 :] if isinstance(cell, int)
        ]
        if len(evaluated) != len(drafts) + 1:
            evaluated = []
        texts: list[str] = []
        scores: list[TokenLogprob] = []
        reason: FinishReason | None = None
        kept = 0  # drafts the sampler confirmed
        pending: int | None = None
        margin = self.exactness.close_call_margin(self._batch.n_tokens) if drafts and request.greedy else 0.0
        for step in range(len(drafts) + 1):
            position = index + step if index >= 0 else index
            if margin > 0 and self._close_call(position, margin):
                # llama.cpp's batch and one-token kernels may round differently (see BatchExactness): a near
                # tie decided in this batch could go another way than one-by-one decoding. Take the token at
                # this position out of the cache and decode it alone next step.
                self._trim(slot, len(evaluated) - step)
                pending, request.solo = evaluated[step], True
                break
            token = request.sampler.sample(position)
            if self._end(token):
                reason = "stop"
                break
            if request.logprobs >= 0:
                reader = self._logprobs
                scores.append(reader.entry(reader.log_softmax(self.ctx, position), token, request.logprobs))
            request.produced += 1
            texts.append(request.decoder.decode(self._token_bytes(token, request.special)))
            if request.drafter is not None:
                request.drafter.append(token)
            if request.produced >= request.budget:
                reason = "length"
                break
            if step < len(drafts) and token == drafts[step]:
                kept += 1
                continue
            pending = token
            break
        if drafts and not request.solo:
            self._trim(slot, len(drafts) - kept)
        if drafts:
            # Every logit a draft needs costs nearly a token's work on a CPU (the output layer of a large
            # vocabulary dominates small models), so draft further only while drafts are being kept.
            if kept == len(drafts):
                request.draft_len = min(request.draft_max, request.draft_len + 2)
            else:
                request.draft_len = max(1, request.draft_len - 1)
        tokens = len(texts)
        if tokens or request.prompt_scores:
            chunk = Chunk(
                "".join(texts),
                tokens=tokens,
                prompt=request.usage,
                logprobs=tuple(scores),
                prompt_logprobs=tuple(request.prompt_scores),
                drafted=len(drafts),
                accepted=kept,
                pieces=tuple(texts),
            )
            request.prompt_scores = []
            request.held = _merged(request.held, [chunk]) if request.held is not None else chunk
            if reason is None and time.perf_counter() - request.sent_at >= request.flush_s:
                self._hand_out(request)
        if reason is not None:
            self._finish(slot, reason)
            return
        request.pending = pending

    def _close_call(self, index: int, margin: float) -> bool:
        """True when another token's logit at batch ``index`` is within ``margin`` of the best one."""
        import numpy as np

        logits = np.ctypeslib.as_array(
            self._lib.llama_get_logits_ith(self.ctx, index), shape=(self._n_vocab,)
        )
        return int(np.count_nonzero(logits >= logits.max() - margin)) > 1

    def _trim(self, slot: Slot, rejected: int) -> None:
        """Take the ``rejected`` drafts at the end of ``slot``'s sequence out of its cache."""
        if rejected <= 0:
            return
        del slot.cells[-rejected:]
        slot.n_pos -= rejected
        if not self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, slot.n_pos, -1):
            # Never expected (drafting is off where a partial removal is impossible): start the slot over.
            self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cells.clear()
            slot.n_pos = 0

    def _end(self, token: int) -> bool:
        found = self._ends.get(token)
        if found is None:
            found = self._ends[token] = self._is_end(token)
        return found

    def _token_bytes(self, token: int, special: bool) -> bytes:
        key = (token, special)
        found = self._pieces.get(key)
        if found is None:
            found = self._pieces[key] = self._piece(token, special)
        return found

    @staticmethod
    def _hand_out(request: SlotRequest) -> None:
        """Give the reader the tokens held back for ``request`` (see ``SlotRequest.flush_s``)."""
        if request.held is not None:
            request.out.put(request.held)
            request.held = None
            request.sent_at = time.perf_counter()

    def _finish(self, slot: Slot, reason: FinishReason) -> None:
        request = slot.request
        assert request is not None
        slot.request = None
        request.sampler.free()
        self._hand_out(request)
        if not request.abandoned:
            tail = request.decoder.decode(b"", final=True) if request.decoder is not None else ""
            request.out.put(Chunk(tail, finish_reason=reason, prompt=request.usage))
        request.out.put(_END)
        request.done.set()

    def _fail(self, slot: Slot, error: BaseException) -> None:
        request = slot.request
        assert request is not None
        slot.request = None
        self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.cells.clear()
        slot.n_pos = 0
        request.sampler.free()
        request.out.put(error)
        request.out.put(_END)
        request.done.set()


def _shared(cached: list[Cell], cells: list[Cell]) -> int:
    n = 0
    for a, b in zip(cached, cells, strict=False):
        if a != b:
            break
        n += 1
    return n


def _positions(cell: Cell) -> int:
    return 1 if isinstance(cell, int) else cell[1]


def _tokens(cell: Cell) -> int:
    return 1 if isinstance(cell, int) else cell[2]


def _merged(first: Chunk, rest: list[Chunk]) -> Chunk:
    """One chunk holding ``first`` and ``rest`` in order (the last one's finish reason and prompt count)."""
    chunks = [first, *rest]
    text = "".join(chunk.text for chunk in chunks)
    pieces: list[str] = []
    for chunk in chunks:
        if chunk.tokens == 0 and chunk.text and pieces:
            pieces[-1] += chunk.text  # the decoder's last bytes belong to the last token
        else:
            pieces += chunk.pieces
    return Chunk(
        text,
        pieces=tuple(pieces) if "".join(pieces) == text else (),
        tokens=sum(chunk.tokens for chunk in chunks),
        finish_reason=chunks[-1].finish_reason,
        prompt=next((chunk.prompt for chunk in reversed(chunks) if chunk.prompt is not None), None),
        logprobs=tuple(entry for chunk in chunks for entry in chunk.logprobs),
        prompt_logprobs=tuple(entry for chunk in chunks for entry in chunk.prompt_logprobs),
        drafted=sum(chunk.drafted for chunk in chunks),
        accepted=sum(chunk.accepted for chunk in chunks),
    )
