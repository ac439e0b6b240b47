"""OpenAI wire models: the bodies of /v1/models, /v1/completions and /v1/chat/completions.

Sampler fields beyond OpenAI's own are accepted by their GenerationParams names (``min_p``, ``top_k``,
``repetition_penalty`` ...): the request models allow extra keys and serving.py validates them against
GenerationParams, so no default or bound is copied here. The OpenAPI schema lists them, read from GenerationParams.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from webui.core.params import GenerationParams
from webui.core.prompts import Mode

MAX_CHOICES = (
    16  # n > 1 runs the generations one after another: keep a request from holding the engine for long
)


def _add_sampler_fields(schema: dict[str, Any]) -> None:
    """Document every GenerationParams field as an optional request field (the values are checked later)."""
    properties = schema.setdefault("properties", {})
    for name, spec in GenerationParams.model_json_schema().get("properties", {}).items():
        if name not in properties:
            spec = {k: v for k, v in spec.items() if k != "default"}  # absent = the preset's value
            properties[name] = spec


def null_means_default(*names: str) -> Any:
    """A validator reading ``null`` in these fields as "not given": OpenAI documents them as nullable and
    clients generated from its schema (or Ollama's Go types) send ``null`` for what they leave unset."""

    def default_for_null(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    return field_validator(*names, mode="before")(classmethod(default_for_null))


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


# -- requests ------------------------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``json_object`` and ``json_schema`` are enforced with a grammar where the loader honours one."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class GenerationRequest(BaseModel):
    """Fields shared by completions and chat completions; extra keys are GenerationParams fields by name."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_add_sampler_fields)

    model: str = Field("", description='A model name from /v1/models; empty or "default" = the loaded model.')
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Choices to generate (one after another).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    preset: str | None = Field(None, description="A Palabre preset to start from (default: Default).")

    _nulls = null_means_default("n", "stream")


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(..., description="Text, or token ids.")
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    _completion_nulls = null_means_default("echo")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    mode: Mode = Field("instruct", description="instruct, chat or chat-instruct (how the prompt is built).")
    character: str | None = Field(None, description="A Palabre personality to answer as.")
    instruction_template: str | None = Field(None, description="Template name (default: the model's).")
    instruction_template_str: str | None = Field(
        None, description="A Jinja chat template for this request (rendered in a sandbox); wins over the name"
    )
    user_name: str | None = Field(None, description="The user's name in chat and chat-instruct modes.")

    _chat_nulls = null_means_default("mode")


# -- responses -----------------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "palabre"
    loaded: bool = False


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
