"""Wire models of the internal endpoints (``/v1/internal/*``): tokens, the chat prompt, the model, lists, stop;
and the chat-prompt request's conversion into the core's (``to_chat_request``)."""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.api.core_requests import CoreChatRequest, message_content
from webui.api.errors import InternalApiError, user_errors
from webui.core.characters.store import Character
from webui.core.chats.conversation import chat_settings_for, params_for
from webui.core.image_fetch import DATA_URLS_ONLY, ImageSources
from webui.core.params import PARAM_NAMES, GenerationParams, describe_validation_error
from webui.core.presets import DEFAULT_PRESET
from webui.core.prompts import ChatMessage, Mode
from webui.core.service import ChatSettings, Service


class TokenizeRequest(BaseModel):
    text: str


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int


class DetokenizeRequest(BaseModel):
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    text: str


class TokenCountResponse(BaseModel):
    count: int


class TextPart(BaseModel):
    """One part of an OpenAI-style message content list: text, or an image (``image_url``, as in OpenAI's
    chat requests: a data: URL, or http(s) from the hosts the server allows)."""

    type: Literal["text", "image_url"] = "text"
    text: str = ""
    image_url: dict[str, Any] | str | None = None


class PromptMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")

    def to_core(self, images: ImageSources = DATA_URLS_ONLY) -> ChatMessage:
        """The core's message: the text parts joined, the image parts read through ``images``."""
        if isinstance(self.content, str) or all(part.type == "text" for part in self.content):
            return ChatMessage(self.role, self.text())
        parts = [part.model_dump(exclude_none=True) for part in self.content]
        text, found = message_content(parts, images)
        return ChatMessage(self.role, text, images=found)


class ChatPromptRequest(BaseModel):
    """A conversation and how to render it; any GenerationParams field may be added by name (it decides
    truncation: truncation_length, max_new_tokens)."""

    model_config = ConfigDict(extra="allow")

    messages: list[PromptMessage]
    mode: Mode = "instruct"
    character: str | None = Field(default=None, description="a personality name (see GET characters)")
    instruction_template: str | None = Field(
        default=None, description="template name; default: the loaded model's detected template"
    )
    system_message: str | None = None
    user_name: str | None = None
    character_name: str | None = Field(default=None, description="chat modes, when no character is given")
    context: str | None = Field(
        default=None, description="chat-mode persona text, when no character is given"
    )
    chat_instruct_command: str | None = None
    continue_last: bool = Field(default=False, description="extend the last assistant message")
    impersonate: bool = Field(default=False, description="write the user's next message instead")
    preset: str | None = Field(default=None, description="sampler preset (default: Default)")

    def to_chat_request(self, service: Service, images: ImageSources = DATA_URLS_ONLY) -> CoreChatRequest:
        """What the Chat tab would use for these fields (image parts read through ``images``): a personality
        shapes the prompt as on the page, and explicitly given prompt fields win. Each sampler value comes from the first of: the personality, this
        request's field, the preset (``preset``, else Default), GenerationParams' default (unlike OpenAI's
        requests, the personality's own sampler settings win here: kept as it was answered before)."""
        character = self._character(service)
        base = ChatSettings()
        settings = chat_settings_for(
            character,
            mode=self.mode,
            user_name=self.user_name,
            template=self.instruction_template,
            chat_instruct_command=self.chat_instruct_command or base.chat_instruct_command,
        )
        if self.system_message is not None:
            settings = replace(settings, system_message=self.system_message)
        if character is None and self.character_name is not None:
            settings = replace(settings, character_name=self.character_name)
        if character is None and self.context is not None:
            settings = replace(settings, context=self.context)
        params = request_params(service, self.preset, dict(self.model_extra or {}))
        history = [m.to_core(images) for m in self.messages]
        return CoreChatRequest(history, settings, params_for(character, params))

    def _character(self, service: Service) -> Character | None:
        if not self.character:
            return None
        store = service.characters
        if store is None:
            raise InternalApiError(400, "Personalities are not available in this server.")
        name = self.character
        return user_errors(lambda: store.load(name), status=404)


def request_params(service: Service, preset: str | None, extras: dict[str, Any]) -> GenerationParams:
    """The preset's values with the sampler fields the request names; unknown names are refused."""
    unknown = sorted(set(extras) - PARAM_NAMES)
    if unknown:
        hints = [difflib.get_close_matches(name, sorted(PARAM_NAMES), n=1) for name in unknown]
        hint = "".join(f" (did you mean {h[0]!r}?)" for h in hints if h)
        raise InternalApiError(400, f"Unknown field(s): {', '.join(unknown)}{hint}.")
    base = user_errors(lambda: service.presets.load(preset or DEFAULT_PRESET).params)
    try:
        return base.overlay(extras)
    except ValidationError as exc:
        raise InternalApiError(400, f"Invalid sampler parameters: {describe_validation_error(exc)}") from exc


