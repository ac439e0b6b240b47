"""Embedding backends (imported only when an embedding model loads): sentence-transformers folders through
Transformers' AutoModel with the folder's pooling and normalisation, and GGUF files through llama.cpp with
embeddings on. Neither runs code from the model's folder: trust_remote_code stays off, and a folder whose
weights are only pickle files is refused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaders.transformers import PICKLE_SUFFIXES
from webui.core.embeddings import EmbeddingError, SentenceTransformersFolder
from webui.core.models.discovery import gguf_metadata

BATCH = 32  # inputs per forward pass


def _split_special(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after an input (BERT: [CLS] and [SEP])."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


class SentenceTransformersBackend:
    """A sentence-transformers folder: Transformer -> Pooling (-> Normalize), without that package."""

    def __init__(self, folder: Path, pipeline: SentenceTransformersFolder) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        files = [p for p in folder.iterdir() if p.is_file()]
        if not any(p.suffix == ".safetensors" for p in files):
            pickled = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
            raise EmbeddingError(
                f"{folder.name} has no safetensors weights"
                + (f" (only pickle files: {', '.join(pickled[:3])}, which can run code)" if pickled else "")
                + ": use a safetensors version of the model."
            )
        options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), **options)
            self.model = AutoModel.from_pretrained(
                str(folder), use_safetensors=True, dtype=torch.float32, **options
            )
        except (OSError, ValueError, KeyError) as exc:
            raise EmbeddingError(f"Transformers could not load {folder.name}: {exc}") from exc
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self._torch = torch
        self.pipeline = pipeline
        config = self.model.config
        self.dimensions = int(config.hidden_size)
        limits = [int(getattr(config, "max_position_embeddings", 0) or 0), pipeline.max_seq_length or 0]
        self.context_length = min(limit for limit in limits if limit > 0) if any(limits) else 512
        self._prefix, self._suffix = _split_special(self.tokenizer)
        self._pad = int(self.tokenizer.pad_token_id or 0)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def wrap(self, tokens: Sequence[int]) -> list[int]:
        vocab = int(self.model.config.vocab_size)
        if any(not 0 <= token < vocab for token in tokens):
            raise EmbeddingError(f"Token ids must be between 0 and {vocab - 1} for this model.")
        return [*self._prefix, *tokens, *self._suffix]

    def embed_tokens(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(inputs), BATCH):
            vectors += self._batch(inputs[start : start + BATCH])
        return vectors

    def _batch(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        torch = self._torch
        width = max(len(tokens) for tokens in inputs)
        rows = [[*t, *[self._pad] * (width - len(t))] for t in inputs]
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        masks = [[1] * len(t) + [0] * (width - len(t)) for t in inputs]
        mask = torch.tensor(masks, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mode = self.pipeline.pooling
        if mode == "cls":
            pooled = hidden[:, 0]
        elif mode == "lasttoken":
            last = mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=self.device), last]
        elif mode == "max":
            pooled = hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.pipeline.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return [[float(x) for x in row] for row in pooled.tolist()]

    def close(self) -> None:
        self.model = None


def load_sentence_transformers(
    folder: Path, pipeline: SentenceTransformersFolder
) -> SentenceTransformersBackend:
    return SentenceTransformersBackend(folder, pipeline)


class GgufEmbeddingBackend:
    """A GGUF model in llama.cpp with embeddings on: the file's pooling, mean when it names none (a chat
    model). Its own Llama instance, apart from the chat model's (embedding clears the KV cache)."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        try:
            llm = self._open(path, llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)
            if llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE:  # a chat model: mean pooling
                llm.close()
                llm = self._open(path, llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        except (ValueError, RuntimeError, OSError) as exc:
            raise EmbeddingError(f"llama.cpp could not load {path.name} for embeddings: {exc}") from exc
        self.llm: Any = llm
        self.dimensions = int(llm.n_embd())
        self.context_length = int(llm.n_batch)

    @staticmethod
    def _open(path: Path, pooling: int) -> Any:
        import llama_cpp

        from loaders.llama_cpp import _inert_metadata_templates, automatic_threads

        n_ctx = min(gguf_metadata(path).context_length or 2048, 2048)
        with _inert_metadata_templates(llama_cpp):
            return llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=pooling,
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_gpu_layers=-1,  # all layers on the GPU when llama.cpp was built with one, as for chat models
                n_threads=automatic_threads(),
                verbose=False,
            )

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def wrap(self, tokens: Sequence[int]) -> list[int]:
        vocab = int(self.llm.n_vocab())
        if any(not 0 <= token < vocab for token in tokens):
            raise EmbeddingError(f"Token ids must be between 0 and {vocab - 1} for this model.")
        bos = self.llm.token_bos()
        adds_bos = self.tokenize("") == [bos] if bos >= 0 else False
        return [bos, *tokens] if adds_bos and (not tokens or tokens[0] != bos) else list(tokens)

    def embed_tokens(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        llama_cpp = self._llama_cpp
        llm = self.llm
        vectors: list[list[float]] = []
        for tokens in inputs:  # one sequence a decode: simple, and no input waits on another's length
            llm._batch.reset()
            llm._ctx.kv_cache_clear()
            llm._batch.add_sequence(list(tokens), 0, True)
            llm._ctx.decode(llm._batch)
            pointer = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
            vectors.append([float(x) for x in pointer[: self.dimensions]])
        llm._batch.reset()
        return vectors

    def close(self) -> None:
        self.llm.close()


def load_gguf(path: Path) -> GgufEmbeddingBackend:
    return GgufEmbeddingBackend(path)
