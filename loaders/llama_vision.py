"""Images for the llama.cpp loader: a projector (``mmproj*.gguf``) opened with libmtmd beside the text model.

The prompt holds a random marker per load once per image; libmtmd splits it into text chunks and image
chunks (one bitmap per image, decoded from its PNG bytes and named by its SHA-256). The chunks are evaluated
here, one by one, after the longest prefix already in the KV cache: text tokens are compared token by token
and an image by its SHA-256, so a chat's earlier images are not encoded again on its next turn.

The KV cache bookkeeping is the slots' (loaders.llama_slots): a slot's cells are its text tokens and its whole
images, named by SHA-256.
"""

from __future__ import annotations

import ctypes
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.loader import LoaderError
from webui.core.media import Image
from webui.core.models.capabilities import is_projector_name, projector_beside

_COUNT_CACHE = 256  # images whose token count is remembered (the context meter asks on every redraw)

NO_PROJECTOR = (
    "it has no projector. Put an mmproj*.gguf beside it or choose one in the Model tab (the mmproj setting)."
)


def find_projector(model: Path, setting: str) -> Path | None:
    """The projector for the GGUF ``model``: the ``mmproj`` setting (a file beside the model, or a path), else
    an ``mmproj*.gguf`` beside it that encodes images, as the model list shows it (the one whose name holds
    the model's name wins; one named for no model counts when the model is the only one in its folder).
    LoaderError for a setting that names no file."""
    if setting.strip():
        chosen = Path(setting.strip()).expanduser()
        chosen = chosen if chosen.is_absolute() else model.parent / chosen
        if not chosen.is_file():
            raise LoaderError(
                f"The projector {setting!r} (mmproj setting) was not found beside {model.name}."
            )
        return chosen
    try:
        models = [
            p
            for p in model.parent.iterdir()
            if p.is_file() and p.suffix.lower() == ".gguf" and not is_projector_name(p.name)
        ]
    except OSError:
        return None
    return projector_beside(model, own_folder=len(models) <= 1)


@dataclass
class Piece:
    """One run of the prompt: text tokens, or one image chunk (its positions and the image's SHA-256)."""

    tokens: list[int] = field(default_factory=list)
    image: Any = None  # the mtmd chunk of an image (owned by the plan's chunk list)
    sha256: str = ""
    n_tokens: int = 0  # context cells (tokens) it takes
    image_positions: int = 0  # an image's positions: fewer than its tokens with M-RoPE (Qwen-VL)

    @property
    def is_image(self) -> bool:
        return self.image is not None

    @property
    def n_pos(self) -> int:
        """Positions it advances the sequence by."""
        return self.image_positions if self.is_image else self.n_tokens


