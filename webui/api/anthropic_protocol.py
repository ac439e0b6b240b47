"""Anthropic Messages wire models: the bodies of /v1/messages and /v1/messages/count_tokens, the request's
conversion into the core's (``to_chat_request``), and Anthropic's error shape.

A request's ``messages`` hold content blocks: ``text``; ``tool_use`` (an assistant's call) and ``tool_result``
(the user's answer to it); ``thinking`` / ``redacted_thinking`` (an earlier reply's reasoning, sent back within
a tool loop). ``tools`` are client tools (``{name, description, input_schema}``), offered to the model as
OpenAI-shaped functions; ``tool_choice`` and ``thinking`` map onto the core's tool choice and thinking controls.
Fields Anthropic's API has and Palabre does not use (``metadata``, ``cache_control``, ``service_tier`` ...)
are accepted and ignored; Palabre's sampler fields are accepted by their GenerationParams names, as on
/v1/chat/completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from webui.api.core_requests import (
    CoreChatRequest,
    Needs,
    base64_image,
    chat_message,
    chat_settings,
    json_grammar,
    link_tool_results,
    read_image,
    resolve_params,
    sampler_extras,
    template_variables,
    thinking_overrides,
    tool_call,
    tool_request,
    with_grammar,
)
from webui.api.errors import ApiError
from webui.api.openai_protocol import request_template
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.media import Image
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import Service, ToolCall, ToolRequest

# Anthropic's error ``type`` for each status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(error: ApiError) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}`` (also a stream's event)."""
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """Anthropic's error shape."""

    type: Literal["error"] = "error"
    error: ErrorDetail


# -- content blocks of a request -----------------------------------------------------------------------------


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")  # cache_control, citations ... are accepted and ignored


class TextBlockIn(_Block):
    type: Literal["text"]
    text: str


class ToolUseBlockIn(_Block):
    """A call an assistant turn made."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlockIn(_Block):
    """The answer to the call ``tool_use_id``, in a user turn; ``content`` is text or text blocks."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ThinkingBlockIn(_Block):
    """An earlier reply's reasoning (the signature is not checked)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlockIn(_Block):
    type: Literal["redacted_thinking"]
    data: str | None = None


class ImageBlockIn(_Block):
    """An image in a user turn: ``source`` ``{type: base64, media_type, data}`` or ``{type: url, url}``."""

    type: Literal["image"]
    source: dict[str, Any]


class OtherBlockIn(_Block):
    """A block Palabre does not take (document ...): refused with a 400 that names it."""

    type: str


_KNOWN_BLOCKS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking", "image")
# The media types Anthropic's API takes for a base64 image.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def block_image(source: Any, images: ImageSources) -> Image:
    """An image block's picture: a base64 source (its media_type one Anthropic takes), or a url source
    read as OpenAI's image URLs are (data: URLs; http(s) only where the server allows it); 400 otherwise."""
    if not isinstance(source, dict):
        raise ApiError(400, "An image block needs a source.", param="messages")
    kind = source.get("type")
    if kind == "base64":
        media_type = str(source.get("media_type") or "").lower()
        if media_type not in IMAGE_MEDIA_TYPES:
            raise ApiError(
                400,
                f"An image's media_type must be one of {', '.join(IMAGE_MEDIA_TYPES)}, not {media_type!r}.",
                param="messages",
                code="invalid_image",
            )
        return base64_image(source.get("data"), "messages")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ApiError(400, "An image's url source needs a url.", param="messages")
        return read_image(images, url, "messages")
    raise ApiError(
        400,
        f"Image sources of type {kind!r} are not supported; send base64 or url (files are not stored).",
        param="messages",
        code="invalid_image",
    )


def _block_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _KNOWN_BLOCKS else "other"


ContentBlockIn = Annotated[
    Annotated[TextBlockIn, Tag("text")]
    | Annotated[ToolUseBlockIn, Tag("tool_use")]
    | Annotated[ToolResultBlockIn, Tag("tool_result")]
    | Annotated[ThinkingBlockIn, Tag("thinking")]
    | Annotated[RedactedThinkingBlockIn, Tag("redacted_thinking")]
    | Annotated[ImageBlockIn, Tag("image")]
    | Annotated[OtherBlockIn, Tag("other")],
    Discriminator(_block_kind),
]


def _refuse_block(kind: str, where: str) -> ApiError:
    if kind == "document":
        return ApiError(400, "document content blocks are not supported yet: send text.", param="messages")
    if kind == "image":
        return ApiError(400, f"image content blocks are not supported in {where}.", param="messages")
    return ApiError(400, f"Content blocks of type {kind!r} are not supported in {where}.", param="messages")


def _result_content(block: ToolResultBlockIn, images: ImageSources) -> tuple[str, list[Image]]:
    """A tool result's content as text (text blocks joined; an error result says so) and its images."""
    content = block.content
    found: list[Image] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = []
        for part in content:
            if part.get("type") == "image":
                found.append(block_image(part.get("source"), images))
                continue
            if part.get("type") != "text":
                raise _refuse_block(str(part.get("type")), "tool results")
            parts.append(str(part.get("text") or ""))
        text = "\n".join(parts)
    return (f"Error: {text}" if block.is_error else text), found


