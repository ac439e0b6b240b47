"""llama.cpp loader (llama-cpp-python, in-process) with the full sampler chain built from GenerationParams.

``llama_cpp`` is imported only inside ``load`` so that listing loaders or drawing the page never pays for it.
The generation loop evaluates only the part of the prompt that differs from what the context already holds,
so turn N of a chat does not re-read the whole history.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import random
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from webui.core.hardware.fit import AUTOMATIC, PROMPT_LOOKUP, automatic_slots, draft_model_location
from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    Loader,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
)
from webui.core.media import VISION_FACT
from webui.core.models.discovery import ModelEntry, loader_for_path
from webui.core.params import PARAM_NAMES, GenerationParams

if TYPE_CHECKING:
    import llama_cpp

    from loaders.llama_slots import SlotScheduler
    from loaders.llama_vision import Projector
    from webui.core.media import Image

AUTO_CONTEXT_CAP = 8192  # "auto" context: the model's own length, capped to keep the KV cache modest
_IDLE_CONTEXT = 256  # the Llama object's own context: the slots have theirs (it only tokenizes)


def automatic_threads() -> int:
    """Generation threads: leave one core free on small machines.

    Measured on a 2-core machine with another process busy: 2 threads collapse to 3-13 tok/s while 1 thread
    holds ~34 tok/s, because llama.cpp's threads spin-wait on each other.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores <= 2:
        return 1
    if cores <= 8:
        return cores - 1
    return cores // 2


