"""Ollama wire models, Ollama's ``options`` mapped onto GenerationParams through the Modelfile PARAMETER table,
and the requests' conversion into the core's (``to_chat_request``, ``to_core_request``).

Ollama ignores fields it does not know, so the request models do too (``context``, ...). Option names are
Ollama's (``num_predict``, ``repeat_penalty`` ...) or GenerationParams' own (``dry_multiplier`` ...).
``think`` (true, false or a level) turns a thinking model's reasoning on or off; ``tools`` are offered as in
Ollama, and ``tool_choice`` (OpenAI's values; a Palabre extension Ollama does not have) may force a call.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from webui.api import core_requests
from webui.api.errors import ApiError
from webui.api.openai_protocol import null_means_default
from webui.core import grammar
from webui.core.characters.go_template import convert_go_template
from webui.core.characters.modelfile import OLLAMA_TO_LOADER, OLLAMA_TO_PARAM, OLLAMA_UNMAPPED
from webui.core.params import PARAM_NAMES, PER_REQUEST_NAMES, GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import Service
from webui.core.templates.store import InstructionTemplate, TemplateError

# The Ollama API version these routes follow; clients check /api/version before using newer fields.
OLLAMA_VERSION = "0.12.0"
# A Go duration, as Ollama parses keep_alive: "5m", "1h30m", "1.5h", "300ms", "-1m".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class OllamaFunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    arguments: dict[str, Any] | str | None = None  # an object in Ollama's shape


class OllamaToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    function: OllamaFunctionCall


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None  # a tool message: the tool that answered
    tool_call_id: str | None = None

    _nulls = null_means_default("content")

    def to_core(self) -> ChatMessage:
        """The core's ChatMessage; ``images`` (raw base64, as Ollama sends them) decoded and checked."""
        images = [core_requests.base64_image(image, "images") for image in self.images or ()]
        calls = [
            core_requests.tool_call(call.id, call.function.name, call.function.arguments)
            for call in self.tool_calls or ()
        ]
        return core_requests.chat_message(
            self.role,
            self.content,
            reasoning=self.thinking or "",
            tool_calls=calls,
            tool_call_id=self.tool_call_id or "",
            name=self.tool_name or "",
            attached=images,
        )


class OllamaRequest(BaseModel):
    """Fields shared by /api/generate and /api/chat; ``stream`` defaults to true, as in Ollama."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., description="A model name from /api/tags.")
    stream: bool = True
    options: dict[str, Any] | None = Field(
        None,
        description="Ollama's options (num_predict, temperature, repeat_penalty ...) or Palabre's names.",
    )
    format: Literal["", "json"] | dict[str, Any] | None = None
    keep_alive: float | str | None = Field(
        None,
        description="How long the model stays loaded after this request: seconds or a duration such as "
        '"5m"; negative: forever; 0: unload when done (with no prompt: now). Default: --idle-unload. '
        "Needs an admin key once one is set: it applies to everybody.",
    )

    think: bool | str | None = Field(
        None,
        description="Thinking models: true or false to turn reasoning on or off, or a level (low, medium, "
        "high). The reasoning comes apart from the answer, as `thinking`.",
    )

    logprobs: bool | None = Field(None, description="Return each generated token's logprob (as `logprobs`).")
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="With logprobs: this many most likely tokens at each position."
    )

    _nulls = null_means_default("stream")

    @property
    def needs(self) -> core_requests.Needs:
        """What the loader must support: a grammar when ``format`` asks for one, logprobs when asked for."""
        return core_requests.Needs(grammar_param="format", logprobs=bool(self.logprobs))

    @property
    def shows_thinking(self) -> bool:
        """False when the request turned thinking off: then no ``thinking`` field is sent."""
        return self.think is not False and str(self.think).lower() != "false"

    def thinking_overrides(self) -> dict[str, Any]:
        """GenerationParams values for ``think``: a switch, or a level (which also turns thinking on)."""
        think = self.think
        if isinstance(think, str) and think.strip().lower() in ("true", "false"):
            think = think.strip().lower() == "true"
        if isinstance(think, bool):
            return {"enable_thinking": think}
        return core_requests.thinking_overrides(think, "think")

    def sampler_params(self, service: Service) -> GenerationParams:
        """The sampler values, each from the first of: this request's ``options`` (and ``think``), the
        Default preset, GenerationParams' default; constrained by ``format`` ("json" or a JSON schema)."""
        overrides, sources = ollama_overrides(self.options)
        for name, value in self.thinking_overrides().items():
            overrides[name] = value
            sources[name] = "think"
        if self.logprobs:
            overrides["logprobs"] = self.top_logprobs or 0
            sources["logprobs"] = "top_logprobs"
        params = core_requests.resolve_params(service, overrides, sources)
        try:
            rules = grammar.format_grammar(self.format)
        except grammar.GrammarError as exc:
            raise ApiError(400, str(exc), param="response_format") from exc
        return core_requests.with_grammar(params, rules)


