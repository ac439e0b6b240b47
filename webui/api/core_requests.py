"""API requests as the core takes them: a conversation or prompts, ChatSettings and GenerationParams, and what
the loaded model's loader must support for them. Each protocol's request models convert themselves into these
(``to_chat_request`` ...) with the helpers below.

Nothing here computes a prompt or a sampler value: the prompt comes from Service.build_chat_prompt (through
stream_chat_reply), the sampler values from a preset, a personality and the request's fields, validated by
GenerationParams.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from webui.api.errors import ApiError
from webui.api.streams import new_call_id
from webui.core import grammar
from webui.core.characters.store import Character, CharacterError
from webui.core.chats.conversation import chat_settings_for, params_for
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.loader import LoaderError
from webui.core.media import Image, ImageError, image_from_base64
from webui.core.params import PARAM_NAMES, PER_REQUEST_NAMES, GenerationParams
from webui.core.presets import DEFAULT_PRESET, PresetError
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import (
    ChatSettings,
    LoadedState,
    Service,
    ToolCall,
    ToolRequest,
    ToolRequestError,
)
from webui.core.templates.store import InstructionTemplate, TemplateError

CompletionPrompt = str | list[str] | list[int] | list[list[int]]


@dataclass(frozen=True)
class Needs:
    """What a request asks of the loaded model's loader, and the request field to name when it cannot."""

    grammar_param: str = "grammar"
    logprobs: bool = False

    def check(self, state: LoadedState, params: GenerationParams) -> None:
        """400 for what the loaded model's loader cannot do."""
        check_supported(
            state, grammar=bool(params.grammar), logprobs=self.logprobs, grammar_param=self.grammar_param
        )


# The most images one request may carry (all its messages together): more is a 400 naming this limit.
MAX_REQUEST_IMAGES = 16


@dataclass(frozen=True)
class CoreChatRequest:
    """A reply to ``history``: how it becomes a prompt, the sampler values, and ``n`` choices; the tools
    offered to the model and more template variables (a request's chat_template_kwargs). At most
    MAX_REQUEST_IMAGES images in all its messages (a 400 otherwise)."""

    history: list[ChatMessage]
    settings: ChatSettings
    params: GenerationParams
    n: int = 1
    needs: Needs = Needs()
    tools: ToolRequest | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = sum(len(message.images) for message in self.history)
        if count > MAX_REQUEST_IMAGES:
            raise ApiError(
                400,
                f"A request may carry at most {MAX_REQUEST_IMAGES} images; this one has {count}.",
                param="messages",
                code="too_many_images",
            )


@dataclass(frozen=True)
class CoreCompletionRequest:
    """Raw text continued: ``n`` choices of each prompt (text, or token ids turned back into text once the
    model is loaded), optionally echoing the prompt before the generated text."""

    prompt: CompletionPrompt
    params: GenerationParams
    n: int = 1
    echo: bool = False
    needs: Needs = Needs()

    def prompts(self, state: LoadedState) -> list[str]:
        """The prompts as text; token ids are turned back into text with the model's tokenizer."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise ApiError(400, "prompt is empty.", param="prompt")
        if all(isinstance(item, str) for item in prompt):
            return [str(item) for item in prompt]
        lists: list[list[int]] = (
            [list(prompt)] if all(isinstance(item, int) for item in prompt) else list(prompt)  # type: ignore[arg-type]
        )
        try:
            return [state.model.detokenize(ids) for ids in lists]
        except (LoaderError, ValueError, IndexError, OverflowError) as exc:  # ids outside the vocabulary
            message = f"The prompt's token ids are not in the model's vocabulary: {exc}"
            raise ApiError(400, message, param="prompt") from exc


CoreRequest = CoreChatRequest | CoreCompletionRequest


# -- sampler values: request field, then personality, then preset, then GenerationParams' defaults ----------


def resolve_params(
    service: Service,
    overrides: Mapping[str, Any],
    sources: Mapping[str, str],
    *,
    preset: str | None = None,
    character: Character | None = None,
) -> GenerationParams:
    """A request's sampler values, each from the first of: the request's own field (``overrides``; a bad
    value is a 400 naming the request field ``sources`` gives), the personality, the preset (Default unless
    named), GenerationParams' default."""
    return apply_overrides(base_params(service, preset, character), overrides, sources)


def load_character(service: Service, name: str | None) -> Character | None:
    """The personality a request names (None for none); 404 for an unknown one."""
    if not name:
        return None
    if service.characters is None:
        raise ApiError(400, "Personalities are not available on this server.", param="character")
    try:
        return service.characters.load(name)
    except CharacterError as exc:
        raise ApiError(404, str(exc), param="character", code="character_not_found") from exc


def base_params(service: Service, preset: str | None, character: Character | None) -> GenerationParams:
    """The preset (Default unless named) with the personality's own sampler settings on top."""
    try:
        params = service.presets.load(preset or DEFAULT_PRESET).params
    except PresetError as exc:
        raise ApiError(400, str(exc), param="preset", code="preset_not_found") from exc
    try:
        return params_for(character, params)
    except ValidationError as exc:
        raise ApiError(400, f"The personality's sampler settings are invalid: {exc}") from exc


