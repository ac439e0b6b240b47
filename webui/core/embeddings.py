"""The embedding model: one, loaded next to the chat model, turning texts (or token ids) into vectors.

Two kinds of model embed: sentence-transformers folders (``modules.json`` with a Pooling module, run through
Transformers with the folder's pooling and normalisation) and GGUF files (llama.cpp with embeddings on, the
file's pooling or mean pooling). The backends live in ``loaders/embedding_models.py`` and are imported only
when a model loads, so this module never imports torch or llama_cpp.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from webui.core.models.discovery import ModelEntry

# An input: a text, or token ids of the model's vocabulary.
EmbeddingInput = str | Sequence[int]

POOLING_MODES = ("mean", "cls", "lasttoken", "max")
BACKENDS = "loaders.embedding_models"


class EmbeddingError(ValueError):
    """A refusal meant for the caller: no embedding model, not an embedding model, bad or over-long input."""


class EmbeddingModelNotFound(EmbeddingError):
    """The named model is not in the models folder."""


class EmbeddingBackend(Protocol):
    """A loaded embedding model: token ids in, one pooled vector per input out (normalised when the model's
    own pipeline normalises)."""

    dimensions: int
    context_length: int  # the most tokens one input may have

    def tokenize(self, text: str) -> list[int]: ...

    def wrap(self, tokens: Sequence[int]) -> list[int]:
        """Token ids a client sent, with the special tokens the model expects around an input."""
        ...

    def embed_tokens(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int
    model: str
    load_seconds: float = 0.0
    seconds: float = 0.0  # the whole call, load included


@dataclass(frozen=True)
class SentenceTransformersFolder:
    """What a sentence-transformers folder says about its pipeline (read without loading anything)."""

    pooling: str  # one of POOLING_MODES
    normalize: bool
    max_seq_length: int | None


def read_sentence_transformers(folder: Path) -> SentenceTransformersFolder | None:
    """The folder's pooling and normalisation from ``modules.json``; None when it is not such a folder."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(modules, list):
        return None
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    pooling_module = types.get("Pooling")
    if pooling_module is None:
        return None
    pooling = "mean"
    config_path = folder / str(pooling_module.get("path", "1_Pooling")) / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        mode = config.get("pooling_mode")
        if isinstance(mode, str) and mode in POOLING_MODES:
            pooling = mode
        else:
            for key, name in (
                ("pooling_mode_cls_token", "cls"),
                ("pooling_mode_lasttoken", "lasttoken"),
                ("pooling_mode_max_tokens", "max"),
                ("pooling_mode_mean_tokens", "mean"),
            ):
                if config.get(key):
                    pooling = name
                    break
    max_seq_length = None
    try:
        st_config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if isinstance(st_config, dict) and isinstance(st_config.get("max_seq_length"), int):
            max_seq_length = int(st_config["max_seq_length"])
    except (OSError, ValueError):
        pass
    return SentenceTransformersFolder(pooling, "Normalize" in types, max_seq_length)


def is_embedding_entry(entry: ModelEntry) -> bool:
    """True for a model that can only embed (a sentence-transformers folder); GGUF files can do both."""
    return entry.kind == "folder" and read_sentence_transformers(entry.path) is not None


def match_entry(entries: Sequence[ModelEntry], name: str) -> ModelEntry | None:
    """The entry ``name`` means: its name or file name, with or without ".gguf" or an Ollama ":latest"."""
    wanted = name.strip().removesuffix(":latest").lower()
    for entry in entries:
        names = {entry.name, entry.path.name}
        names |= {n[: -len(".gguf")] for n in names if n.lower().endswith(".gguf")}
        if wanted in {n.lower() for n in names}:
            return entry
    return None


