"""Transformers loader: Hugging Face model folders (and GGUF files through transformers) on CPU or CUDA.

``torch`` and ``transformers`` are imported only inside ``load`` and the model's methods, so listing loaders or
drawing the page never pays for them. Generation runs transformers' own ``generate()`` in a thread and streams
through its TextIteratorStreamer; the sampler chain is built by ``loaders.hf_sampling``. ``HfLoader`` is what every
transformers-based loader shares; the GPTQ and AWQ loaders (``loaders.quantized``) change only the checkpoint
check, the settings and the quantization arguments. The KV cache of
the last generation is kept (``loaders.hf_cache``), so the next prompt evaluates only what follows the prefix it
shares with the last prompt and reply - a chat's new turn, not its whole history.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import random
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from loaders.hf_cache import PrefixCache
from loaders.llama_cpp import automatic_threads
from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    FinishReason,
    Loader,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
    PromptUsage,
)
from webui.core.models.discovery import ModelEntry, config_quant_method, loader_for_path
from webui.core.params import PARAM_NAMES, GenerationParams

# Mirostat and GBNF grammars are not implemented for transformers (see loaders.hf_sampling).
HF_HONOURED_PARAMS = frozenset(
    PARAM_NAMES - {"mirostat_mode", "mirostat_tau", "mirostat_eta", "grammar", "grammar_triggers"}
)
FALLBACK_CONTEXT = 2048  # for configs that do not say how long their context is
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # torch.load-style weights: unpickling runs code


class HfSettings(BaseModel):
    """Settings every transformers-based loader shares."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to run. auto = the CUDA GPU(s) when there is one, else the CPU."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight precision. auto = float32 on CPU, the checkpoint's own on a GPU."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel. auto = transformers' choice."
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped in the model folder (only for folders you trust)."
    )
    max_context: int = Field(
        0, ge=0, le=1048576, description="Context length in tokens. 0 = the model's max_position_embeddings."
    )
    n_threads: int = Field(0, ge=0, le=512, description="CPU threads. 0 = automatic (leaves a core free).")
    allow_pickle: bool = Field(
        False,
        description="Load .bin/.pt/.pth/.ckpt (pickle) weights, which can run code: only for folders you trust.",
    )
    prompt_cache: bool = Field(
        True,
        description="Keep the last generation's KV cache, so the next prompt evaluates only what changed "
        "(a chat's new message, not its whole history). Costs the memory of one cache.",
    )


class TransformersSettings(HfSettings):
    """Transformers load settings."""

    load_in_8bit: bool = Field(
        False, description="Quantize to 8 bits while loading (bitsandbytes, CUDA only)."
    )
    load_in_4bit: bool = Field(
        False, description="Quantize to 4 bits while loading (bitsandbytes, CUDA only)."
    )
    gguf_file: str = Field(
        "", description="Load this GGUF file through transformers (a file in the folder, or a path)."
    )


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict ({} when absent); LoaderError when it cannot be read."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoaderError(f"{folder.name}/config.json cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


def quant_method(config: dict[str, Any]) -> str | None:
    """The quantization_config's quant_method, lower-cased, or None for an unquantized checkpoint."""
    return config_quant_method(config)


def quantized_checkpoint(method: str) -> str:
    """How a message names a checkpoint quantized with ``method``: "a GPTQ checkpoint", "an AWQ checkpoint"."""
    label = method.upper()
    return f"{'an' if label[:1] in set('AEFHILMNORSX') else 'a'} {label} checkpoint"


HfSettingsT = TypeVar("HfSettingsT", bound=HfSettings)