def apply_overrides(
    base: GenerationParams, overrides: Mapping[str, Any], sources: Mapping[str, str] | None = None
) -> GenerationParams:
    """``base`` with the request's values; a bad value is a 400 naming the request's own field."""
    try:
        return base.overlay(dict(overrides))
    except ValidationError as exc:
        problems = []
        first: str | None = None
        for item in exc.errors():
            target = str(item["loc"][0]) if item["loc"] else ""
            name = (sources or {}).get(target, target)
            first = first or name
            problems.append(f"{name}: {item['msg']}")
        raise ApiError(400, "Invalid parameter " + "; ".join(problems), param=first) from exc


def sampler_extras(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's extra keys that are GenerationParams sampler fields (unknown keys are ignored, as OpenAI's
    clients send fields of their own, and so are the logprob fields, which each protocol asks for in its own
    words; ``null`` means not given, as for OpenAI's own fields)."""
    return {
        key: value
        for key, value in (extra or {}).items()
        if key in PARAM_NAMES and key not in PER_REQUEST_NAMES and value is not None
    }


def with_grammar(params: GenerationParams, rules: str | None) -> GenerationParams:
    """``params`` constrained by ``rules`` (unchanged without)."""
    return params.overlay({"grammar": rules}) if rules else params


def json_grammar(schema: Mapping[str, Any] | None, param: str = "response_format") -> str:
    """A GBNF grammar for replies that are a JSON object, following ``schema`` when one is given; a schema
    that cannot be converted is a 400 naming ``param``."""
    try:
        return grammar.json_grammar(schema)
    except grammar.GrammarError as exc:
        raise ApiError(400, str(exc), param=param) from exc


def check_supported(state: LoadedState, *, grammar: bool, logprobs: bool, grammar_param: str) -> None:
    """400 for what the loaded model's loader cannot do (its capabilities say whether it honours a grammar)."""
    capabilities = state.capabilities
    if grammar and "grammar" not in capabilities.honoured_params:
        raise ApiError(
            400,
            f"The {state.loader} loader cannot constrain replies with a grammar, so {grammar_param} "
            "cannot be honoured.",
            param=grammar_param,
        )
    if logprobs and not capabilities.streams_logprobs:
        raise ApiError(400, f"logprobs are not supported by this loader ({state.loader}).", param="logprobs")


# -- conversations -------------------------------------------------------------------------------------------

_ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def message_text(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """A message's content as text: text parts are joined, other parts are refused."""
    text, _ = message_content(content, None)
    return text


def message_content(
    content: str | Sequence[Mapping[str, Any]] | None, images: ImageSources | None = DATA_URLS_ONLY
) -> tuple[str, tuple[Image, ...]]:
    """A message's content as text and images: text parts are joined; ``image_url`` parts (OpenAI's
    ``{"url", "detail"}``, or the URL alone as some clients send it) are read through ``images`` (None:
    refused); other parts are refused. A bad image is a 400 saying what is wrong with it."""
    if content is None:
        return "", ()
    if isinstance(content, str):
        return content, ()
    texts: list[str] = []
    found: list[Image] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url" and images is not None:
            found.append(read_image(images, image_url_of(part.get("image_url")), "messages"))
        else:
            offered = "text or image_url" if images is not None else "text"
            raise ApiError(
                400, f"Message parts of type {kind!r} are not supported; send {offered}.", param="messages"
            )
    return "\n".join(texts), tuple(found)


def image_url_of(value: Any) -> str:
    """The URL of an ``image_url`` part: ``{"url": ...}`` or the URL itself; 400 when there is none."""
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str) or not url.strip():
        raise ApiError(400, "An image_url part needs a url (a base64 data: URL).", param="messages")
    return url


def read_image(images: ImageSources, url: str, param: str) -> Image:
    """The image at ``url`` (a data: URL, or http(s) where the server allows it); 400 naming why not."""
    try:
        return images.read(url)
    except ImageError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_image") from exc


def base64_image(data: Any, param: str) -> Image:
    """An image sent as raw base64 text (Ollama's ``images``, Anthropic's base64 source); 400 if bad."""
    if not isinstance(data, str):
        raise ApiError(400, "An image must be base64 text.", param=param, code="invalid_image")
    try:
        return image_from_base64(data)
    except ImageError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_image") from exc


def chat_message(
    role: str,
    content: str | Sequence[Mapping[str, Any]] | None,
    *,
    reasoning: str = "",
    tool_calls: Sequence[ToolCall] = (),
    tool_call_id: str = "",
    name: str = "",
    images: ImageSources | None = DATA_URLS_ONLY,
    attached: Sequence[Image] = (),
) -> ChatMessage:
    """One API message as the core's ChatMessage; text parts are joined, image parts read through
    ``images`` (``attached``: images sent beside the content, as Ollama's ``images``), other parts refused.

    An assistant message may carry its reasoning and tool calls; a ``tool`` message answers the call
    ``tool_call_id`` of the tool ``name``. Only user messages may hold images."""
    if role not in _ROLES:
        roles = ", ".join(_ROLES)
        raise ApiError(400, f"Messages with role {role!r} are not supported; use {roles}.", param="messages")
    core_role = _ROLES[role]
    if tool_calls and core_role != "assistant":
        raise ApiError(400, f"Only assistant messages make tool calls, not {role!r} ones.", param="messages")
    text, found = message_content(content, images)
    shown = (*found, *attached)
    if shown and core_role != "user":
        raise ApiError(
            400,
            f"Only user messages may hold images, not {role!r} ones.",
            param="messages",
            code="invalid_image",
        )
    return ChatMessage(
        core_role,  # type: ignore[arg-type]
        text,
        reasoning=reasoning if core_role == "assistant" else "",
        tool_calls=tuple(tool_calls),
        tool_call_id=tool_call_id if core_role == "tool" else "",
        name=name if core_role == "tool" else "",
        images=shown,
    )


def tool_call(call_id: str | None, name: str, arguments: Any) -> ToolCall:
    """A call from a request's history: ``arguments`` as JSON text (OpenAI) or as an object (Ollama)."""
    if not name:
        raise ApiError(400, "A tool call in messages has no function name.", param="messages")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
    return ToolCall(call_id or new_call_id(), name, text or "{}")


def link_tool_results(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The history with each tool result tied to the call it answers: the tool's name looked up from the
    call's id (OpenAI sends only the id), or the id from the earliest unanswered call of that name (Ollama
    sends only the name); a result that names neither answers the earliest unanswered call."""
    calls: dict[str, str] = {}  # id -> name
    unanswered: list[ToolCall] = []
    linked: list[ChatMessage] = []
    for message in history:
        if message.tool_calls:
            for call in message.tool_calls:
                calls[call.id] = call.name
                unanswered.append(call)
        if message.role == "tool":
            call_id, name = message.tool_call_id, message.name
            if call_id and not name:
                name = calls.get(call_id, "")
            if not call_id:
                match = next((c for c in unanswered if not name or c.name == name), None)
                if match is not None:
                    call_id, name = match.id, name or match.name
            unanswered = [call for call in unanswered if call.id != call_id]
            message = ChatMessage("tool", message.content, tool_call_id=call_id, name=name)
        linked.append(message)
    return linked


def tool_request(
    definitions: Sequence[Mapping[str, Any]] | None, choice: str = "auto", parallel: bool = True
) -> ToolRequest | None:
    """The tools a request offers, checked (None for none); a bad definition or choice is a 400."""
    try:
        return ToolRequest.build(list(definitions or ()), choice, parallel)
    except ToolRequestError as exc:
        param = "tool_choice" if "tool_choice" in str(exc) else "tools"
        raise ApiError(400, str(exc), param=param) from exc


# The values ``reasoning_effort`` takes (OpenAI's, and Ollama's ``think`` levels); none turns thinking off and
# minimal is the lowest level a template knows, as Ollama maps them.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def thinking_overrides(effort: str | None, param: str = "reasoning_effort") -> dict[str, Any]:
    """GenerationParams values for a requested reasoning effort: ``none`` turns thinking off, a level turns
    it on at that level (``minimal`` is ``low``); nothing for None. A value outside EFFORTS is a 400."""
    if effort is None:
        return {}
    level = effort.strip().lower()
    if level not in EFFORTS:
        raise ApiError(400, f"{param} {effort!r} is not one of: {', '.join(EFFORTS)}.", param=param)
    if level == "none":
        return {"enable_thinking": False}
    return {"enable_thinking": True, "reasoning_effort": "low" if level == "minimal" else level}


# Template variables the request sets through its own fields: chat_template_kwargs may not replace them.
_RENDER_VARIABLES = ("messages", "add_generation_prompt", "tools")


def template_variables(kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request's chat_template_kwargs as template variables, and the GenerationParams values they imply
    (an ``enable_thinking`` switch there also turns thinking on or off). 400 for a variable the request
    sets through its own fields (messages, add_generation_prompt, tools)."""
    variables = dict(kwargs or {})
    taken = [name for name in _RENDER_VARIABLES if name in variables]
    if taken:
        raise ApiError(
            400,
            f"chat_template_kwargs cannot set {', '.join(taken)}: send them as the request's own fields.",
            param="chat_template_kwargs",
        )
    implied: dict[str, Any] = {}
    switch = variables.get("enable_thinking")
    if isinstance(switch, bool):
        implied["enable_thinking"] = switch
    return variables, implied


def chat_settings(
    service: Service,
    *,
    mode: Mode,
    character: Character | None,
    template: str | InstructionTemplate | None,
    user_name: str | None = None,
) -> ChatSettings:
    """How the conversation becomes a prompt; an unknown template name is a 400 here, not at build time."""
    if isinstance(template, str):
        try:
            service.templates.get(template)
        except TemplateError as exc:
            raise ApiError(400, str(exc), param="instruction_template") from exc
    name = template if isinstance(template, str) else None
    settings = chat_settings_for(character, mode=mode, user_name=user_name, template=name)
    if isinstance(template, InstructionTemplate):
        settings = ChatSettings(**{**settings.__dict__, "template": template})
    return settings
