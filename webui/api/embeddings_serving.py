"""The embeddings endpoints over the core's embedding model: OpenAI's ``/v1/embeddings`` and Ollama's
``/api/embed`` and ``/api/embeddings``. Each method returns the response body; refusals are ApiErrors (400 for
bad input, 403 to load a model without an admin key, 404 for an unknown model). No fastapi import."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from anyio import to_thread

from webui.api.embeddings_protocol import (
    MAX_INPUTS,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    EmbedRequest,
    LegacyEmbeddingsRequest,
)
from webui.api.errors import ApiError
from webui.api.ollama_protocol import allowed_keep_alive
from webui.api.serving import DEFAULT_MODEL_NAMES, RequestContext, Serving
from webui.core.embeddings import EmbeddingError, EmbeddingInput, EmbeddingModelNotFound, l2_normalize
from webui.core.service import EmbeddingResult

NS = 1_000_000_000
T = TypeVar("T")


def base64_vector(vector: Sequence[float]) -> str:
    """The vector as little-endian float32 bytes in base64, as OpenAI sends it."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def openai_inputs(value: str | list[str] | list[int] | list[list[int]]) -> list[EmbeddingInput]:
    """``input`` as a list of texts or token-id lists (one token list stays one input)."""
    if isinstance(value, str):
        return [value]
    tokens = [item for item in value if isinstance(item, int)]
    if value and len(tokens) == len(value):
        return [tokens]
    return [item for item in value if not isinstance(item, int)]


