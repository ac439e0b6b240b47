"""OpenAI wire models: the bodies of /v1/models, /v1/completions and /v1/chat/completions, and the requests'
conversion into the core's (``to_chat_request``, ``to_completion_request``).

Sampler fields beyond OpenAI's own are accepted by their GenerationParams names (``min_p``, ``top_k``,
``repetition_penalty`` ...): the request models allow extra keys, validated against GenerationParams when the
request is converted, so no default or bound is copied here. The OpenAPI schema lists them, read from
GenerationParams.

Tools are OpenAI's (``tools``, ``tool_choice``, ``parallel_tool_calls``; calls and ``tool`` results in the
history); thinking is turned by ``reasoning_effort`` (or Ollama's ``reasoning: {effort}``) and
``chat_template_kwargs``, and a reply's reasoning comes back as ``reasoning_content`` and ``reasoning``.
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
    link_tool_results,
    load_character,
    resolve_params,
    sampler_extras,
    template_variables,
    thinking_overrides,
    tool_call,
    tool_request,
    with_grammar,
)
from webui.api.errors import ApiError
from webui.api.logprob_shapes import ChoiceLogprobs, CompletionLogprobs
from webui.core.characters.store import Character
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.params import PER_REQUEST_NAMES, GenerationParams
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import Service, ToolRequest
from webui.core.templates.store import InstructionTemplate, TemplateError

MAX_CHOICES = (
    16  # n > 1 runs the generations one after another: keep a request from holding the engine for long
)


def _add_sampler_fields(schema: dict[str, Any]) -> None:
    """Document every GenerationParams field as an optional request field (the values are checked later)."""
    properties = schema.setdefault("properties", {})
    for name, spec in GenerationParams.model_json_schema().get("properties", {}).items():
        if name not in properties and name not in PER_REQUEST_NAMES:
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
    logprobs: int | None = Field(
        None,
        ge=0,
        le=5,
        description="Each token's logprob with this many most likely alternatives (null = none); with echo, "
        "the prompt's tokens too. max_tokens 0 with echo scores the prompt without generating.",
    )
    best_of: int | None = None

    _completion_nulls = null_means_default("echo")

    def to_completion_request(self, service: Service) -> CoreCompletionRequest:
        """The completions as the core takes them; sampler values as in ``sampler_params`` (no personality)."""
        if self.suffix:
            raise ApiError(400, "suffix (fill in the middle) is not supported.", param="suffix")
        if self.best_of not in (None, 1, self.n):
            raise ApiError(400, "best_of is not supported (use n).", param="best_of")
        # max_tokens 0 scores the prompt (echo with logprobs): one token is generated and left out of the answer.
        limit = 1 if self.scores_only else self.max_tokens
        params = self.sampler_params(service, None, ("max_tokens", limit))
        if self.logprobs is not None:
            params = params.overlay({"logprobs": self.logprobs, "prompt_logprobs": self.echo})
        if self.token_ids and "add_bos_token" not in (self.model_extra or {}):
            # Token ids are the prompt as the client wants it evaluated (an evaluation harness counts on its
            # own ids lining up with the echoed ones): nothing is put before them.
            params = params.overlay({"add_bos_token": False})
        params, needs = self.constrained(params, logprobs=self.logprobs is not None)
        return CoreCompletionRequest(self.prompt, params, self.n, echo=self.echo, needs=needs)

    @property
    def token_ids(self) -> bool:
        """Whether the prompt is given as token ids (one list, or a list per prompt)."""
        prompt = self.prompt
        return isinstance(prompt, list) and any(not isinstance(item, str) for item in prompt)

    @property
    def scores_only(self) -> bool:
        """max_tokens 0: nothing is generated (the answer is the echoed prompt and its logprobs)."""
        return self.max_tokens == 0


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(..., description="text or image_url.")
    text: str | None = None
    image_url: dict[str, Any] | str | None = Field(
        None,
        description='{"url": "data:image/png;base64,...", "detail": ...} (or the URL alone); http(s) URLs only '
        "from the hosts the server allows (serve --allow-image-host).",
    )


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    arguments: str | dict[str, Any] | None = None  # JSON text (OpenAI); some clients send the object


class ToolCallIn(BaseModel):
    """A call an assistant message of the history made."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: str = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    # An earlier reply's reasoning, as llama.cpp and vLLM (reasoning_content) or Ollama (reasoning) send it.
    reasoning_content: str | None = None
    reasoning: str | None = None

    def to_core(self, images: ImageSources = DATA_URLS_ONLY) -> ChatMessage:
        """The core's ChatMessage; text parts are joined, ``image_url`` parts read through ``images``, other
        parts are refused. A ``function`` message (OpenAI's older name for a tool result) is a tool message."""
        content = self.content
        parts = content if content is None or isinstance(content, str) else [p.model_dump() for p in content]
        calls = [tool_call(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ()]
        return chat_message(
            "tool" if self.role == "function" else self.role,
            parts,
            reasoning=self.reasoning_content or self.reasoning or "",
            tool_calls=calls,
            tool_call_id=self.tool_call_id or "",
            name=self.name or "",
            images=images,
        )


class ReasoningOptions(BaseModel):
    """``reasoning: {effort}``, as Ollama's OpenAI-compatible endpoint takes it."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = None


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = Field(None, description="Return each answer token's logprob.")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With logprobs: this many most likely tokens at each position."
    )
    tools: list[dict[str, Any]] | None = Field(
        None, description="Functions the model may call: {type: function, function: {name, parameters}}."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None,
        description='"none", "auto" (the default), "required", or {type: function, function: {name}}.',
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether one reply may make several calls.")
    reasoning_effort: str | None = Field(
        None,
        description="none (no thinking), minimal, low, medium, high ...: for models whose template takes it.",
    )
    reasoning: ReasoningOptions | None = Field(None, description="{effort}: the same as reasoning_effort.")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="More variables for the chat template (e.g. {enable_thinking: false})."
    )
    mode: Mode = Field("instruct", description="instruct, chat or chat-instruct (how the prompt is built).")
    character: str | None = Field(None, description="A Palabre personality to answer as.")
    instruction_template: str | None = Field(None, description="Template name (default: the model's).")
    instruction_template_str: str | None = Field(
        None, description="A Jinja chat template for this request (rendered in a sandbox); wins over the name"
    )
    user_name: str | None = Field(None, description="The user's name in chat and chat-instruct modes.")

    _chat_nulls = null_means_default("mode")

    def to_chat_request(self, service: Service, images: ImageSources = DATA_URLS_ONLY) -> CoreChatRequest:
        """The reply as the core takes it. Each sampler value comes from the first of: this request's field,
        the personality (``character``), the preset (``preset``, else Default), GenerationParams' default;
        the prompt's template from ``instruction_template_str``, ``instruction_template``, else the
        personality's or the model's. Image parts are read through ``images`` (data: URLs, and http(s)
        URLs where the server allows them)."""
        tools = self.tool_request()
        history = link_tool_results([message.to_core(images) for message in self.messages])
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
        if self.top_logprobs and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs set to true.", param="top_logprobs")
        if self.logprobs:
            params = params.overlay({"logprobs": self.top_logprobs or 0})
        params, needs = self.constrained(params, logprobs=bool(self.logprobs))
        variables, _ = template_variables(self.chat_template_kwargs)
        return CoreChatRequest(history, settings, params, self.n, needs, tools, variables)

    def _overrides(self, max_tokens: tuple[str, int | None]) -> tuple[dict[str, Any], dict[str, str]]:
        """The sampler values, with the thinking controls ``reasoning_effort`` (or ``reasoning.effort``) and
        ``chat_template_kwargs``' ``enable_thinking`` ask for."""
        overrides, sources = super()._overrides(max_tokens)
        effort, effort_param = self.reasoning_effort, "reasoning_effort"
        if effort is None and self.reasoning is not None:
            effort, effort_param = self.reasoning.effort, "reasoning"
        thinking = thinking_overrides(effort, effort_param)
        _, implied = template_variables(self.chat_template_kwargs)
        for name, value in {**thinking, **implied}.items():
            overrides[name] = value
            sources[name] = "chat_template_kwargs" if name in implied else effort_param
        return overrides, sources

    def tool_request(self) -> ToolRequest | None:
        """The tools offered and which the model must call (400 for bad definitions or an unknown name)."""
        choice = self.tool_choice
        definitions = self.tools or []
        if choice is None:
            name = "auto"
        elif isinstance(choice, str):
            name = choice
        else:
            name, definitions = _named_choice(choice, definitions)
        parallel = self.parallel_tool_calls is not False
        return tool_request(definitions, name, parallel)


def _named_choice(
    choice: dict[str, Any], definitions: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """An object ``tool_choice``: one function (``{type: function, function: {name}}``), or a subset of the
    tools with a mode (``{type: allowed_tools, allowed_tools: {mode, tools}}``); 400 for anything else."""
    kind = choice.get("type")
    if kind == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return name, definitions
    elif kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if isinstance(allowed, dict) and allowed.get("mode", "auto") in ("auto", "required"):
            names = {
                (tool.get("function") or {}).get("name")
                for tool in allowed.get("tools") or []
                if isinstance(tool, dict)
            }
            kept = [tool for tool in definitions if (tool.get("function") or {}).get("name") in names]
            return str(allowed.get("mode", "auto")), kept
    raise ApiError(
        400,
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
        param="tool_choice",
    )


def request_template(source: str | None) -> InstructionTemplate | None:
    """A request's own ``instruction_template_str``, parsed (a 400 naming the line if it does not parse)."""
    if source is None:
        return None
    try:
        return InstructionTemplate("instruction_template_str", source, "custom")
    except TemplateError as exc:
        raise ApiError(400, str(exc), param="instruction_template_str") from exc


# -- responses -----------------------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens taken from the loader's cache, not evaluated again


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


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
    logprobs: CompletionLogprobs | None = None
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


class FunctionCallOut(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


# Fields a message carries only when they have something (``without_absent_parts``): a reply without
# reasoning or tool calls keeps exactly OpenAI's plain shape.
OPTIONAL_PARTS = ("reasoning_content", "reasoning", "tool_calls")


class ChatMessageOut(BaseModel):
    """The reply: ``content`` is null when it only calls tools; the reasoning comes as ``reasoning_content``
    (llama.cpp, vLLM) and ``reasoning`` (Ollama, LM Studio), both left out when there is none."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage

    def without_absent_parts(self) -> dict[str, Any]:
        """The JSON body with each message's reasoning and tool-call fields left out where they are null."""
        body = self.model_dump()
        for choice in body["choices"]:
            message = choice["message"]
            for key in OPTIONAL_PARTS:
                if message.get(key) is None:
                    message.pop(key, None)
        return body


class ChatDelta(BaseModel):
    """What one chunk adds; a tool call's first delta is ``{index, id, type, function: {name, arguments: ""}}``
    and later ones ``{index, function: {arguments}}`` with the next piece of its arguments."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