class ChatPromptResponse(BaseModel):
    prompt: str
    prompt_tokens: int
    dropped_messages: int = Field(description="old messages left out so the prompt fits the context")
    stop_strings: list[str]
    template: str | None = Field(description="the instruction template used (None in chat mode)")
    extensions: list[str] = Field(
        default_factory=list, description="the enabled extensions applied to the prompt, in hook order"
    )
    warnings: list[str] = Field(
        default_factory=list, description="extensions that failed while the prompt was built (each named)"
    )


class LoadedModelInfo(BaseModel):
    """One of the models loaded now."""

    name: str
    loader: str
    page: bool = Field(description="the page's model (the Model tab's choice; requests naming none get it)")
    activity: str = Field(description="idle, generating, loading or unloading")
    memory_bytes: int = Field(description="what it holds of the memory budget: its fit estimate (0: unknown)")
    gpu_bytes: int = Field(description="of that, on a GPU")
    context_length: int | None = None
    slots: int = Field(
        default=1, description="generations it runs at once (the llama.cpp loader's parallel slots)"
    )
    template: str | None = None


class ModelInfo(BaseModel):
    """The page's model (the fields before ``models``), and every loaded model."""

    loaded: bool
    name: str | None = None
    loader: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    context_length: int | None = None
    template: str | None = None
    template_reason: str | None = None
    honoured_params: list[str] = Field(default_factory=list)
    can_tokenize: bool | None = None
    streams_logprobs: bool | None = None
    sees_images: bool | None = None  # requests may send images (None: a server that did not say)
    load_seconds: float | None = None
    models: list[LoadedModelInfo] = Field(
        default_factory=list, description="every loaded model, the page's first"
    )
    memory_budget_bytes: int | None = Field(
        default=None, description="what the loaded models may hold together (--model-memory-budget)"
    )
    loads: int = Field(default=0, description="successful loads since the server started")
    evictions: int = Field(default=0, description="models unloaded to make room for another")


class LoadModelRequest(BaseModel):
    model: str = Field(min_length=1, description="a model name from GET /v1/models (or the models folder)")
    loader: str | None = Field(default=None, description="default: inferred from the model's files")
    settings: dict[str, Any] = Field(default_factory=dict, description="loader settings, e.g. n_ctx")
    instruction_template: str | None = None
    force: bool = Field(default=False, description="load even if estimated not to fit in memory")


class LoadModelResponse(ModelInfo):
    message: str


class UnloadModelRequest(BaseModel):
    model: str | None = Field(default=None, description="the loaded model to unload (default: the page's)")


class UnloadModelResponse(BaseModel):
    unloaded: str | None


class PresetInfo(BaseModel):
    name: str
    user: bool
    settings: dict[str, Any] = Field(description="the values that differ from the defaults")
    error: str | None = None


class PresetList(BaseModel):
    presets: list[PresetInfo]


class TemplateList(BaseModel):
    templates: list[str]
    detected: str | None = Field(description="the loaded model's template")


class CharacterInfo(BaseModel):
    name: str
    user: bool


class CharacterList(BaseModel):
    characters: list[CharacterInfo]


class StopRequest(BaseModel):
    id: str | None = Field(
        default=None,
        description="one request's id; default: every API generation (without an admin key: every one of "
        "this key's own; another client's id cancels nothing)",
    )


class StopResponse(BaseModel):
    cancelled: int


class QueueEntry(BaseModel):
    id: str = Field(description="the engine's id for this generation")
    source: Literal["api", "page"]
    request_id: str | None = Field(
        description="the API request's id (for POST stop); None for the page, and, without an admin key, for "
        "another client's request"
    )
    position: int = Field(description="0: running now; 1, 2, ...: waiting, in the order they will run")
    state: Literal["running", "queued"]
    waited_s: float = Field(description="seconds since it was submitted")
    model: str = Field("", description="the model it runs on (each loaded model runs its own generations)")
    mine: bool = Field(False, description="True for a request sent with the same key as this one")


class QueueResponse(BaseModel):
    activity: Literal["idle", "generating", "loading", "unloading"]
    model: str | None = Field(description="the page's model")
    running: QueueEntry | None = Field(description="the oldest running generation")
    running_jobs: list[QueueEntry] = Field(
        default_factory=list,
        description="every running generation, oldest first (several with --setting parallel=N)",
    )
    queued: list[QueueEntry]