def _user(blocks: Sequence[ContentBlockIn], images: ImageSources) -> list[ChatMessage]:
    """A user turn's blocks: its tool results as ``tool`` messages, then its text with its images (and the
    images the tool results held, which only a user message can show the model)."""
    results: list[ChatMessage] = []
    texts: list[str] = []
    shown: list[Image] = []
    for block in blocks:
        if isinstance(block, TextBlockIn):
            texts.append(block.text)
        elif isinstance(block, ImageBlockIn):
            shown.append(block_image(block.source, images))
        elif isinstance(block, ToolResultBlockIn):
            text, pictures = _result_content(block, images)
            results.append(chat_message("tool", text, tool_call_id=block.tool_use_id))
            shown.extend(pictures)
        else:
            raise _refuse_block(block.type, "user messages")
    if texts or shown or not results:
        results.append(chat_message("user", "\n".join(texts), attached=shown))
    return results


def _assistant(blocks: Sequence[ContentBlockIn]) -> list[ChatMessage]:
    """An assistant turn's blocks: its text, its reasoning (thinking) and its calls (tool_use)."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if isinstance(block, TextBlockIn):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlockIn):
            reasoning.append(block.thinking)
        elif isinstance(block, RedactedThinkingBlockIn):
            continue  # encrypted by Anthropic: nothing a local model can read
        elif isinstance(block, ToolUseBlockIn):
            calls.append(tool_call(block.id, block.name, block.input))
        else:
            raise _refuse_block(block.type, "assistant messages")
    return [chat_message("assistant", "\n".join(texts), reasoning="\n".join(reasoning), tool_calls=calls)]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[ContentBlockIn]

    def to_core(self, images: ImageSources = DATA_URLS_ONLY) -> list[ChatMessage]:
        """The core's messages: a user turn's tool results become ``tool`` messages (before its text and
        images, read through ``images``), an assistant turn's thinking its reasoning and its tool_use blocks
        its calls."""
        if isinstance(self.content, str):
            return [chat_message(self.role, self.content)]
        return _assistant(self.content) if self.role == "assistant" else _user(self.content, images)


class SystemBlockIn(_Block):
    type: Literal["text"] = "text"
    text: str


# -- tools and thinking ----------------------------------------------------------------------------------------


class ToolIn(BaseModel):
    """A client tool; a server tool (``type`` such as ``web_search_20250305``) is refused."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None

    def function(self) -> dict[str, Any]:
        """The tool as an OpenAI-shaped function definition, as the core takes tools."""
        # In OpenAI's order (name, description, parameters): templates render the definition as JSON.
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.input_schema or {"type": "object", "properties": {}}
        return {"type": "function", "function": function}


class ToolChoiceIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    def choice(self) -> str:
        """The core's tool choice: auto, required, none, or the tool's name."""
        if self.type == "tool":
            if not self.name:
                raise ApiError(
                    400, 'tool_choice {"type": "tool"} needs the tool\'s name.', param="tool_choice"
                )
            return self.name
        return {"auto": "auto", "any": "required", "none": "none"}[self.type]


class ThinkingIn(BaseModel):
    """``enabled`` (with a budget), ``adaptive`` (the model decides: on, no budget) or ``disabled``."""

    model_config = ConfigDict(extra="allow")

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)
    display: Literal["summarized", "omitted"] | None = None


