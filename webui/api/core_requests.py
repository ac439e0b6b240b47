"""API requests as the core takes them: a conversation or prompts, ChatSettings and GenerationParams, and what
the loaded model's loader must support for them. Each protocol's request models convert themselves into these
(``to_chat_request`` ...) with the helpers below.

Nothing here computes a prompt or a sampler value: the prompt comes from Service.build_chat_prompt (through
stream_chat_reply), the sampler values from a preset, a personality and the request's fields, validated by
GenerationParams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from webui.api.errors import ApiError
from webui.core import grammar
from webui.core.characters.store import Character, CharacterError
from webui.core.chats.conversation import chat_settings_for, params_for
from webui.core.loader import LoaderError
from webui.core.params import PARAM_NAMES, GenerationParams
from webui.core.presets import DEFAULT_PRESET, PresetError
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import ChatSettings, LoadedState, Service
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


@dataclass(frozen=True)
class CoreChatRequest:
    """A reply to ``history``: how it becomes a prompt, the sampler values, and ``n`` choices."""

    history: list[ChatMessage]
    settings: ChatSettings
    params: GenerationParams
    n: int = 1
    needs: Needs = Needs()


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
    """The request's extra keys that are GenerationParams fields (unknown keys are ignored, as OpenAI's
    clients send fields of their own; ``null`` means not given, as for OpenAI's own fields)."""
    return {key: value for key, value in (extra or {}).items() if key in PARAM_NAMES and value is not None}


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

_ROLES: dict[str, str] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_message(role: str, content: str | Sequence[Mapping[str, Any]] | None) -> ChatMessage:
    """One API message as the core's ChatMessage; text parts are joined, other parts are refused."""
    if role in ("tool", "function", "ipython"):
        raise ApiError(400, f"Messages with role {role!r} (tool calls) are not supported.", param="messages")
    if role not in _ROLES:
        roles = ", ".join(_ROLES)
        raise ApiError(400, f"Messages with role {role!r} are not supported; use {roles}.", param="messages")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for part in content:
            if part.get("type") != "text":
                raise ApiError(
                    400,
                    f"Message parts of type {part.get('type')!r} are not supported; send text.",
                    param="messages",
                )
            texts.append(str(part.get("text") or ""))
        text = "\n".join(texts)
    return ChatMessage(_ROLES[role], text)  # type: ignore[arg-type]


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