class EmbeddingsServing:
    """Embeddings for every protocol of one server, on the Serving's Service."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.service = serving.service

    def _model_name(self, name: str) -> str | None:
        return None if name.strip().lower() in DEFAULT_MODEL_NAMES else name

    def _load(self, name: str | None, context: RequestContext) -> float:
        """Load the model ``name`` means (checked as in ``_check_load``); the seconds it took."""
        self._check_load(name, context)
        return self.service.embeddings.load(name)

    def _check_load(self, name: str | None, context: RequestContext) -> None:
        """404 for a model that does not exist; 403 when it would have to load and the caller is no admin
        (the default embedding model, chosen by whoever started the server, loads for anyone)."""
        models = self.service.embeddings
        try:
            entry = models.resolve(name)
        except EmbeddingModelNotFound as exc:
            listing = ", ".join(e.name for e in self.serving.entries()) or "none"
            raise ApiError(
                404, f"{exc} Available models: {listing}.", param="model", code="model_not_found"
            ) from exc
        except EmbeddingError as exc:
            raise ApiError(400, str(exc), param="model") from exc
        if models.loaded_name == entry.name or context.caller.admin:
            return
        if models.default and models.resolve(models.default).name == entry.name:
            return
        raise ApiError(
            403,
            f"Loading the embedding model {entry.name!r} needs an admin key.",
            kind="permission_error",
            param="model",
            code="admin_required",
        )

    async def _embed(
        self,
        inputs: Sequence[EmbeddingInput],
        model: str,
        context: RequestContext,
        *,
        normalize: bool,
        truncate: bool,
    ) -> EmbeddingResult:
        name = self._model_name(model)

        def run() -> EmbeddingResult:
            self._check_load(name, context)
            return self.service.embed(inputs, name, normalize=normalize, truncate=truncate)

        return await to_thread.run_sync(_refusals(run))

    # -- OpenAI ----------------------------------------------------------------------------------------------

    async def openai_embeddings(self, body: EmbeddingRequest, context: RequestContext) -> dict[str, Any]:
        inputs = openai_inputs(body.input)
        if not inputs:
            raise ApiError(400, "`input` must not be empty.", param="input")
        if len(inputs) > MAX_INPUTS:
            raise ApiError(400, f"`input` may hold at most {MAX_INPUTS} items.", param="input")
        if any(isinstance(item, list) and not item for item in inputs):
            raise ApiError(400, "A token list in `input` is empty.", param="input")
        result = await self._embed(inputs, body.model, context, normalize=True, truncate=True)
        dimensions = len(result.vectors[0]) if result.vectors else 0
        if body.dimensions is not None and body.dimensions != dimensions:
            raise ApiError(
                400,
                f"The model {result.model} gives {dimensions}-dimensional vectors; `dimensions` "
                f"{body.dimensions} cannot be served (leave it out or ask for {dimensions}).",
                param="dimensions",
            )
        encode: Callable[[list[float]], list[float] | str] = (
            base64_vector if body.encoding_format == "base64" else (lambda vector: vector)
        )
        return EmbeddingResponse(
            data=[EmbeddingData(index=i, embedding=encode(v)) for i, v in enumerate(result.vectors)],
            model=result.model,
            usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
        ).model_dump()

    # -- Ollama ----------------------------------------------------------------------------------------------

    async def ollama_embed(self, body: EmbedRequest, context: RequestContext) -> dict[str, Any]:
        inputs: list[EmbeddingInput] = [body.input] if isinstance(body.input, str) else list(body.input)
        if body.dimensions is not None and body.dimensions < 1:
            raise ApiError(400, "`dimensions` must be at least 1.")
        if len(inputs) > MAX_INPUTS:
            raise ApiError(400, f"`input` may hold at most {MAX_INPUTS} items.")
        unload = allowed_keep_alive(body.keep_alive, context.caller.admin) == 0
        if not inputs and unload:  # as in Ollama: keep_alive 0 with no input unloads the model
            await to_thread.run_sync(self.service.embeddings.close)
            return {
                "model": body.model,
                "embeddings": [],
                "total_duration": 0,
                "load_duration": 0,
                "prompt_eval_count": 0,
            }
        if not inputs:  # as in Ollama: no input loads the model
            name = self._model_name(body.model)
            load = _refusals(lambda: self._load(name, context))
            seconds = await to_thread.run_sync(load)
            loaded = self.service.embeddings.loaded_name or body.model
            return {
                "model": loaded,
                "embeddings": [],
                "total_duration": int(seconds * NS),
                "load_duration": int(seconds * NS),
                "prompt_eval_count": 0,
            }
        result = await self._embed(inputs, body.model, context, normalize=True, truncate=body.truncate)
        if unload:
            await to_thread.run_sync(self.service.embeddings.close)
        vectors = result.vectors
        if body.dimensions is not None:
            size = len(vectors[0])
            if body.dimensions > size:
                raise ApiError(400, f"`dimensions` {body.dimensions} is more than the model's {size}.")
            vectors = [l2_normalize(vector[: body.dimensions]) for vector in vectors]
        return {
            "model": result.model,
            "embeddings": vectors,
            "total_duration": int(result.seconds * NS),
            "load_duration": int(result.load_seconds * NS),
            "prompt_eval_count": result.prompt_tokens,
        }

    async def ollama_embeddings(
        self, body: LegacyEmbeddingsRequest, context: RequestContext
    ) -> dict[str, Any]:
        unload = allowed_keep_alive(body.keep_alive, context.caller.admin) == 0
        if not body.prompt and unload:
            await to_thread.run_sync(self.service.embeddings.close)
            return {"embedding": []}
        if not body.prompt:  # as in Ollama: an empty prompt only loads the model
            name = self._model_name(body.model)
            load = _refusals(lambda: self._load(name, context))
            await to_thread.run_sync(load)
            return {"embedding": []}
        result = await self._embed([body.prompt], body.model, context, normalize=False, truncate=True)
        if unload:
            await to_thread.run_sync(self.service.embeddings.close)
        return {"embedding": result.vectors[0]}


def _refusals(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with the core's embedding refusals turned into ApiErrors (404 for an unknown model)."""

    def run() -> T:
        try:
            return fn()
        except EmbeddingModelNotFound as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from exc
        except EmbeddingError as exc:
            raise ApiError(400, str(exc)) from exc

    return run
