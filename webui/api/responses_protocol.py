"""OpenAI Responses wire models: the body of POST /v1/responses, its conversion into the core's request
(``to_chat_request``), and the response object with its output items.

The API is served stateless: ``store`` is accepted and nothing is kept, so ``previous_response_id`` and
``item_reference`` items are refused with a 400 saying so (a client sends the whole conversation as ``input``
items, as it does with ``store: false``). ``input`` items become the core's ChatMessages: messages (roles
user, system, developer, assistant; text parts), ``function_call`` items as the assistant's tool calls,
``function_call_output`` items as tool results, and ``reasoning`` items as the reasoning of the assistant turn
that follows them (the prompt builder sends it back only within the current tool loop).

Sampler fields beyond the Responses API's own are accepted by their GenerationParams names, as on
/v1/chat/completions, with Palabre's extras there (``preset``, ``character``, ``instruction_template`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.api.core_requests import (
    CoreChatRequest,
    Needs,
    chat_message,
    chat_settings,
    json_grammar,
    link_tool_results,
    load_character,
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
from webui.api.openai_protocol import _add_sampler_fields, null_means_default, request_template
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.media import Image
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import Service, ToolCall, ToolRequest

# -- requests ------------------------------------------------------------------------------------------------


class ReasoningConfig(BaseModel):
    """``reasoning: {effort, summary}``: ``effort`` none turns thinking off, a level turns it on; the
    reasoning always comes back whole as the reasoning item's ``reasoning_text`` (``summary`` is accepted)."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    summary: str | None = None


