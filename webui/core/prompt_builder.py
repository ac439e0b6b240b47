"""Building what the model is given: a chat prompt (template, truncation to fit the context, the extensions'
input / params / history / prompt hooks) or a raw completion's text (its completion hooks).

A chat prompt carries the budget it was built within (the context size and the tokens kept for the reply),
so a front end shows it without computing it again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from webui.core.abilities import TemplateAbilities, abilities_of
from webui.core.characters.store import Character
from webui.core.engine import Engine, EngineError
from webui.core.extensions.hooks import ChatContext
from webui.core.extensions.manager import ExtensionManager
from webui.core.grammar import GrammarError
from webui.core.loader import LoadedModel, LoaderCapabilities, renders_own_template, sees_images
from webui.core.media import Image, cannot_see
from webui.core.params import GenerationParams
from webui.core.prompts import (
    DEFAULT_CHAT_INSTRUCT_COMMAND,
    BuiltPrompt,
    ChatMessage,
    Mode,
    PromptError,
    PromptRequest,
    build_messages,
    build_prompt,
    reply_reserve,
)
from webui.core.reasoning.formats import Phase, initial_phase
from webui.core.reply_reader import ReplyFormat
from webui.core.templates.store import InstructionTemplate, TemplateError, TemplateStore
from webui.core.tools.formats import get_tool_format
from webui.core.tools.grammar import tool_call_grammar
from webui.core.tools.request import ToolRequest

__all__ = ["ChatPrompt", "ChatSettings", "CompletionPrompt", "PromptBudget", "PromptBuilder"]

_UNLIMITED = 2**62  # a token budget nothing reaches: measure or render without truncating


@dataclass(frozen=True)
class ChatSettings:
    """How a conversation is turned into a prompt (everything but the sampler)."""

    mode: Mode = "instruct"
    # A template name, a template itself (an API request's own), or None = the one detected for the model.
    template: str | InstructionTemplate | None = None
    system_message: str = ""
    character_name: str = "Assistant"
    user_name: str = "You"
    context: str = ""
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND
    # The personality in use, for extensions (e.g. its card's character_book); the fields above already
    # carry what the prompt takes from it.
    character: Character | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PromptBudget:
    """How the context is shared between a prompt and its reply, for one set of sampler parameters."""

    context_tokens: (
        int  # what prompt and reply may use: truncation_length if set, at most the model's context
    )
    reply_tokens: int  # kept free for the reply (max_new_tokens, at most half the context)

    @property
    def prompt_tokens(self) -> int:
        """The most tokens the prompt may take."""
        return max(1, self.context_tokens - self.reply_tokens)


@dataclass(frozen=True, kw_only=True)
class ChatPrompt(BuiltPrompt):
    """A chat prompt as built to fit, with the budget it was built within (the context meter shows it)."""

    context_tokens: int
    reply_tokens: int
    # How to read the reply: its reasoning and tool calls (plain text when the template has neither).
    reply_format: ReplyFormat = field(default_factory=ReplyFormat)


@dataclass(frozen=True)
class CompletionPrompt:
    """A raw completion's text and sampler parameters after the extensions' completion hooks."""

    text: str
    params: GenerationParams
    warnings: tuple[str, ...] = ()


class PromptBuilder:
    """Builds prompts for the loaded model with the enabled extensions (one per Service)."""

    def __init__(
        self,
        engine: Engine,
        templates: TemplateStore,
        extensions: ExtensionManager,
        *,
        detected_template: Callable[[], InstructionTemplate | None],
        quick_reply: Callable[[Sequence[ChatMessage], int], str],
        tool_template: Callable[[], InstructionTemplate | None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.templates = templates
        self.extensions = extensions
        self._detected_template = detected_template  # the model manager's, read at each build
        self._quick_reply = quick_reply  # what ChatContext.generate calls
        self._tool_template = tool_template  # the model's template for requests with tools, if apart
        self._abilities: dict[str, TemplateAbilities] = {}  # by template source: reading one parses it

    def abilities(self, template: InstructionTemplate | None) -> TemplateAbilities:
        """What ``template`` lets the model do (thinking format and controls, tool-call family)."""
        source = template.source if template is not None else ""
        found = self._abilities.get(source)
        if found is None:
            if len(self._abilities) > 32:
                self._abilities.clear()  # API requests may bring templates of their own: keep this small
            found = self._abilities[source] = abilities_of(source)
        return found

    def template_for(self, settings: ChatSettings) -> InstructionTemplate | None:
        """The template ``settings`` asks for, else the one detected for the loaded model (TemplateError)."""
        if isinstance(settings.template, InstructionTemplate):
            return settings.template
        if settings.template:
            return self.templates.get(settings.template)
        return self._detected_template()

    def budget(self, params: GenerationParams) -> PromptBudget:
        """The loaded model's context shared out for ``params`` (EngineError with nothing loaded)."""
        facts = self.engine.require_model().model.facts
        context = min(params.truncation_length or facts.context_length, facts.context_length)
        return PromptBudget(context, reply_reserve(context, params.max_new_tokens))

    def chat(
        self,
        history: Sequence[ChatMessage],
        settings: ChatSettings,
        params: GenerationParams,
        *,
        continue_last: bool = False,
        impersonate: bool = False,
        preview: bool = False,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[ChatPrompt, GenerationParams]:
        """The prompt and the sampler parameters after the extensions' hooks (input, params, history,
        prompt: in that order). EngineError for a template or prompt problem, or with nothing loaded.

        ``tools`` are shown to the model through its template (and, for ``required`` or a named function, a
        grammar makes its call valid where the loader takes one); ``template_kwargs`` are more template
        variables (a request's chat_template_kwargs), after the thinking controls taken from ``params``."""
        state = self.engine.require_model()
        facts = state.model.facts
        try:
            template = self.template_for(settings)
        except TemplateError as exc:
            raise EngineError(str(exc)) from exc
        if tools is not None and tools.offered and settings.template is None:
            template = self._tool_template() or template
        # A model that applies its own chat template (a server's chat endpoint) gets the messages; a vision
        # model gets its media marker for each image, and truncation counts the images' tokens.
        marker = self._media_marker(state.model, state.entry.name, history)
        build = self._builder(state.model)
        system_message = settings.system_message
        if (
            tools is not None
            and tools.offered
            and template is not None
            and not renders_own_template(state.model)  # a server's chat endpoint renders the tools itself
            and not self.abilities(template).tools
        ):
            # The template cannot show tools (the default model's ChatML): describe them in the system message,
            # as llama.cpp's generic handler does, in the <tool_call> form the generic reader reads.
            system_message = "\n\n".join(part for part in (system_message, describe_tools(tools)) if part)
        request = PromptRequest(
            messages=list(history),
            mode=settings.mode,
            template=template,
            system_message=system_message,
            character_name=settings.character_name,
            user_name=settings.user_name,
            context=settings.context,
            chat_instruct_command=settings.chat_instruct_command,
            continue_last=continue_last,
            impersonate=impersonate,
            bos_token=facts.bos_token,
            eos_token=facts.eos_token,
            tools=tools.offered if tools is not None else (),
            template_kwargs={**thinking_variables(params), **(template_kwargs or {})},
            media_marker=marker,
        )
        count_prompt = functools.partial(self._count_prompt, state.model, marker)
        extensions = self.extensions
        warnings: list[str] = []
        chat: ChatContext | None = None
        if extensions.enabled:

            def measure(messages: Sequence[ChatMessage]) -> int:
                unlimited = replace(request, messages=list(messages))
                return build(
                    unlimited, count_tokens=self.engine.count_tokens, max_prompt_tokens=_UNLIMITED
                ).prompt_tokens

            chat = ChatContext(
                mode=settings.mode,
                character_name=settings.character_name,
                user_name=settings.user_name,
                character=settings.character,
                max_prompt_tokens=self.budget(params).prompt_tokens,
                count_tokens=self.engine.count_tokens,
                measure=measure,
                generate=self._quick_reply,
                user_data_dir=extensions.user_data_dir,
                preview=preview,
            )
            messages = list(history)
            if messages and messages[-1].role == "user" and not (continue_last or impersonate):
                messages[-1] = ChatMessage(
                    "user", extensions.modify_input(messages[-1].content, chat, warnings)
                )
            params = extensions.modify_params(params, chat, warnings)
            chat = replace(chat, max_prompt_tokens=self.budget(params).prompt_tokens)
            request = replace(request, messages=extensions.modify_history(messages, chat, warnings))
        budget = self.budget(params)
        try:
            built = build(
                request, count_tokens=self.engine.count_tokens, max_prompt_tokens=budget.prompt_tokens
            )
        except (PromptError, TemplateError) as exc:
            raise EngineError(str(exc)) from exc
        if chat is not None:
            text = extensions.modify_prompt(built.text, chat, warnings)
            if text != built.text:
                built = replace(built, text=text, prompt_tokens=count_prompt(text, built.images))
        own_template = built.messages is not None
        # Chat mode writes a transcript without the template, but the model is the same: it thinks the same way.
        abilities = self.abilities(template if not own_template else None)
        reasoning = abilities.reasoning
        if (
            reasoning.thinks
            and not params.enable_thinking
            and initial_phase(reasoning, built.text) is Phase.REASONING
        ):
            # A template that always opens the reasoning (DeepSeek-R1's) has no switch: close it, as llama.cpp does.
            closed = built.text + reasoning.forced_close
            built = replace(built, text=closed, prompt_tokens=count_prompt(closed, built.images))
        reply_format = ReplyFormat(reasoning=reasoning)
        if tools is not None and tools.choice != "none" and not own_template:
            reply_format, params = self._tool_reading(
                tools, abilities, built.text, params, state.capabilities
            )
        shown = {item.name: getattr(built, item.name) for item in fields(BuiltPrompt)}
        prompt = ChatPrompt(
            **{**shown, "warnings": tuple(warnings)},
            context_tokens=budget.context_tokens,
            reply_tokens=budget.reply_tokens,
            reply_format=reply_format,
        )
        return prompt, params

    @staticmethod
    def _media_marker(model: LoadedModel, name: str, history: Sequence[ChatMessage]) -> str:
        """The marker images are rendered as ("" for a model given none, or one that renders its own template
        and takes the images with the messages); ModelCannotSeeError for images a model cannot see."""
        if not any(message.images for message in history) or renders_own_template(model):
            return ""
        if not sees_images(model):
            raise cannot_see(name, model.facts.extra)
        return model.media_marker

    def _builder(self, model: LoadedModel) -> Callable[..., BuiltPrompt]:
        """build_messages for a model that applies its own template, else build_prompt counting images."""
        if renders_own_template(model):
            return build_messages
        if sees_images(model):
            return functools.partial(build_prompt, image_tokens=model.image_tokens)
        return build_prompt

    def _count_prompt(self, model: LoadedModel, marker: str, text: str, images: Sequence[Image]) -> int:
        """Tokens of a finished prompt: its text without the markers, plus the images' own tokens."""
        if not marker or not images or not sees_images(model):
            return self.engine.count_tokens(text)
        return self.engine.count_tokens(text.replace(marker, "")) + sum(map(model.image_tokens, images))

    def _tool_reading(
        self,
        tools: ToolRequest,
        abilities: TemplateAbilities,
        prompt: str,
        params: GenerationParams,
        capabilities: LoaderCapabilities,
    ) -> tuple[ReplyFormat, GenerationParams]:
        """How the reply's calls are read, and the sampler parameters with the calls' grammar when the loader
        takes grammars (the user's own grammar wins)."""
        family = abilities.tool_format
        fmt = ReplyFormat(abilities.reasoning, get_tool_format(family), tools.definitions)
        honoured = capabilities.honoured_params
        if "grammar" not in honoured or params.grammar.strip():
            return fmt, params
        lazy_ok = "grammar_triggers" in honoured
        if not tools.forced and not lazy_ok:
            return fmt, params
        try:
            grammar = tool_call_grammar(
                family,
                tools,
                reasoning=abilities.reasoning,
                starts_in_reasoning=initial_phase(abilities.reasoning, prompt) is Phase.REASONING,
            )
        except GrammarError as exc:
            raise EngineError(str(exc)) from exc
        if grammar is None:
            return fmt, params
        fmt = replace(fmt, tools=grammar.parse_format)
        return fmt, params.model_copy(
            update={"grammar": grammar.gbnf, "grammar_triggers": list(grammar.triggers)}
        )

    def quick(self, messages: Sequence[ChatMessage]) -> BuiltPrompt:
        """The prompt of a short reply asked for by an extension: through the detected template (a plain
        transcript when there is none), never truncated, no extension hooks."""
        state = self.engine.require_model()
        template = self._detected_template()
        request = PromptRequest(
            messages=list(messages),
            mode="instruct" if template is not None else "chat",
            template=template,
            bos_token=state.model.facts.bos_token,
            eos_token=state.model.facts.eos_token,
        )
        build = build_messages if renders_own_template(state.model) else build_prompt
        try:
            return build(request, count_tokens=self.engine.count_tokens, max_prompt_tokens=_UNLIMITED)
        except (PromptError, TemplateError) as exc:
            raise EngineError(str(exc)) from exc

    def completion(self, prompt: str, params: GenerationParams) -> CompletionPrompt:
        """A raw completion's text and parameters after the extensions' completion hooks (params, then
        prompt). EngineError with nothing loaded while an extension is enabled: no hook runs for a
        completion that cannot start."""
        extensions = self.extensions
        warnings: list[str] = []
        if extensions.enabled:
            self.engine.require_model()
            params = extensions.modify_completion_params(params, prompt, warnings)
            prompt = extensions.modify_completion_prompt(prompt, params, warnings)
        return CompletionPrompt(prompt, params, tuple(warnings))


def thinking_variables(params: GenerationParams) -> dict[str, Any]:
    """The thinking controls as the template variables families read (Qwen3, Granite, gpt-oss, Seed ...)."""
    variables: dict[str, Any] = {
        "enable_thinking": params.enable_thinking,
        "thinking": params.enable_thinking,
        "thinking_budget": params.thinking_budget if params.enable_thinking else 0,
    }
    if params.reasoning_effort:
        variables["reasoning_effort"] = params.reasoning_effort
    return variables


def describe_tools(tools: ToolRequest) -> str:
    """A system-message text that offers ``tools`` to a model whose template has no place for them."""
    listing = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools.offered)
    must = "You must call one of them." if tools.forced else "Call one only when it helps answer."
    return (
        "You can call these tools (JSON schemas):\n"
        f"{listing}\n"
        f"{must} To call a tool, reply with exactly:\n"
        '<tool_call>\n{"name": "<tool name>", "arguments": {<arguments as JSON>}}\n</tool_call>'
    )