class PromptPlan:
    """A prompt tokenized by libmtmd: its pieces in order (freed with ``free``)."""

    def __init__(self, mtmd: Any, chunks: Any, pieces: list[Piece]) -> None:
        self._mtmd = mtmd
        self._chunks = chunks
        self.pieces = pieces

    @property
    def n_tokens(self) -> int:
        return sum(piece.n_tokens for piece in self.pieces)

    @property
    def n_pos(self) -> int:
        return sum(piece.n_pos for piece in self.pieces)

    @property
    def image_tokens(self) -> int:
        return sum(piece.n_tokens for piece in self.pieces if piece.is_image)

    def text_tokens(self) -> list[int]:
        """The text tokens in order (what the penalty samplers see of the prompt)."""
        return [token for piece in self.pieces for token in piece.tokens]

    def free(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            self._mtmd.mtmd_input_chunks_free(chunks)


class Projector:
    """A libmtmd context for one loaded model. Tokenizing and image evaluation hold its lock (the slots
    tokenize in the readers' threads while the scheduler thread evaluates)."""

    def __init__(self, path: Path, llm: Any, n_threads: int, use_gpu: bool) -> None:
        from llama_cpp import mtmd_cpp
        from llama_cpp._logger import llama_log_callback

        self._mtmd: Any = mtmd_cpp
        # libmtmd logs through llama-cpp-python's logger, which the model was opened quiet with.
        mtmd_cpp.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
        self.path = path
        # Random per load: text a user types can never open an image slot.
        self.marker = f"<__palabre_media_{secrets.token_hex(8)}__>"
        self._marker_bytes = self.marker.encode("ascii")  # the C side keeps a pointer: keep the bytes alive
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        params.media_marker = self._marker_bytes
        ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode("utf-8"), llm.model, params)
        if not ctx:
            raise LoaderError(
                f"llama.cpp could not open the projector {path.name}: it may belong to another model."
            )
        if not mtmd_cpp.mtmd_support_vision(ctx):
            mtmd_cpp.mtmd_free(ctx)
            raise LoaderError(f"The projector {path.name} does not encode images (an audio projector?).")
        self._ctx: Any = ctx
        self._counts: dict[str, int] = {}
        self.encodes = 0  # images encoded so far (an image reused from the cache is not encoded again)
        self._lock = threading.RLock()

    def free(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._mtmd.mtmd_free(ctx)

    # -- tokenizing ---------------------------------------------------------------------------------------

    def tokenize(self, prompt: str, images: Sequence[Image], *, bos: int | None) -> PromptPlan:
        """Split ``prompt`` at its markers into text and image pieces; ``bos`` is put first unless the prompt
        already starts with it. LoaderError when the markers and the images do not pair up."""
        with self._lock:
            return self._tokenize(prompt, images, bos=bos)

    def _tokenize(self, prompt: str, images: Sequence[Image], *, bos: int | None) -> PromptPlan:
        mtmd = self._mtmd
        count = prompt.count(self.marker)
        if count != len(images):
            raise LoaderError(f"The prompt holds {count} image places for {len(images)} images.")
        bitmaps: list[Any] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for image in images:
                buffer = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(image.data), False)
                if not bitmap:
                    raise LoaderError(f"llama.cpp could not decode an image ({image.width}x{image.height}).")
                mtmd.mtmd_bitmap_set_id(bitmap, image.sha256.encode("ascii"))
                bitmaps.append(bitmap)
            text = prompt.encode("utf-8")
            given = mtmd.mtmd_input_text()
            given.text = text
            given.text_len = len(text)
            given.add_special = False
            given.parse_special = True
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(given), array, len(bitmaps))
            if status != 0:
                raise LoaderError(
                    "llama.cpp could not prepare the images for the model"
                    + (" (image places and images do not pair up)." if status == 1 else ".")
                )
            pieces = self._pieces(chunks)
        except BaseException:
            mtmd.mtmd_input_chunks_free(chunks)
            raise
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        if bos is not None and bos >= 0:
            first = pieces[0] if pieces else None
            if first is None or first.is_image:
                pieces.insert(0, Piece(tokens=[bos], n_tokens=1))
            elif not first.tokens or first.tokens[0] != bos:
                first.tokens.insert(0, bos)
                first.n_tokens += 1
        return PromptPlan(mtmd, chunks, pieces)

    def _pieces(self, chunks: Any) -> list[Piece]:
        mtmd = self._mtmd
        pieces: list[Piece] = []
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                size = ctypes.c_size_t()
                tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(size))
                ids = [int(tokens[i]) for i in range(size.value)]
                if pieces and not pieces[-1].is_image:
                    pieces[-1].tokens.extend(ids)
                    pieces[-1].n_tokens += len(ids)
                elif ids:
                    pieces.append(Piece(tokens=ids, n_tokens=len(ids)))
            elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                name = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode("ascii", "replace")
                n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
                n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
                pieces.append(Piece(image=chunk, sha256=name, n_tokens=n_tokens, image_positions=n_pos))
            else:
                raise LoaderError("This projector gave audio where an image was expected.")
        return pieces

    def image_tokens(self, image: Image) -> int:
        """The context positions ``image`` takes, with the text libmtmd writes around it."""
        found = self._counts.get(image.sha256)
        if found is None:
            plan = self.tokenize(self.marker, [image], bos=None)
            try:
                found = plan.n_tokens
            finally:
                plan.free()
            if len(self._counts) >= _COUNT_CACHE:
                self._counts.clear()
            self._counts[image.sha256] = found
        return found

    def eval_image(
        self,
        lctx: Any,
        piece: Piece,
        position: int,
        seq_id: int,
        n_batch: int,
        logits_last: bool,
    ) -> int:
        """Encode ``piece``'s image and decode it into sequence ``seq_id`` of ``lctx`` at ``position``; return
        the next position. LoaderError when it fails."""
        import llama_cpp

        mtmd = self._mtmd
        past = llama_cpp.llama_pos(0)
        with self._lock:
            status = mtmd.mtmd_helper_eval_chunk_single(
                self._ctx, lctx, piece.image, position, seq_id, n_batch, logits_last, ctypes.byref(past)
            )
        if status != 0:
            hint = ""
            if mtmd.mtmd_decode_use_non_causal(self._ctx, piece.image) and n_batch < piece.n_tokens:
                hint = f": this model reads an image at once, so n_batch must be at least {piece.n_tokens}"
            raise LoaderError(f"llama.cpp could not evaluate an image (error {status}){hint}.")
        self.encodes += 1
        return position + piece.n_pos