class TextFormat(BaseModel):
    """``text.format``: ``text``, ``json_object``, or ``json_schema`` with its ``name`` and ``schema``
    (enforced with a grammar where the loader honours one)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None


# The ``include`` value that asks for the answer tokens' logprobs.
LOGPROBS_INCLUDE = "message.output_text.logprobs"


class ResponsesRequest(BaseModel):
    """POST /v1/responses; extra keys are GenerationParams fields by name."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_add_sampler_fields)

    model: str = Field("", description='A model name from /v1/models; empty or "default" = the loaded model.')
    input: str | list[dict[str, Any]] = Field(
        ..., description="A user message, or items: messages, function_call, function_call_output, reasoning."
    )
    instructions: str | None = Field(None, description="A system message put before the input.")
    tools: list[dict[str, Any]] | None = Field(
        None, description="Function tools: {type: function, name, description, parameters, strict}."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description='"none", "auto" (the default), "required", or {type: function, name}.'
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether one reply may make several calls.")
    max_output_tokens: int | None = Field(
        None, ge=1, description="The most tokens to generate, reasoning included."
    )
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="With the logprobs included: this many most likely tokens at each position.",
    )
    include: list[str] | None = Field(
        None,
        description='"message.output_text.logprobs" returns each answer token\'s logprob; others are ignored.',
    )
    reasoning: ReasoningConfig | None = Field(None, description="{effort}: none turns thinking off.")
    text: TextConfig | None = Field(None, description="{format: {type: text | json_object | json_schema}}.")
    stream: bool = False
    store: bool | None = Field(None, description="Accepted; nothing is stored (the API is stateless).")
    previous_response_id: str | None = Field(None, description="Not supported: responses are not stored.")
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: str | None = None
    # Palabre's extras, as on /v1/chat/completions.
    preset: str | None = Field(None, description="A Palabre preset to start from (default: Default).")
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

    _nulls = null_means_default("stream", "mode")

    def to_chat_request(self, service: Service, images: ImageSources = DATA_URLS_ONLY) -> CoreChatRequest:
        """The reply as the core takes it: the conversation from ``instructions`` and ``input`` (its
        ``input_image`` parts read through ``images``), the tools, and the sampler values (request field,
        personality, preset, GenerationParams' default)."""
        if self.previous_response_id:
            raise ApiError(
                400,
                "previous_response_id is not supported: this server does not store responses. "
                "Send the whole conversation as input items instead.",
                param="previous_response_id",
            )
        tools = self.tool_request()
        history = link_tool_results(conversation(self.instructions, self.input, images))
        character = load_character(service, self.character)
        settings = chat_settings(
            service,
            mode=self.mode,
            character=character,
            template=request_template(self.instruction_template_str) or self.instruction_template,
            user_name=self.user_name,
        )
        overrides, sources = self._overrides()
        params = resolve_params(service, overrides, sources, preset=self.preset, character=character)
        params, needs = self._constrained(params)
        if self.wants_logprobs:
            params = params.overlay({"logprobs": self.top_logprobs or 0})
            needs = Needs(needs.grammar_param, logprobs=True)
        variables, _ = template_variables(self.chat_template_kwargs)
        return CoreChatRequest(history, settings, params, 1, needs, tools, variables)

    @property
    def wants_logprobs(self) -> bool:
        """Whether the answer's tokens come with their logprobs (``include`` names them, as OpenAI wants)."""
        return LOGPROBS_INCLUDE in (self.include or ())

    def _overrides(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The request's sampler values by GenerationParams name, and which request field each came from."""
        overrides = sampler_extras(self.model_extra)
        sources = {key: key for key in overrides}
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
                sources[name] = name
        if self.max_output_tokens is not None:
            overrides["max_new_tokens"] = self.max_output_tokens
            sources["max_new_tokens"] = "max_output_tokens"
        effort = self.reasoning.effort if self.reasoning else None
        thinking = thinking_overrides(effort, "reasoning.effort")
        _, implied = template_variables(self.chat_template_kwargs)
        for name, value in {**thinking, **implied}.items():
            overrides[name] = value
            sources[name] = "chat_template_kwargs" if name in implied else "reasoning.effort"
        return overrides, sources

    def _constrained(self, params: GenerationParams) -> tuple[GenerationParams, Needs]:
        """``params`` with the grammar ``text.format`` asks for, and what the loader must support."""
        text_format = self.text.format if self.text else None
        if text_format is None or text_format.type == "text":
            return params, Needs()
        if params.grammar:
            raise ApiError(400, "Give either text.format or grammar, not both.", param="text.format")
        if text_format.type == "json_schema" and text_format.schema_ is None:
            raise ApiError(400, "text.format json_schema needs a schema.", param="text.format")
        rules = json_grammar(text_format.schema_, param="text.format")
        return with_grammar(params, rules), Needs("text.format")

    def tool_request(self) -> ToolRequest | None:
        """The function tools offered (in the core's shape) and which the model must call; 400 for other
        tool types, bad definitions or an unknown name."""
        definitions = function_tools(self.tools or [])
        choice = self.tool_choice
        if choice is None:
            name = "auto"
        elif isinstance(choice, str):
            name = choice
        else:
            name, definitions = _named_choice(choice, definitions)
        return tool_request(definitions, name, self.parallel_tool_calls is not False)


def function_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Responses' flat function tools as the core takes them (``{type: function, function: {...}}``); 400
    naming the tool types that are not functions (web search, file search, MCP ... run on OpenAI's side)."""
    others = sorted({str(tool.get("type")) for tool in tools if tool.get("type") != "function"})
    if others:
        raise ApiError(
            400,
            f"Only function tools are supported; this request has tools of type: {', '.join(others)}.",
            param="tools",
        )
    return [
        {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in tools
    ]


def _named_choice(
    choice: Mapping[str, Any], definitions: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """An object ``tool_choice``: one function (``{type: function, name}``), or a subset of the tools with a
    mode (``{type: allowed_tools, mode, tools}``); 400 for anything else."""
    kind = choice.get("type")
    if kind == "function" and isinstance(choice.get("name"), str) and choice["name"]:
        return str(choice["name"]), definitions
    if kind == "allowed_tools" and choice.get("mode", "auto") in ("auto", "required"):
        listed = choice.get("tools")
        names = (
            {tool.get("name") for tool in listed if isinstance(tool, Mapping)}
            if isinstance(listed, list)
            else set()
        )
        kept = [tool for tool in definitions if tool["function"].get("name") in names]
        return str(choice.get("mode", "auto")), kept
    raise ApiError(
        400,
        'tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}.',
        param="tool_choice",
    )


# -- input items -----------------------------------------------------------------------------------------------


class _Item(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[dict[str, Any]]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    arguments: str | dict[str, Any] = "{}"


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(..., min_length=1)
    output: str | list[dict[str, Any]]


class ReasoningItem(_Item):
    type: Literal["reasoning"]
    summary: list[dict[str, Any]] = []
    content: list[dict[str, Any]] | None = None


_ITEMS: dict[str, type[_Item]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
}
# Parts a message's (or a tool output's) text is read from.
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")


def parts_text(parts: str | Sequence[Mapping[str, Any]], where: str) -> str:
    """The text of a content list (text parts joined); 400 naming ``where`` for images, files, audio."""
    if isinstance(parts, str):
        return parts
    texts: list[str] = []
    for part in parts:
        kind = part.get("type")
        if kind not in _TEXT_PARTS:
            raise ApiError(
                400, f"{where}: content parts of type {kind!r} are not supported; send text.", param="input"
            )
        texts.append(str(part.get("text") or part.get("refusal") or ""))
    return "\n".join(texts)


def parts_content(
    parts: str | Sequence[Mapping[str, Any]], where: str, images: ImageSources
) -> tuple[str, tuple[Image, ...]]:
    """A user message's text and images: ``input_image`` parts (``image_url`` a data: URL, or http(s)
    where the server allows it) read through ``images``; a ``file_id`` is a 400 (no files are stored)."""
    if isinstance(parts, str):
        return parts, ()
    texts: list[Mapping[str, Any]] = []
    found: list[Image] = []
    for part in parts:
        if part.get("type") != "input_image":
            texts.append(part)
            continue
        url = part.get("image_url")
        if isinstance(url, Mapping):  # some clients send {"url": ...} as in chat completions
            url = url.get("url")
        if not url and part.get("file_id"):
            raise ApiError(
                400,
                f"{where}: input_image file_id is not supported: this server does not store files. "
                "Send the image as a base64 data: URL in image_url.",
                param="input",
                code="invalid_image",
            )
        if not isinstance(url, str) or not url.strip():
            raise ApiError(400, f"{where}: input_image needs an image_url.", param="input")
        found.append(read_image(images, url, "input"))
    return parts_text(texts, where), tuple(found)


def _parse_item(index: int, raw: Mapping[str, Any]) -> _Item:
    where = f"input[{index}]"
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "item_reference":
        raise ApiError(
            400,
            f"{where}: item_reference is not supported: this server does not store items. Send the item itself.",
            param="input",
        )
    model = _ITEMS.get(str(kind))
    if model is None:
        kinds = ", ".join(_ITEMS)
        raise ApiError(
            400, f"{where}: items of type {kind!r} are not supported; send {kinds}.", param="input"
        )
    try:
        return model.model_validate({**raw, "type": kind})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ApiError(400, f"{where} ({kind}): {problems}", param="input") from exc


@dataclass
class _AssistantTurn:
    """An assistant turn being put together from consecutive items: its reasoning, text and calls."""

    reasoning: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    @property
    def begun(self) -> bool:
        return bool(self.text or self.calls)

    def message(self) -> ChatMessage:
        return chat_message(
            "assistant",
            "\n".join(self.text),
            reasoning="\n".join(self.reasoning),
            tool_calls=self.calls,
        )


def conversation(
    instructions: str | None,
    items: str | Sequence[Mapping[str, Any]],
    images: ImageSources = DATA_URLS_ONLY,
) -> list[ChatMessage]:
    """The conversation ``instructions`` and ``input`` make: consecutive reasoning, assistant message and
    function_call items form one assistant turn (reasoning first), a function_call_output is a tool result;
    a user message's ``input_image`` parts are read through ``images``."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append(chat_message("system", instructions))
    if isinstance(items, str):
        return [*messages, chat_message("user", items)]
    if not items:
        raise ApiError(400, "input is empty: send a message.", param="input")
    turn = _AssistantTurn()

    def close_turn() -> None:
        nonlocal turn
        if turn.begun:  # reasoning alone (a reply cut short) has nothing to send back
            messages.append(turn.message())
        turn = _AssistantTurn()

    for index, raw in enumerate(items):
        item = _parse_item(index, raw)
        where = f"input[{index}]"
        if isinstance(item, ReasoningItem):
            if turn.begun:
                close_turn()
            parts = item.content if item.content else item.summary
            turn.reasoning.append(parts_text(parts, where))
        elif isinstance(item, FunctionCallItem):
            turn.calls.append(tool_call(item.call_id, item.name, item.arguments))
        elif isinstance(item, MessageItem) and item.role == "assistant":
            turn.text.append(parts_text(item.content, where))
        elif isinstance(item, MessageItem) and item.role == "user":
            close_turn()
            text, shown = parts_content(item.content, where, images)
            messages.append(chat_message("user", text, attached=shown))
        elif isinstance(item, MessageItem):
            close_turn()
            messages.append(chat_message(item.role, parts_text(item.content, where)))
        elif isinstance(item, FunctionCallOutputItem):
            close_turn()
            messages.append(ChatMessage("tool", parts_text(item.output, where), tool_call_id=item.call_id))
    close_turn()
    return messages


# -- the response --------------------------------------------------------------------------------------------


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = []
    logprobs: list[Any] = []


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str = ""


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class ReasoningOutput(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = []
    content: list[ReasoningText] = []
    status: ItemStatus = "in_progress"


class MessageOutput(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "in_progress"
    content: list[OutputText] = []


class FunctionCallOutput(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str = ""
    status: ItemStatus = "in_progress"


OutputItem = ReasoningOutput | MessageOutput | FunctionCallOutput


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """The response: its ``output`` items in the order the model made them (reasoning, message, calls)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = []
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: dict[str, Any] = {}
    store: bool = False
    temperature: float | None = None
    text: dict[str, Any] = {}
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = []
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = {}