class HfLoader(Loader[HfSettingsT]):
    """What every transformers-based loader shares: finding, checking and loading the checkpoint.

    Subclasses name themselves, choose their settings, claim their files and may override the hooks below.
    """

    capabilities: ClassVar[LoaderCapabilities] = LoaderCapabilities(
        honoured_params=HF_HONOURED_PARAMS, streams_logprobs=True, can_tokenize=True, parallel=False
    )

    # -- hooks ---------------------------------------------------------------------------------------------

    def check_checkpoint(self, path: Path, config: dict[str, Any], gguf_file: str | None) -> None:
        """Refuse checkpoints another loader should take, naming that loader."""

    def quantization_kwargs(
        self, settings: HfSettingsT, config: dict[str, Any], device: str
    ) -> dict[str, Any]:
        """Extra from_pretrained arguments for quantization."""
        return {}

    def default_dtype(self, device: str) -> str:
        """The dtype "auto" means: float32 on CPU (fast and exact there), the checkpoint's own on a GPU."""
        return "auto" if device == "cuda" else "float32"

    def describe(self, settings: HfSettingsT) -> dict[str, str]:
        """Extra facts shown on the Model tab."""
        return {}

    # -- loading -----------------------------------------------------------------------------------------

    def load(self, path: Path, settings: HfSettingsT) -> HfModel:
        """Load the folder (or GGUF file) at ``path``; LoaderError with a readable reason on failure."""
        folder, gguf_file = self._locate(path, settings)
        config = read_config(folder) if gguf_file is None else {}
        self.check_checkpoint(path, config, gguf_file)
        if gguf_file is None:
            self._check_weights(path.name, folder, settings)
        try:
            import torch
            import transformers
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LoaderError(
                f"The {self.name} loader needs torch and transformers: pip install 'palabre[{self.name}]'."
            ) from exc
        self._check_remote_code(path.name, config, settings)
        device = self._device(settings, torch)
        threads = settings.n_threads or automatic_threads()
        if device == "cpu":
            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": settings.trust_remote_code}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        model_kwargs = dict(kwargs, **self.quantization_kwargs(settings, config, device))
        if gguf_file is None and not settings.allow_pickle:
            model_kwargs["use_safetensors"] = True  # never fall back to a pickle file transformers finds
        dtype = settings.dtype if settings.dtype != "auto" else self.default_dtype(device)
        model_kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
        if device == "cuda":
            model_kwargs["device_map"] = "auto"
        if settings.attn_implementation != "auto":
            model_kwargs["attn_implementation"] = settings.attn_implementation
        try:
            # gptqmodel (imported by transformers' GPTQ/AWQ integrations) prints its banner and kernel logs to
            # stdout, which would end up in the text `webui generate` prints: send them to stderr instead.
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                # Passing a kernel choice for a quantized checkpoint is the documented way; the warning is noise.
                warnings.filterwarnings("ignore", message="You passed `quantization_config`")
                tokenizer, model = self.open_checkpoint(transformers, folder, kwargs, model_kwargs)
        except (OSError, ValueError, ImportError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise LoaderError(self._explain(path.name, exc)) from exc
        model.eval()
        extra = {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
        if device == "cpu":
            extra["n_threads"] = str(threads)
        extra.update(self.describe(settings))
        return self.wrap(model, tokenizer, path, settings, extra)

    def open_checkpoint(
        self, transformers: Any, folder: Path, kwargs: dict[str, Any], model_kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        """The tokenizer (or processor) and the model, read from ``folder``."""
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, **model_kwargs)
        return tokenizer, model

    def model_class(self) -> type[HfModel]:
        """The class of the loaded model (HfModel, or a subclass taking its arguments)."""
        return HfModel

    def wrap(
        self, model: Any, tokenizer: Any, path: Path, settings: HfSettingsT, extra: dict[str, str]
    ) -> HfModel:
        """The loaded model object the engine gets (of the class ``model_class`` gives)."""
        return self.model_class()(
            model,
            tokenizer,
            path,
            self.name,
            settings.max_context,
            extra,
            capabilities=self.capabilities,
            prompt_cache=settings.prompt_cache,
        )

    @staticmethod
    def _locate(path: Path, settings: HfSettings) -> tuple[Path, str | None]:
        """The folder to load from and the GGUF file name inside it (None for a plain Transformers folder)."""
        gguf = getattr(settings, "gguf_file", "")
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path.parent, path.name
        if not path.exists():
            raise LoaderError(f"{path} does not exist.")
        if not path.is_dir():
            raise LoaderError(f"{path.name} is neither a model folder nor a .gguf file.")
        if gguf:
            candidate = Path(gguf).expanduser()
            candidate = candidate if candidate.is_absolute() else path / candidate
            if not candidate.is_file():
                raise LoaderError(f"gguf_file {gguf!r} not found in {path.name}.")
            return candidate.parent, candidate.name
        if not (path / "config.json").is_file():
            raise LoaderError(f"{path.name} has no config.json, so it is not a Transformers model folder.")
        return path, None

    @staticmethod
    def _check_weights(name: str, folder: Path, settings: HfSettings) -> None:
        """Refuse a folder whose weights are only pickle files unless allow_pickle: unpickling runs code."""
        files = [p for p in folder.iterdir() if p.is_file()]
        if settings.allow_pickle or any(p.suffix == ".safetensors" for p in files):
            return
        pickled = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickled:
            raise LoaderError(
                f"{name} has only pickle weights ({', '.join(pickled[:3])}), and loading a pickle file can run "
                "code hidden in it. Use a safetensors version of the model, or set the loader setting "
                "allow_pickle=true if you trust where it came from."
            )

    def _check_remote_code(self, name: str, config: dict[str, Any], settings: HfSettings) -> None:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = config.get("model_type")
        if settings.trust_remote_code or model_type in CONFIG_MAPPING_NAMES:
            return
        if "auto_map" in config:
            raise LoaderError(
                f"{name} needs Python code from its own folder to run (model type {model_type!r}). "
                "Set the loader setting trust_remote_code=true if you trust where it came from."
            )
        if config and model_type:
            import transformers

            raise LoaderError(
                f"{name} has model type {model_type!r}, which transformers {transformers.__version__} "
                "does not know. Update transformers, or use a GGUF of the model with llama.cpp."
            )

    @staticmethod
    def _device(settings: HfSettings, torch: Any) -> str:
        has_cuda = bool(torch.cuda.is_available())
        if settings.device == "cuda" and not has_cuda:
            raise LoaderError(
                "device=cuda was asked for, but torch sees no CUDA GPU. Use device=cpu or auto."
            )
        if settings.device == "auto":
            return "cuda" if has_cuda else "cpu"
        return settings.device

    def _explain(self, name: str, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        if "trust_remote_code" in text:
            return (
                f"{name} needs Python code from its own folder to run. Set the loader setting "
                "trust_remote_code=true if you trust where it came from."
            )
        return f"{self.name} could not load {name}: {text}"


class TransformersLoader(HfLoader[TransformersSettings]):
    """Transformers model folders (safetensors / bin), optionally a GGUF file read by transformers."""

    name: ClassVar[str] = "transformers"
    settings_model = TransformersSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        if entry.kind == "folder":
            return Claim.MADE_FOR
        return Claim.CAN_OPEN if entry.kind == "gguf" else Claim.NONE

    def check_checkpoint(self, path: Path, config: dict[str, Any], gguf_file: str | None) -> None:
        """Refuse a quantized checkpoint that another installed loader claims more strongly, naming it."""
        method = quant_method(config)
        better = loader_for_path(path) if method else None
        if method and better and better != self.name:
            raise LoaderError(f"{path.name} is {quantized_checkpoint(method)}: pick the {better} loader.")

    def quantization_kwargs(
        self, settings: TransformersSettings, config: dict[str, Any], device: str
    ) -> dict[str, Any]:
        """bitsandbytes quantization while loading."""
        if not (settings.load_in_8bit or settings.load_in_4bit):
            return {}
        if settings.load_in_8bit and settings.load_in_4bit:
            raise LoaderError("Pick one of load_in_8bit and load_in_4bit, not both.")
        import importlib.util

        if device != "cuda":
            raise LoaderError(
                "load_in_8bit / load_in_4bit need a CUDA GPU (bitsandbytes); none is available."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LoaderError("load_in_8bit / load_in_4bit need bitsandbytes: pip install bitsandbytes.")
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_8bit=settings.load_in_8bit, load_in_4bit=settings.load_in_4bit
            )
        }


class HfModel:
    """A transformers model in memory; each generation runs generate() in its own thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        path: Path,
        loader: str,
        max_context: int,
        extra: dict[str, str],
        *,
        capabilities: LoaderCapabilities,
        prompt_cache: bool = True,
    ) -> None:
        self.capabilities = capabilities
        self._model: Any = model
        self._tokenizer = tokenizer
        # One KV cache at most, from the last generation; unload() drops it with the model.
        self._prefix = PrefixCache(enabled=prompt_cache)
        text_config = model.config.get_text_config()
        context = max_context or getattr(text_config, "max_position_embeddings", None) or FALLBACK_CONTEXT
        self._bos_id: int | None = tokenizer.bos_token_id
        self._adds_bos = self._tokenizer_adds_bos()
        self._eos_ids = self._end_token_ids()
        self._pieces: Any = None  # each token's text and bytes (logprobs), made on first use
        template = tokenizer.chat_template
        tool_template = None
        if isinstance(
            template, dict
        ):  # named templates: prefer "default"; "tool_use" serves requests with tools
            tool_template = template.get("tool_use")
            template = template.get("default") or next(iter(template.values()), None)
        self.facts = ModelFacts(
            name=path.name,
            path=path,
            loader=loader,
            context_length=int(context),
            chat_template=template if isinstance(template, str) and template else None,
            tool_chat_template=tool_template if isinstance(tool_template, str) and tool_template else None,
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
            extra=extra,
        )

    def _tokenizer_adds_bos(self) -> bool:
        """Whether the tokenizer itself puts BOS first when asked for special tokens (Llama does, Qwen not)."""
        if self._bos_id is None:
            return False
        with_special = self._tokenizer.encode("a", add_special_tokens=True)
        return bool(with_special) and with_special[0] == self._bos_id

    def _end_token_ids(self) -> tuple[int, ...]:
        ids: set[int] = set()
        configured = self._model.generation_config.eos_token_id
        if isinstance(configured, int):
            ids.add(configured)
        elif isinstance(configured, list):
            ids.update(int(t) for t in configured)
        if self._tokenizer.eos_token_id is not None:
            ids.add(int(self._tokenizer.eos_token_id))
        return tuple(sorted(ids))

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids; with ``add_bos`` the BOS token is put first when the model's tokenizer uses one."""
        ids = [int(t) for t in self._tokenizer.encode(text, add_special_tokens=False)]
        if add_bos and self._adds_bos and self._bos_id is not None and (not ids or ids[0] != self._bos_id):
            ids.insert(0, self._bos_id)
        return ids

    def detokenize(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=False))

    def unload(self) -> None:
        self._prefix.clear()
        model, self._model = self._model, None
        if model is None:
            return
        del model
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        if self._model is None:
            raise LoaderError("The model was unloaded.")
        ids = self.tokenize(prompt, add_bos=params.add_bos_token)
        if len(ids) > 1 and ids[0] == ids[1] == self._bos_id:
            ids = ids[1:]  # the template already wrote the BOS token: never send two
        if not ids:
            raise LoaderError("The prompt is empty.")
        yield from self._generate(ids, {}, params, cancel, reuse=True)

    def _generate(
        self,
        ids: list[int],
        inputs: dict[str, Any],
        params: GenerationParams,
        cancel: CancelToken,
        *,
        reuse: bool,
    ) -> Iterator[Chunk]:
        """Generate after the prompt ``ids`` (with more model ``inputs``, e.g. an image's pixels); with
        ``reuse`` the kept cache of the last generation may serve the prompt's shared prefix."""
        import torch
        from transformers import StoppingCriteriaList

        from loaders.hf_sampling import build_generation
        from loaders.hf_streaming import CancelCriteria, CountingStreamer, LogprobRecorder, TokenPieces

        model = self._model
        context = self.facts.context_length
        if len(ids) >= context:
            raise LoaderError(
                f"The prompt is {len(ids)} tokens long, but the context holds only {context}. "
                "Shorten it or load the model with a larger context (max_context)."
            )
        seed = params.seed if params.seed >= 0 else random.randrange(2**31)
        config, processors = build_generation(
            params,
            base=model.generation_config,
            tokenizer=self._tokenizer,
            vocab_size=int(model.config.get_text_config().vocab_size),
            eos_ids=self._eos_ids,
            max_new_tokens=min(params.max_new_tokens, context - len(ids)),
            seed=seed,
        )
        # generate() then hands back its cache, kept for the next prompt.
        config.update(return_dict_in_generate=True)
        abandoned = threading.Event()
        recorder: LogprobRecorder | None = None
        if params.logprobs >= 0 or params.prompt_logprobs:
            # Logprobs come from the model's raw logits (a forward hook), before our processors change them.
            self._pieces = self._pieces or TokenPieces(self._tokenizer)
            recorder = LogprobRecorder(
                self._pieces,
                max(params.logprobs, 0),
                steps=params.logprobs >= 0,
                prompt_ids=ids if params.prompt_logprobs else None,
            )
        streamer = CountingStreamer(
            self._tokenizer,
            self._eos_ids,
            skip_special_tokens=params.skip_special_tokens,
            logprobs=recorder if params.logprobs >= 0 else None,
        )
        input_ids = torch.tensor([ids], dtype=torch.long, device=model.device)
        placement = (str(model.device), str(model.dtype))
        # The kept cache leaves self._prefix here: only a generation that ends cleanly puts one back. The logits
        # processors still see the whole prompt (generate() hands them every id), so none of them rules reuse out.
        # Scoring the prompt needs logits for every prompt position: the whole prompt is evaluated.
        scores_prompt = recorder is not None and params.prompt_logprobs
        take = reuse and not scores_prompt and self._may_reuse(model)
        cache, reused = self._prefix.take(ids, placement) if take else (None, 0)
        if not take:
            self._prefix.clear()  # a cache holding an image's keys must never serve a later prompt
        if scores_prompt and "logits_to_keep" in inspect.signature(model.forward).parameters:
            inputs = {**inputs, "logits_to_keep": 0}
        failure: list[BaseException] = []
        result: list[Any] = []

        def generate(kept: dict[str, Any]) -> None:
            try:
                torch.manual_seed(seed)
                result.append(
                    model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel, abandoned)]),
                        streamer=streamer,
                        **inputs,
                        **kept,
                    )
                )
            except BaseException as exc:  # handed to the reader, which raises it as a LoaderError
                failure.append(exc)
                streamer.end()

        # The thread alone holds the cache from here: after a failure nothing references a half-filled one.
        thread = threading.Thread(
            target=generate,
            args=({"cache": cache} if cache is not None else {},),
            name="palabre-transformers-generate",
            daemon=True,
        )
        del cache
        hook = model.register_forward_hook(recorder.hook) if recorder is not None else None
        thread.start()
        reported = 0
        usage = PromptUsage(len(ids), reused)
        prompt_logprobs = True  # still to be sent (on the first chunk)
        try:
            for text in streamer:
                produced = streamer.generated
                if text or produced > reported:
                    yield Chunk(
                        text,
                        tokens=produced - reported,
                        prompt=usage,
                        logprobs=tuple(streamer.entries[reported:produced]),
                        prompt_logprobs=recorder.prompt if recorder is not None and prompt_logprobs else (),
                    )
                    reported, prompt_logprobs = produced, False
            thread.join()
            if failure:
                raise LoaderError(f"Generation failed: {failure[0]}") from failure[0]
            finish: FinishReason
            if streamer.last_token in self._eos_ids:
                finish = "stop"
            elif cancel.cancelled:
                finish = "cancelled"
            else:
                finish = "length"
            yield Chunk(
                tokens=streamer.generated - reported,
                finish_reason=finish,
                prompt=usage,
                logprobs=tuple(streamer.entries[reported : streamer.generated]),
                prompt_logprobs=recorder.prompt if recorder is not None and prompt_logprobs else (),
            )
        finally:
            # A reader that stops early (closed generator, exception) must not leave generate() running.
            abandoned.set()
            thread.join()
            if hook is not None:
                hook.remove()
            if reuse:
                self._keep_cache(result, placement)

    @staticmethod
    def _may_reuse(model: Any) -> bool:
        """False for checkpoints whose generation_config names a cache_implementation (even "dynamic"): generate()
        merges it into ours and then refuses any cache passed in."""
        return model.generation_config.cache_implementation is None

    def _keep_cache(self, result: list[Any], placement: tuple[str, str]) -> None:
        """Keep the cache of a generation that returned (finished, cancelled or abandoned: generate() stops
        between tokens, so its cache matches its sequence); after a failure nothing is kept."""
        if not result or self._model is None or not self._may_reuse(self._model):
            return
        output = result.pop()
        sequences = getattr(output, "sequences", None)
        if sequences is None or sequences.shape[0] != 1:
            return
        self._prefix.keep(getattr(output, "cache", None), sequences[0].tolist(), placement)