def l2_normalize(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def open_backend(entry: ModelEntry) -> EmbeddingBackend:
    """Load ``entry`` as an embedding model (EmbeddingError when it is not one or does not load)."""
    backends = importlib.import_module(BACKENDS)
    if entry.kind == "gguf":
        backend: EmbeddingBackend = backends.load_gguf(entry.path)
        return backend
    if entry.kind == "folder":
        folder = read_sentence_transformers(entry.path)
        if folder is None:
            raise EmbeddingError(
                f"{entry.name} is not an embedding model: its folder has no sentence-transformers "
                "modules.json with a Pooling module."
            )
        backend = backends.load_sentence_transformers(entry.path, folder)
        return backend
    raise EmbeddingError(f"{entry.name} cannot be loaded as an embedding model (a {entry.kind} model).")


class EmbeddingModels:
    """The one embedding model of a process: loaded on first use (the default name, or the model a request
    names), replaced when another is named; calls are serialised."""

    def __init__(
        self,
        find: Callable[[str], ModelEntry | None],
        default: str | None = None,
        opener: Callable[[ModelEntry], EmbeddingBackend] = open_backend,
    ) -> None:
        self._find = find
        self.default = default
        self._open = opener
        self._lock = threading.Lock()
        self._entry: ModelEntry | None = None
        self._backend: EmbeddingBackend | None = None

    @property
    def loaded_name(self) -> str | None:
        return self._entry.name if self._entry else None

    def resolve(self, name: str | None) -> ModelEntry:
        """The entry ``name`` means (None / "": the loaded embedding model, else the default one)."""
        wanted = (name or "").strip()
        if not wanted:
            if self._entry is not None:
                return self._entry
            if not self.default:
                raise EmbeddingError(
                    "No embedding model is loaded: name one in `model` (a sentence-transformers folder or a "
                    "GGUF file in user_data/models), or start the server with --embedding-model NAME."
                )
            wanted = self.default
        entry = self._find(wanted)
        if entry is None:
            raise EmbeddingModelNotFound(f"The model {wanted!r} does not exist.")
        return entry

    def load(self, name: str | None = None) -> float:
        """Make sure the model ``name`` means is loaded; the seconds loading took (0 when it was)."""
        with self._lock:
            return self._ensure(self.resolve(name))

    def _ensure(self, entry: ModelEntry) -> float:
        if self._entry is not None and self._entry == entry:
            return 0.0
        started = time.perf_counter()
        backend = self._open(entry)
        self.unload_locked()
        self._entry, self._backend = entry, backend
        return time.perf_counter() - started

    def embed(
        self,
        inputs: Sequence[EmbeddingInput],
        model: str | None = None,
        *,
        normalize: bool = False,
        truncate: bool = True,
    ) -> EmbeddingResult:
        """One vector per input; over-long inputs are cut to the model's context, or refused (``truncate``
        False). ``normalize``: L2-normalise each vector (the model's own normalisation applies anyway)."""
        started = time.perf_counter()
        with self._lock:
            entry = self.resolve(model)
            load_seconds = self._ensure(entry)
            backend = self._backend
            assert backend is not None
            batches: list[list[int]] = []
            for index, item in enumerate(inputs):
                tokens = backend.tokenize(item) if isinstance(item, str) else backend.wrap(item)
                if len(tokens) > backend.context_length:
                    if not truncate:
                        raise EmbeddingError(
                            f"Input {index} has {len(tokens)} tokens, more than the {backend.context_length} "
                            f"the embedding model {entry.name} takes."
                        )
                    tokens = tokens[: backend.context_length]
                if not tokens:
                    raise EmbeddingError(f"Input {index} is empty.")
                batches.append(tokens)
            vectors = backend.embed_tokens(batches) if batches else []
        if normalize:
            vectors = [l2_normalize(vector) for vector in vectors]
        return EmbeddingResult(
            vectors,
            sum(len(tokens) for tokens in batches),
            entry.name,
            load_seconds,
            time.perf_counter() - started,
        )

    def dimensions(self, model: str | None = None) -> int:
        """The loaded (or named) model's vector size, loading it if needed."""
        with self._lock:
            self._ensure(self.resolve(model))
            assert self._backend is not None
            return self._backend.dimensions

    def unload_locked(self) -> None:
        if self._backend is not None:
            self._backend.close()
        self._entry, self._backend = None, None

    def close(self) -> None:
        with self._lock:
            self.unload_locked()
