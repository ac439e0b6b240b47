"""Wire models of the internal endpoints (``/v1/internal/*``): tokens, the chat prompt, the model, lists, stop."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from webui.core.prompts import Mode


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
    """One part of an OpenAI-style message content list; only text parts make a prompt."""

    type: Literal["text"] = "text"
    text: str


class PromptMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


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


class ModelInfo(BaseModel):
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
    load_seconds: float | None = None


class LoadModelRequest(BaseModel):
    model: str = Field(min_length=1, description="a model name from GET /v1/models (or the models folder)")
    loader: str | None = Field(default=None, description="default: inferred from the model's files")
    settings: dict[str, Any] = Field(default_factory=dict, description="loader settings, e.g. n_ctx")
    instruction_template: str | None = None
    force: bool = Field(default=False, description="load even if estimated not to fit in memory")


class LoadModelResponse(ModelInfo):
    message: str


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
    mine: bool = Field(False, description="True for a request sent with the same key as this one")


class QueueResponse(BaseModel):
    activity: Literal["idle", "generating", "loading", "unloading"]
    model: str | None = Field(description="the loaded model")
    running: QueueEntry | None
    queued: list[QueueEntry]