def automatic_batch_threads() -> int:
    """Prompt-processing threads: every core (prompt evaluation is one large batch, not a spin-wait chain)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


KvCacheType = Literal["f16", "q8_0", "q4_0"]
# ggml type ids of the KV cache types (llama.h's ggml_type).
GGML_KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}


class LlamaCppSettings(BaseModel):
    """llama.cpp load settings; 0 / -1 mean "automatic" where stated."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(
        0, ge=0, le=1048576, description="Context length in tokens. 0 = the model's own (at most 8192)."
    )
    n_gpu_layers: int = Field(
        -1,
        ge=-1,
        le=1000,
        description="Layers to put on the GPU. -1 = all (when llama.cpp was built with GPU support).",
    )
    n_threads: int = Field(
        0, ge=0, le=512, description="Generation threads. 0 = automatic (leaves a core free)."
    )
    n_threads_batch: int = Field(0, ge=0, le=512, description="Prompt-processing threads. 0 = every core.")
    n_batch: int = Field(512, ge=1, le=65536, description="Prompt tokens evaluated per batch.")
    use_mmap: bool = Field(True, description="Memory-map the file instead of reading it into RAM.")
    use_mlock: bool = Field(False, description="Lock the model in RAM so it is never swapped out.")
    flash_attn: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Flash attention: auto (llama.cpp uses it where the device supports it, as llama-server "
        "does), on or off. A quantized value cache needs it, so it is then on.",
    )
    rope_freq_base: float = Field(0.0, ge=0.0, description="RoPE frequency base. 0 = the model's own.")
    tensor_split: str = Field(
        "", description="Share of the model per GPU, comma separated (e.g. 60,40). Empty = auto."
    )
    parallel: int = Field(
        AUTOMATIC,
        ge=0,
        le=64,
        description="Generations decoded together (slots), each with the full context (n_ctx per slot, so the "
        "KV cache grows with it). 1 = one at a time. 0 = automatic: 4 when the caches of 4 slots fit this "
        "machine's memory (the fit check's 'fits'), else 1.",
    )
    cache_type_k: KvCacheType = Field(
        "f16",
        description="KV cache type for keys: f16, q8_0 (about half the memory) or q4_0 (about a quarter).",
    )
    cache_type_v: KvCacheType = Field(
        "f16",
        description="KV cache type for values: f16, q8_0 or q4_0. A quantized value cache needs flash attention, "
        "which is then switched on.",
    )
    stream_interval: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Seconds: tokens sampled within this time of the last streamed piece go out with the next "
        "one (fewer, larger pieces cost a small machine less: one stream on two cores ~0.93x -> ~1.0x "
        "llama-server). 0 = none wait (pieces that already wait for a busy reader still go together).",
    )
    draft_model: str = Field(
        "",
        description="Speculative decoding: 'prompt-lookup' drafts from words the prompt or reply already holds "
        "(fast edits of code and text), or a small GGUF with the same vocabulary (a file beside the model, or "
        "a path) drafts for this one. Empty = off. Greedy output stays the same, only faster.",
    )
    draft_max: int = Field(8, ge=1, le=64, description="Speculative decoding: most tokens drafted per step.")
    mmproj: str = Field(
        "",
        description="Vision projector (mmproj*.gguf) that lets the model see images: a file beside the model "
        "or a path. Empty = the one beside the model, if any.",
    )

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        """Earlier settings said true / false."""
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return "on" if value.strip().lower() == "true" else "off"
        return value

    def flash_attention(self) -> int:
        """llama.cpp's flash_attn_type for the slots' context: -1 auto, 0 off, 1 on (always for a quantized
        value cache, which llama.cpp refuses without it)."""
        if self.cache_type_v != "f16" or self.flash_attn == "on":
            return 1
        return -1 if self.flash_attn == "auto" else 0

    @field_validator("tensor_split")
    @classmethod
    def _shares(cls, value: str) -> str:
        """Checked with the other settings, before any model is unloaded to make room for this one."""
        try:
            shares = [float(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"{value!r} is not a list of numbers such as 60,40") from None
        if any(not 0 <= share < float("inf") for share in shares):
            raise ValueError("each share must be a number of at least 0")
        return value


# Fields the engine handles itself for every loader (stop strings, length, truncation).
ENGINE_FIELDS = frozenset({"max_new_tokens", "stop", "truncation_length"})


class LlamaCppLoader(Loader[LlamaCppSettings]):
    """GGUF files through llama-cpp-python."""

    name: ClassVar[str] = "llama.cpp"
    capabilities: ClassVar[LoaderCapabilities] = LoaderCapabilities(
        honoured_params=frozenset(PARAM_NAMES), streams_logprobs=True, can_tokenize=True, parallel=False
    )
    settings_model = LlamaCppSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.MADE_FOR if entry.kind == "gguf" else Claim.NONE

    def load(self, path: Path, settings: LlamaCppSettings) -> LlamaCppModel:
        """Load ``path`` (a .gguf file, part 1 of a split file) with ``settings``; LoaderError on failure."""
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LoaderError(
                "The llama.cpp loader needs llama-cpp-python: pip install 'palabre[llama-cpp]'."
            ) from exc
        if path.is_dir():
            better = loader_for_path(path)
            raise LoaderError(
                f"The llama.cpp loader loads .gguf files, but {path.name} is a model folder"
                + (f": pick the {better} loader." if better else ".")
            )
        if not path.is_file():
            raise LoaderError(f"{path} does not exist.")
        from webui.core.models.discovery import ModelFileError, gguf_metadata

        try:
            metadata = gguf_metadata(path)
        except ModelFileError as exc:
            raise LoaderError(f"Cannot load {path.name}: {exc}") from exc
        from loaders.llama_vision import find_projector

        projector_path = find_projector(path, settings.mmproj)  # a wrong mmproj setting fails before the load
        n_ctx = settings.n_ctx or min(metadata.context_length or 4096, AUTO_CONTEXT_CAP)
        # The Llama object only holds the weights and the tokenizer: the slots get their own context.
        own_ctx = min(n_ctx, _IDLE_CONTEXT)
        draft_path = _draft_model_path(path, settings.draft_model)  # a wrong name fails before the load
        if settings.parallel == AUTOMATIC:
            settings = settings.model_copy(
                update={"parallel": _automatic_parallel(path, settings, draft_path)}
            )
        tensor_split = [float(x) for x in settings.tensor_split.split(",") if x.strip()] or None
        try:
            with _inert_metadata_templates(llama_cpp):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=own_ctx,
                    n_gpu_layers=settings.n_gpu_layers,
                    n_threads=settings.n_threads or automatic_threads(),
                    n_threads_batch=settings.n_threads_batch or automatic_batch_threads(),
                    n_batch=settings.n_batch,
                    n_ubatch=settings.n_batch,
                    use_mmap=settings.use_mmap,
                    use_mlock=settings.use_mlock,
                    # The slots' context gets the setting (auto included); this one only tokenizes, but
                    # llama.cpp refuses a quantized V cache without flash attention here too.
                    flash_attn=settings.flash_attention() == 1,
                    type_k=GGML_KV_TYPES[settings.cache_type_k],
                    type_v=GGML_KV_TYPES[settings.cache_type_v],
                    rope_freq_base=settings.rope_freq_base,
                    tensor_split=tensor_split,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LoaderError(f"llama.cpp could not load {path.name}: {exc}") from exc
        try:
            projector = _open_projector(projector_path, llm, settings) if projector_path else None
        except BaseException:
            llm.close()
            raise
        try:
            return LlamaCppModel(llm, path, metadata.chat_template, settings, projector, n_ctx, draft_path)
        except BaseException:
            if projector is not None:
                projector.free()
            llm.close()
            raise


def _automatic_parallel(path: Path, settings: LlamaCppSettings, draft_path: Path | None) -> int:
    """The slots an automatic ``parallel`` gets on this machine: the fit check's own answer
    (webui.core.hardware.fit.automatic_slots); 1 when the file's shape cannot be read."""
    from webui.core.hardware.machine import MachineProbe
    from webui.core.models.discovery import ModelFileError
    from webui.core.models.facts import gguf_facts

    try:
        facts = gguf_facts(path)
        draft = gguf_facts(draft_path) if draft_path is not None else None
    except (ModelFileError, OSError, ValueError):
        return 1
    machine = MachineProbe().facts(measure_speed=False)
    return automatic_slots(facts, settings.model_dump(), machine, draft)


def _draft_model_path(model: Path, setting: str) -> Path | None:
    """The draft model the ``draft_model`` setting names (a path, or a file beside the model); None for none or
    prompt lookup. LoaderError when no such file exists."""
    chosen = draft_model_location(model, setting)
    if chosen is None:
        return None
    if not chosen.is_file():
        name = setting.strip()
        raise LoaderError(
            f"The draft model {name!r} (draft_model setting) was not found beside {model.name}: give a GGUF "
            f"file of a smaller model with the same vocabulary, or {PROMPT_LOOKUP!r}."
        )
    return chosen


def _open_projector(path: Path, llm: Any, settings: LlamaCppSettings) -> Projector:
    """The projector at ``path`` opened through libmtmd for ``llm``; LoaderError when it fails."""
    from loaders.llama_vision import Projector

    return Projector(
        path,
        llm._model,
        n_threads=settings.n_threads_batch or automatic_batch_threads(),
        use_gpu=settings.n_gpu_layers != 0,
    )


class _InertChatFormatter:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter while a model opens (see _inert_metadata_templates)."""

    def __init__(self, **_: Any) -> None:
        pass

    def to_chat_handler(self) -> Any:
        def refuse(**_: Any) -> Any:
            raise RuntimeError("Palabre renders chat templates itself, in its own sandbox.")

        return refuse


# Guards the short swap below; loads are rare and short, so one lock for the process is enough.
_FORMATTER_SWAP = threading.Lock()


@contextlib.contextmanager
def _inert_metadata_templates(llama_cpp: Any) -> Iterator[None]:
    """While a GGUF opens, keep llama-cpp-python from compiling the chat templates in its metadata.

    ``Llama()`` compiles every ``tokenizer.chat_template*`` of the file with Jinja, whose compiler folds constant
    expressions: a template holding ``{{ 9 ** (9 ** 9) }}`` or ``{{ 'a' * 10**10 }}`` hangs or exhausts memory
    right there, and one that does not parse makes the file unloadable. Palabre never uses those handlers: it
    renders the template itself in its guarded sandbox (webui.core.templates.store).
    """
    module = llama_cpp.llama_chat_format
    with _FORMATTER_SWAP:
        original = module.Jinja2ChatFormatter
        module.Jinja2ChatFormatter = _InertChatFormatter
        try:
            yield
        finally:
            module.Jinja2ChatFormatter = original


class LlamaCppModel:
    """A GGUF model in memory; generation runs a hand-built llama.cpp sampler chain."""

    def __init__(
        self,
        llm: llama_cpp.Llama,
        path: Path,
        chat_template: str | None,
        settings: LlamaCppSettings,
        projector: Projector | None = None,
        n_ctx: int = 0,
        draft_path: Path | None = None,
    ):
        from loaders.llama_vision import NO_PROJECTOR

        self._llm: Any = llm
        self._settings = settings
        self._projector = projector
        # The SeeingModel marker: random per load, empty without a projector (the model then takes no images).
        self.media_marker = projector.marker if projector is not None else ""
        self.capabilities = LlamaCppLoader.capabilities
        vocab = llm._model.vocab
        self._vocab = vocab
        self._eog_tokens: tuple[int, ...] | None = None
        self._slots: SlotScheduler | None = self._open_slots(settings, n_ctx or llm.n_ctx(), draft_path)
        if settings.parallel > 1:
            self.capabilities = dataclasses.replace(LlamaCppLoader.capabilities, parallel=True)
        self.parallel = settings.parallel
        self._draft_max = settings.draft_max if settings.draft_model.strip() else 0
        bos, eos = llm.token_bos(), llm.token_eos()
        self.facts = ModelFacts(
            name=path.name,
            path=path,
            loader=LlamaCppLoader.name,
            context_length=self._n_ctx(),
            chat_template=chat_template,
            tool_chat_template=_text(llm.metadata.get("tokenizer.chat_template.tool_use")),
            bos_token=self._piece(bos) if bos >= 0 else "",
            eos_token=self._piece(eos) if eos >= 0 else "",
            extra={
                "n_threads": str(llm.n_threads),
                "n_threads_batch": str(llm.n_threads_batch),
                "n_gpu_layers": str(settings.n_gpu_layers),
                "parallel": str(settings.parallel),
                VISION_FACT: f"projector {projector.path.name}" if projector is not None else NO_PROJECTOR,
            },
        )

    def _open_slots(self, settings: LlamaCppSettings, n_ctx: int, draft_path: Path | None) -> SlotScheduler:
        import llama_cpp

        from loaders.llama_drafting import PROBE_TEXT
        from loaders.llama_logprobs import LogprobReader
        from loaders.llama_slots import SlotScheduler

        vocab = self._vocab
        llm = self._llm

        def is_end(token: int) -> bool:
            return bool(llama_cpp.llama_vocab_is_eog(vocab, token))

        def piece(token: int, special: bool) -> bytes:
            return bytes(llm.detokenize([token], special=special))

        reader = LogprobReader(llama_cpp, llama_cpp.llama_vocab_n_tokens(vocab), lambda t: piece(t, True))
        # Rejected drafts are cut from a sequence's end, which recurrent and hybrid models cannot do.
        model = llm.model
        can_trim = not (llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model))
        draft = None
        drafting = bool(settings.draft_model.strip())
        if draft_path is not None:
            from loaders.llama_drafting import DraftModel

            threads = settings.n_threads or automatic_threads()
            draft = DraftModel(
                llama_cpp, draft_path, vocab, slots=settings.parallel, n_ctx=n_ctx, threads=threads
            )
        return SlotScheduler(
            llama_cpp,
            llm,
            settings.parallel,
            n_ctx,
            settings.n_batch,
            is_end,
            piece,
            reader,
            can_trim=can_trim,
            draft_model=draft,
            flash_attn_type=settings.flash_attention(),
            probe_tokens=llm.tokenize(PROBE_TEXT.encode(), add_bos=True, special=False) if drafting else None,
            draft_max=settings.draft_max if drafting else 0,
        )

    def _n_ctx(self) -> int:
        """Context tokens one generation may use (per slot with parallel slots)."""
        return self._require_slots().n_ctx

    def _end_tokens(self, lib: Any) -> tuple[int, ...]:
        """Every end-of-generation token id (scanned once per model: ~50k ctypes calls cost ~50 ms)."""
        if self._eog_tokens is None:
            n_vocab = lib.llama_vocab_n_tokens(self._vocab)
            self._eog_tokens = tuple(t for t in range(n_vocab) if lib.llama_vocab_is_eog(self._vocab, t))
        return self._eog_tokens

    def _piece(self, token: int) -> str:
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def detokenize(self, tokens: list[int]) -> str:
        n_vocab = self._llm.n_vocab()
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:  # llama.cpp aborts the whole process on an out-of-range id
            raise LoaderError(f"Token ids must be between 0 and {n_vocab - 1}; got {bad[:5]}.")
        return bytes(self._llm.detokenize(tokens, special=True)).decode("utf-8", errors="replace")

    def unload(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.close()
        projector, self._projector = self._projector, None
        if projector is not None:
            projector.free()
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    # -- generation ---------------------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._llm is None:
            raise LoaderError("The model was unloaded.")
        return self._llm

    def _require_slots(self) -> SlotScheduler:
        if self._slots is None:
            raise LoaderError("The model was unloaded.")
        return self._slots

    def _check_fits(self, n_prompt: int) -> None:
        n_ctx = self._n_ctx()
        if n_prompt >= n_ctx:
            raise LoaderError(
                f"The prompt is {n_prompt} tokens long, but the context holds only {n_ctx}. "
                "Shorten it or load the model with a larger context (n_ctx)."
            )

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        llm = self._require()
        tokens = self.tokenize(prompt, add_bos=params.add_bos_token)
        bos = llm.token_bos()
        if len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            tokens = tokens[1:]  # the template already wrote the BOS token: never send two
        if not tokens:
            raise LoaderError("The prompt is empty.")
        self._check_fits(len(tokens))
        yield from self._in_slot(params, cancel, list(tokens), tokens, len(tokens))

    def stream_images(
        self, prompt: str, images: Sequence[Image], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        """Generate from ``prompt`` with ``images`` in place of its markers (see loaders.llama_vision)."""
        llm = self._require()
        projector = self._projector
        if projector is None:
            from webui.core.media import cannot_see

            raise cannot_see(self.facts.name, self.facts.extra)
        if params.prompt_logprobs:
            raise LoaderError("Prompt log-probabilities are not available for prompts with images.")
        bos = llm.token_bos() if params.add_bos_token else None
        plan = projector.tokenize(prompt, images, bos=bos)
        try:
            if not plan.pieces:
                raise LoaderError("The prompt is empty.")
            self._check_fits(plan.n_tokens)
            units: list[int | Any] = []
            for piece in plan.pieces:
                units.extend(piece.tokens if not piece.is_image else [piece])
            yield from self._in_slot(params, cancel, units, plan.text_tokens(), plan.n_tokens, projector)
        finally:
            plan.free()

    def image_tokens(self, image: Image) -> int:
        """How many context positions ``image`` takes (0 without a projector: the model takes no images)."""
        if self._projector is None:
            return 0
        return self._projector.image_tokens(image)

    @property
    def images_encoded(self) -> int:
        """Images the projector has encoded since the load (one reused from the KV cache is not counted)."""
        return self._projector.encodes if self._projector is not None else 0

    def _in_slot(
        self,
        params: GenerationParams,
        cancel: CancelToken,
        units: list[Any],
        history: list[int],
        n_tokens: int,
        projector: Projector | None = None,
    ) -> Iterator[Chunk]:
        """Generate in a parallel slot (see loaders.llama_slots); the same sampler chain as ``_decode``."""
        import llama_cpp

        from loaders.llama_slots import SlotRequest

        slots = self._require_slots()
        eog = self._end_tokens(llama_cpp) if params.ban_eos_token else ()
        sampler = _SamplerChain(llama_cpp, slots.ctx, self._vocab, params, history, eog)
        request = SlotRequest(
            units=units,
            n_tokens=n_tokens,
            sampler=sampler,
            max_new_tokens=params.max_new_tokens,
            special=not params.skip_special_tokens,
            cancel=cancel,
            projector=projector,
            logprobs=params.logprobs,
            prompt_logprobs=params.prompt_logprobs,
            draft_max=self._draft_max if projector is None else 0,  # drafting images: not yet
            greedy=params.temperature <= 0,
            # A thinking budget is checked chunk by chunk downstream: keep its chunks one token each.
            flush_s=self._settings.stream_interval if params.thinking_budget < 0 else -1.0,
        )
        yield from slots.run(request)


class _SamplerChain:
    """A llama.cpp sampler chain for one generation (freed when it ends)."""

    def __init__(
        self,
        lib: Any,
        ctx: Any,
        vocab: Any,
        params: GenerationParams,
        prompt: list[int],
        eog_tokens: tuple[int, ...],
    ) -> None:
        self._lib = lib
        self._ctx = ctx
        chain_params = lib.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain = lib.llama_sampler_chain_init(chain_params)
        n_vocab = lib.llama_vocab_n_tokens(vocab)
        seed = params.seed if params.seed >= 0 else random.randrange(2**31)
        self._keep: list[Any] = []  # ctypes buffers the C side points into must outlive the chain

        bias = dict(params.logit_bias)
        if params.ban_eos_token:
            for token in eog_tokens:
                bias[token] = float("-inf")
        bias = {t: b for t, b in bias.items() if 0 <= t < n_vocab}
        if bias:
            array = (lib.llama_logit_bias * len(bias))()
            for slot, (token, value) in enumerate(bias.items()):
                array[slot].token = token
                array[slot].bias = value
            self._keep.append(array)
            self._add(lib.llama_sampler_init_logit_bias(n_vocab, len(bias), array))

        history = params.repetition_penalty_range if params.repetition_penalty_range >= 0 else len(prompt) + 1
        recent = prompt[-history:] if history else []
        penalties_on = params.repetition_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
        if penalties_on and history:
            penalties = lib.llama_sampler_init_penalties(
                n_vocab, history, params.repetition_penalty, params.frequency_penalty, params.presence_penalty
            )
            self._prime(penalties, recent)
            self._add(penalties)
        if params.dry_multiplier > 0:
            breakers = [b.encode("utf-8") for b in params.dry_sequence_breakers]
            breaker_array = (ctypes.c_char_p * max(1, len(breakers)))(*breakers)
            self._keep.append(breaker_array)
            dry = lib.llama_sampler_init_dry(
                vocab,
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                history if history else -1,
                breaker_array,
                len(breakers),
            )
            self._prime(dry, recent)
            self._add(dry)
        if params.grammar.strip():
            grammar = self._grammar(lib, vocab, params)
            if not grammar:
                self.free()
                raise LoaderError("The grammar is not valid GBNF (llama.cpp could not parse it).")
            self._add(grammar)

        if params.temperature <= 0:
            self._add(lib.llama_sampler_init_greedy())
            return
        if params.mirostat_mode:
            self._add(lib.llama_sampler_init_temp(params.temperature))
            if params.mirostat_mode == 1:
                self._add(
                    lib.llama_sampler_init_mirostat(
                        n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100
                    )
                )
            else:
                self._add(lib.llama_sampler_init_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta))
            return
        if params.top_n_sigma > 0:
            self._add(lib.llama_sampler_init_top_n_sigma(params.top_n_sigma))
        if params.top_k > 0:
            self._add(lib.llama_sampler_init_top_k(params.top_k))
        if params.typical_p < 1.0:
            self._add(lib.llama_sampler_init_typical(params.typical_p, 1))
        if params.top_p < 1.0:
            self._add(lib.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0:
            self._add(lib.llama_sampler_init_min_p(params.min_p, 1))
        if params.xtc_probability > 0:
            self._add(lib.llama_sampler_init_xtc(params.xtc_probability, params.xtc_threshold, 1, seed))
        if params.dynatemp_range > 0:
            self._add(
                lib.llama_sampler_init_temp_ext(
                    params.temperature, params.dynatemp_range, params.dynatemp_exponent
                )
            )
        else:
            self._add(lib.llama_sampler_init_temp(params.temperature))
        self._add(lib.llama_sampler_init_dist(seed))

    def _grammar(self, lib: Any, vocab: Any, params: GenerationParams) -> Any:
        """The grammar sampler: lazy when trigger patterns are given (it engages where one first matches)."""
        text = params.grammar.encode("utf-8")
        if not params.grammar_triggers:
            return lib.llama_sampler_init_grammar(vocab, text, b"root")
        patterns = [pattern.encode("utf-8") for pattern in params.grammar_triggers]
        array = (ctypes.c_char_p * len(patterns))(*patterns)
        no_tokens = (lib.llama_token * 1)()
        self._keep.extend((array, no_tokens))
        return lib.llama_sampler_init_grammar_lazy_patterns(
            vocab, text, b"root", array, len(patterns), no_tokens, 0
        )

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._chain, sampler)

    def _prime(self, sampler: Any, tokens: list[int]) -> None:
        """Let a penalty sampler see the recent prompt tokens, as text-generation-webui's penalties do."""
        for token in tokens:
            self._lib.llama_sampler_accept(sampler, token)

    def sample(self, index: int = -1) -> int:
        """Sample from the logits at ``index`` of the last decoded batch (-1: its last output)."""
        return int(self._lib.llama_sampler_sample(self._chain, self._ctx, index))

    def free(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None


def _text(value: object) -> str | None:
    """A metadata value that is a non-empty string, else None."""
    return value if isinstance(value, str) and value.strip() else None