class GenerateRequest(OllamaRequest):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = Field(None, description="A Go template used instead of the model's.")
    raw: bool = False
    images: list[str] | None = None

    _generate_nulls = null_means_default("raw")

    def refuse_unsupported(self) -> None:
        """400 for fill-in-the-middle, which Palabre does not do, and for images in a raw prompt (the
        model's template places them: send the prompt without ``raw``)."""
        if self.images and self.raw:
            raise ApiError(
                400,
                "Images need the model's template to place them: send them without raw.",
                param="images",
            )
        if self.suffix:
            raise ApiError(400, "suffix (fill in the middle) is not supported.", param="suffix")

    def to_core_request(self, service: Service) -> core_requests.CoreRequest:
        """``prompt`` as the user's message through the model's template (or ``template``), after
        ``system``, with ``images`` (raw base64) shown with it; with ``raw``, the prompt as it is. Sampler
        values as in ``sampler_params``."""
        params = self.sampler_params(service)
        prompt = self.prompt or ""
        if self.raw:
            return core_requests.CoreCompletionRequest(prompt, params, needs=self.needs)
        template = request_template(self.template) if self.template else None
        settings = core_requests.chat_settings(service, mode="instruct", character=None, template=template)
        history = [ChatMessage("system", self.system)] if self.system else []
        images = tuple(core_requests.base64_image(image, "images") for image in self.images or ())
        history.append(ChatMessage("user", prompt, images=images))
        return core_requests.CoreChatRequest(history, settings, params, needs=self.needs)


class ChatRequest(OllamaRequest):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(
        None, description="Functions the model may call: {type: function, function: {name, parameters}}."
    )
    tool_choice: str | None = Field(
        None,
        description='Palabre only: "auto" (the default), "none", "required" or a function name the model '
        "must call.",
    )

    def history(self) -> list[ChatMessage]:
        """The conversation as the core's messages (tool results tied to their calls, images decoded and
        checked: a 400 saying what is wrong with a bad one)."""
        return core_requests.link_tool_results([message.to_core() for message in self.messages])

    def to_chat_request(self, service: Service, history: list[ChatMessage]) -> core_requests.CoreChatRequest:
        """A reply to ``history`` through the model's template, offered ``tools``; sampler values as in
        ``sampler_params``."""
        tools = core_requests.tool_request(self.tools, self.tool_choice or "auto")
        params = self.sampler_params(service)
        settings = core_requests.chat_settings(service, mode="instruct", character=None, template=None)
        return core_requests.CoreChatRequest(history, settings, params, needs=self.needs, tools=tools)


class ShowRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = ""
    name: str = ""  # older clients send the model as "name"
    verbose: bool = False


KEEP_ALIVE_NEEDS_ADMIN = (
    "keep_alive sets how long the model stays loaded for everybody: it needs an admin key."
)


def allowed_keep_alive(keep_alive: float | str | None, admin: bool) -> float | None:
    """The request's keep_alive in seconds; a non-admin may not send one (403), as it can unload the model
    under every other client (0, "1s") or keep it loaded against the server's --idle-unload."""
    if keep_alive is not None and not admin:
        raise ApiError(
            403, KEEP_ALIVE_NEEDS_ADMIN, kind="permission_error", param="keep_alive", code="admin_required"
        )
    return keep_alive_seconds(keep_alive)


def unloads(keep_alive: float | str | None) -> bool:
    """True for a keep_alive that means "unload now" (0, "0", "0s", "0m" ...)."""
    return keep_alive_seconds(keep_alive) == 0


def keep_alive_seconds(keep_alive: float | str | None) -> float | None:
    """Ollama's keep_alive in seconds (None: not given; negative: forever); a bad value is a 400."""
    if keep_alive is None:
        return None
    if isinstance(keep_alive, (int, float)):
        if math.isnan(keep_alive):
            raise ApiError(400, "keep_alive is not a number.", param="keep_alive")
        return float(keep_alive)
    text = keep_alive.strip()
    try:
        return float(text)  # a number as a string: seconds, as Ollama reads it
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise ApiError(
            400, f"keep_alive {keep_alive!r} is not a duration (e.g. 5m, 1h, 30s, -1).", param="keep_alive"
        )
    return sign * sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def ollama_overrides(options: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """GenerationParams values from Ollama ``options``, and the option each came from.

    Load-time options (num_ctx, num_thread ...) and the ones Palabre has no setting for are accepted and
    ignored, as Ollama ignores what a model does not use; an unknown name is a 400 so that a typo is seen.
    """
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in (options or {}).items():
        if value is None or name in OLLAMA_TO_LOADER or name in OLLAMA_UNMAPPED:
            continue
        sampler = name in PARAM_NAMES and name not in PER_REQUEST_NAMES  # logprobs: the request's own fields
        target = OLLAMA_TO_PARAM.get(name, name if sampler else None)
        if target is None:
            raise ApiError(400, f"Unknown option {name!r}.", param=name)
        if target == "stop" and isinstance(value, str):
            value = [value]
        if name == "num_predict" and isinstance(value, int) and value <= 0:
            continue  # -1 / -2 = no limit in Ollama: the reply runs to the preset's limit or the context
        overrides[target] = value
        sources[target] = name
    return overrides, sources


def request_template(source: str) -> InstructionTemplate:
    """A request's own Go template, converted to the Jinja the prompt builder renders."""
    conversion = convert_go_template(source)
    if conversion.jinja is None:
        raise ApiError(400, f"The template cannot be used: {conversion.problem}", param="template")
    try:
        return InstructionTemplate("request template", conversion.jinja)
    except TemplateError as exc:
        raise ApiError(400, f"The template cannot be used: {exc}", param="template") from exc
