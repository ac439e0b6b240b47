"""OpenAI wire models: the bodies of /v1/models, /v1/completions and /v1/chat/completions, and the requests'
conversion into the core's (``to_chat_request``, ``to_completion_request``).

Sampler fields beyond OpenAI's own are accepted by their GenerationParams names (``min_p``, ``top_k``,
``repetition_penalty`` ...): the request models allow extra keys, validated against GenerationParams when the
request is converted, so no default or bound is copied here. The OpenAPI schema lists them, read from
GenerationParams.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from webui.api.core_requests import (
    CoreChatRequest,
    CoreCompletionRequest,
    Needs,
    chat_message,
    chat_settings,
    json_grammar,
    load_character,
    resolve_params,
    sampler_extras,
    with_grammar,
)
from webui.api.errors import ApiError
from webui.core.characters.store import Character
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import Service
from webui.core.templates.store import InstructionTemplate, TemplateError

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

    def sampler_params(
        self, service: Service, character: Character | None, max_tokens: tuple[str, int | None]
    ) -> GenerationParams:
        """The sampler values, each from the first of: this request's field (OpenAI's name, or a
        GenerationParams name as an extra key), the personality, the preset (``preset``, else Default), and
        GenerationParams' default. ``max_tokens`` is (the field that set the limit, its value)."""
        overrides, sources = self._overrides(max_tokens)
        return resolve_params(service, overrides, sources, preset=self.preset, character=character)

    def _overrides(self, max_tokens: tuple[str, int | None]) -> tuple[dict[str, Any], dict[str, str]]:
        """The request's sampler values by GenerationParams name, and which request field each came from."""
        overrides = sampler_extras(self.model_extra)
        sources = {key: key for key in overrides}
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
                sources[name] = name
        if self.stop is not None:
            overrides["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
            sources["stop"] = "stop"
        source, limit = max_tokens
        if limit is not None:
            overrides["max_new_tokens"] = limit
            sources["max_new_tokens"] = source
        return overrides, sources

    def constrained(self, params: GenerationParams, *, logprobs: bool) -> tuple[GenerationParams, Needs]:
        """``params`` with the grammar ``response_format`` asks for, and what the loader must support."""
        rules = self._format_grammar(params)
        needs = Needs("response_format" if rules else "grammar", logprobs)
        return with_grammar(params, rules), needs

    def _format_grammar(self, params: GenerationParams) -> str | None:
        """The grammar ``response_format`` asks for (None for plain text)."""
        response_format = self.response_format
        if response_format is None or response_format.type == "text":
            return None
        if params.grammar:
            raise ApiError(400, "Give either response_format or grammar, not both.", param="response_format")
        schema = response_format.json_schema.schema_ if response_format.json_schema else None
        if response_format.type == "json_schema" and schema is None:
            raise ApiError(
                400, "response_format json_schema needs json_schema.schema.", param="response_format"
            )
        return json_grammar(schema)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(..., description="Text, or token ids.")
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    _completion_nulls = null_means_default("echo")

    def to_completion_request(self, service: Service) -> CoreCompletionRequest:
        """The completions as the core takes them; sampler values as in ``sampler_params`` (no personality)."""
        if self.suffix:
            raise ApiError(400, "suffix (fill in the middle) is not supported.", param="suffix")
        if self.best_of not in (None, 1, self.n):
            raise ApiError(400, "best_of is not supported (use n).", param="best_of")
        params = self.sampler_params(service, None, ("max_tokens", self.max_tokens))
        params, needs = self.constrained(params, logprobs=bool(self.logprobs))
        return CoreCompletionRequest(self.prompt, params, self.n, echo=self.echo, needs=needs)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def to_core(self) -> ChatMessage:
        """The core's ChatMessage; text parts are joined, other parts are refused."""
        content = self.content
        parts = content if content is None or isinstance(content, str) else [p.model_dump() for p in content]
        return chat_message(self.role, parts)


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

    def to_chat_request(self, service: Service) -> CoreChatRequest:
        """The reply as the core takes it. Each sampler value comes from the first of: this request's field,
        the personality (``character``), the preset (``preset``, else Default), GenerationParams' default;
        the prompt's template from ``instruction_template_str``, ``instruction_template``, else the
        personality's or the model's."""
        if self.tools and self.tool_choice != "none":
            raise ApiError(400, "Tools (function calling) are not supported.", param="tools")
        history = [message.to_core() for message in self.messages]
        character = load_character(service, self.character)
        settings = chat_settings(
            service,
            mode=self.mode,
            character=character,
            template=request_template(self.instruction_template_str) or self.instruction_template,
            user_name=self.user_name,
        )
        limit = (
            ("max_completion_tokens", self.max_completion_tokens)
            if self.max_completion_tokens is not None
            else ("max_tokens", self.max_tokens)
        )
        params = self.sampler_params(service, character, limit)
        params, needs = self.constrained(params, logprobs=bool(self.logprobs or self.top_logprobs))
        return CoreChatRequest(history, settings, params, self.n, needs)


def request_template(source: str | None) -> InstructionTemplate | None:
    """A request's own ``instruction_template_str``, parsed (a 400 naming the line if it does not parse)."""
    if source is None:
        return None
    try:
        return InstructionTemplate("instruction_template_str", source, "custom")
    except TemplateError as exc:
        raise ApiError(400, str(exc), param="instruction_template_str") from exc


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


class _Envelope(BaseModel):
    """The fields every completion or chat response and chunk starts with, in OpenAI's order (a subclass
    names its ``object``, which keeps its place)."""

    id: str
    object: str
    created: int
    model: str


class CompletionResponse(_Envelope):
    object: Literal["text_completion"] = "text_completion"
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


class ChatCompletionResponse(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
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


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
