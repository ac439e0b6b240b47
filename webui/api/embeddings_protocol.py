"""Request and response bodies of the embeddings endpoints: OpenAI's ``/v1/embeddings``, Ollama's
``/api/embed`` and its older ``/api/embeddings``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUTS = 2048  # OpenAI's limit on the items of one request


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; unknown fields (``user``) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field("", description="An embedding model from user_data/models; empty: the loaded one.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="A text, a list of texts, or token ids (one list or a list of lists)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="base64: each vector as little-endian float32 bytes (the openai client's default).",
    )
    dimensions: int | None = Field(None, description="Must equal the model's vector size when given.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class EmbedRequest(BaseModel):
    """Ollama's ``/api/embed``: vectors L2-normalised; over-long input cut to the context unless
    ``truncate`` is false (then a 400)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="An embedding model from /api/tags.")
    input: str | list[str] = Field(default_factory=list, description="A text or a list of texts.")
    truncate: bool = True
    dimensions: int | None = Field(None, description="Keep the first N values (then normalised again).")
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


class LegacyEmbeddingsRequest(BaseModel):
    """Ollama's older ``/api/embeddings``: one ``prompt``, the model's vector as it comes (not normalised)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="An embedding model from /api/tags.")
    prompt: str = ""
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None