class OutputFormatIn(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: Literal["json_schema"] = "json_schema"
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class OutputConfigIn(BaseModel):
    """``effort`` (a reasoning level) and ``format`` (a JSON schema the answer follows, through a grammar)."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    format: OutputFormatIn | None = None


@cache
def _upper_bound(name: str) -> int:
    """GenerationParams' largest value for ``name``."""
    return int(GenerationParams.model_json_schema()["properties"][name]["maximum"])


# -- requests ------------------------------------------------------------------------------------------------


def _add_sampler_fields(schema: dict[str, Any]) -> None:
    """Document every GenerationParams field as an optional request field (the values are checked later)."""
    properties = schema.setdefault("properties", {})
    for name, spec in GenerationParams.model_json_schema().get("properties", {}).items():
        if name not in properties:
            properties[name] = {k: v for k, v in spec.items() if k != "default"}


class CountTokensRequest(BaseModel):
    """What /v1/messages/count_tokens counts: the prompt a /v1/messages request would give the model."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_add_sampler_fields)

    model: str = Field(..., description="A model name from /v1/models.")
    messages: list[MessageIn] = Field(..., min_length=1)
    system: str | list[SystemBlockIn] | None = None
    tools: list[ToolIn] | None = Field(None, description="Client tools: {name, description, input_schema}.")
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    output_config: OutputConfigIn | None = None
    preset: str | None = Field(None, description="A Palabre preset to start from (default: Default).")
    instruction_template: str | None = Field(None, description="Template name (default: the model's).")
    instruction_template_str: str | None = Field(
        None, description="A Jinja chat template for this request (rendered in a sandbox); wins over the name"
    )
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="More variables for the template.")

    def history(self, images: ImageSources = DATA_URLS_ONLY) -> list[ChatMessage]:
        """The system prompt and the messages as the core's conversation, each tool result tied to its call
        (images read through ``images``)."""
        messages: list[ChatMessage] = []
        system = self.system
        if isinstance(system, list):
            system = "\n".join(block.text for block in system)
        if system:
            messages.append(ChatMessage("system", system))
        for message in self.messages:
            messages.extend(message.to_core(images))
        return link_tool_results(messages)

    def tool_request(self) -> ToolRequest | None:
        server_tools = [
            tool.name or str(tool.type) for tool in self.tools or () if tool.type not in (None, "custom")
        ]
        if server_tools:
            raise ApiError(
                400,
                f"Server tools are not available here: {', '.join(server_tools)}. Only client tools "
                "({name, description, input_schema}) are supported.",
                param="tools",
            )
        choice = self.tool_choice
        parallel = not (choice and choice.disable_parallel_tool_use)
        definitions = [tool.function() for tool in self.tools or ()]
        return tool_request(definitions, choice.choice() if choice else "auto", parallel)

    def shows_thinking(self) -> bool:
        """Whether the reasoning's text is sent (``display: omitted`` sends thinking blocks without it)."""
        return not (self.thinking and self.thinking.display == "omitted")

    def _overrides(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The request's sampler values by GenerationParams name, and which request field each came from."""
        overrides = sampler_extras(self.model_extra)
        sources = {key: key for key in overrides}
        effort = self.output_config.effort if self.output_config else None
        thinking = thinking_overrides(effort, "output_config.effort")
        sources.update(dict.fromkeys(thinking, "output_config"))
        if self.thinking is not None:
            thinking["enable_thinking"] = self.thinking.type != "disabled"
            sources["enable_thinking"] = "thinking"
            if self.thinking.type == "enabled" and self.thinking.budget_tokens is not None:
                budget = min(self.thinking.budget_tokens, _upper_bound("thinking_budget"))
                thinking["thinking_budget"] = budget
                sources["thinking_budget"] = "thinking.budget_tokens"
        _, implied = template_variables(self.chat_template_kwargs)
        for name, value in {**thinking, **implied}.items():
            overrides.setdefault(name, value)
        return overrides, sources

    def to_chat_request(self, service: Service, images: ImageSources = DATA_URLS_ONLY) -> CoreChatRequest:
        """The reply as the core takes it; each sampler value from this request, the preset (``preset``,
        else Default) or GenerationParams' default; the template from ``instruction_template_str``,
        ``instruction_template``, else the model's; image blocks read through ``images``."""
        tools = self.tool_request()
        history = self.history(images)
        template = request_template(self.instruction_template_str) or self.instruction_template
        settings = chat_settings(service, mode="instruct", character=None, template=template)
        overrides, sources = self._overrides()
        params = resolve_params(service, overrides, sources, preset=self.preset)
        rules = self._format_grammar(params)
        needs = Needs("output_config.format" if rules else "grammar")
        variables, _ = template_variables(self.chat_template_kwargs)
        return CoreChatRequest(history, settings, with_grammar(params, rules), 1, needs, tools, variables)

    def _format_grammar(self, params: GenerationParams) -> str | None:
        output_format = self.output_config.format if self.output_config else None
        if output_format is None:
            return None
        if params.grammar:
            raise ApiError(
                400, "Give either output_config.format or grammar, not both.", param="output_config"
            )
        return json_grammar(output_format.schema_, param="output_config")


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(..., ge=1, description="Most tokens to generate (thinking included).")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None

    def _overrides(self) -> tuple[dict[str, Any], dict[str, str]]:
        overrides, sources = super()._overrides()
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
                sources[name] = name
        if self.stop_sequences is not None:
            overrides["stop"] = self.stop_sequences
            sources["stop"] = "stop_sequences"
        # Anthropic's clients ask for a lot (32000, 64000): more than a local reply may take is the most it may.
        overrides["max_new_tokens"] = min(self.max_tokens, _upper_bound("max_new_tokens"))
        sources["max_new_tokens"] = "max_tokens"
        return overrides, sources


# -- responses -----------------------------------------------------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""  # nothing to sign: a local model's reasoning comes back as it was sent


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: Any  # an object for any well-formed call


ContentBlock = Annotated[TextBlock | ThinkingBlock | ToolUseBlock, Field(discriminator="type")]


class MessageUsage(BaseModel):
    """``input_tokens`` are the prompt's tokens evaluated for this request; those reused from the previous
    request's cache are ``cache_read_input_tokens``."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage


class CountTokensResponse(BaseModel):
    input_tokens: int


def stop_reason(finish_reason: str | None, stop_string: str | None = None) -> StopReason:
    """The engine's finish reason as Anthropic names it (``stop_sequence`` when a stop string ended it)."""
    if stop_string:
        return "stop_sequence"
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason == "tool_calls":
        return "tool_use"
    return "end_turn"


def tool_use_id(call_id: str) -> str:
    """A call's id as Anthropic's look (``toolu_...``); ids in another family's own format stay as they are."""
    return "toolu_" + call_id[len("call_") :] if call_id.startswith("call_") else call_id
