"""The hooks an extension may implement (typed ``pluggy`` specs) and what they are given.

An extension is a module (a bundled ``extensions/<name>/`` package, a ``user_data/extensions/<name>/`` folder
or an installed package's ``palabre.extensions`` entry point) whose functions are marked with ``@hookimpl``
and named after the specs below. It implements only the hooks it needs, and each implementation takes only
the arguments it needs (pluggy passes arguments by name). Extensions import what they use from
``webui.core.extensions.api``; the core calls each hook through a typed ExtensionManager method.

For each chat reply the hooks run in this order: modify_input, modify_params, modify_history (then the prompt
is built and truncated to fit), modify_prompt; then modify_chunk for each streamed piece and modify_reply at
the end. A raw completion (Default / Notebook tabs, ``webui generate``, /v1/completions, Ollama's raw
/api/generate) runs modify_completion_params, modify_completion_prompt, then the same modify_chunk and
modify_reply; their ``kind`` argument ("chat" or "completion") lets an extension leave one of the two alone.

Every ``palabre_modify_*`` hook is a pipeline: each enabled extension receives the value the previous one
returned and returns the new value, or ``None`` to leave it unchanged. Order: implementations marked
``@hookimpl(tryfirst=True)`` run first, ``trylast=True`` last, and otherwise in the order the extensions
were enabled (``--extensions a b``: a before b). An exception in one extension's hook is caught, reported
with the extension's name, and that hook's effect is skipped; generation goes on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pluggy
from pydantic import BaseModel

from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage, Mode

if TYPE_CHECKING:
    from webui.core.characters.store import Character

PROJECT_NAME = "palabre"
HOOK_PREFIX = "palabre_"  # every hook's name starts with it; pages and messages show the rest
ENTRY_POINT_GROUP = "palabre.extensions"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# What a reply hook is given: a chat reply, or the continuation of a raw completion's text.
GenerationKind = Literal["chat", "completion"]


class ExtensionState(dict[str, Any]):
    """One extension's private, in-memory state (caches), owned by the ExtensionManager; empty at start."""


@dataclass(frozen=True)
class ChatContext:
    """What a chat hook may know about the prompt being built and what it may use."""

    mode: Mode
    character_name: str
    user_name: str
    character: Character | None  # the personality in use (its card's character_book, ...), if any
    max_prompt_tokens: int  # the prompt's token budget (the context minus the room kept for the reply)
    count_tokens: Callable[[str], int]  # the loaded model's tokenizer
    # Prompt tokens these messages would take, rendered exactly as the prompt will be (before truncation).
    measure: Callable[[Sequence[ChatMessage]], int]
    # A short greedy reply of the loaded model to these messages (at most ``max_new_tokens`` tokens).
    generate: Callable[[Sequence[ChatMessage], int], str]
    user_data_dir: Path | None = None
    # True when the prompt is only looked at (the context meter), not generated from: a hook should then
    # skip slow work such as asking the model (use what it has cached, or leave its effect out).
    preview: bool = False


class HookSpecs:
    """The hook specifications; see the module docstring for the order and the error handling."""

    @hookspec
    def palabre_settings_model(self) -> type[BaseModel] | None:
        """The pydantic model of this extension's settings (every field needs a default); shown as widgets
        and saved in user_data/settings.yaml."""

    @hookspec
    def palabre_setup(
        self, settings: BaseModel | None, state: ExtensionState, user_data_dir: Path | None
    ) -> None:
        """Called when the extension is enabled (at start or from the page)."""

    @hookspec
    def palabre_teardown(self, settings: BaseModel | None, state: ExtensionState) -> None:
        """Called when the extension is disabled or the server stops."""

    @hookspec
    def palabre_modify_input(
        self, text: str, settings: BaseModel | None, state: ExtensionState, chat: ChatContext
    ) -> str | None:
        """The user's latest message as the model will see it (the saved message keeps what was typed)."""

    @hookspec
    def palabre_modify_history(
        self,
        messages: list[ChatMessage],
        settings: BaseModel | None,
        state: ExtensionState,
        chat: ChatContext,
    ) -> list[ChatMessage] | None:
        """The conversation before the prompt is built (leading system messages, then the turns)."""

    @hookspec
    def palabre_modify_params(
        self, params: GenerationParams, settings: BaseModel | None, state: ExtensionState, chat: ChatContext
    ) -> GenerationParams | None:
        """The sampler parameters for this reply."""

    @hookspec
    def palabre_modify_prompt(
        self, prompt: str, settings: BaseModel | None, state: ExtensionState, chat: ChatContext
    ) -> str | None:
        """The rendered prompt text (for a model that applies its own chat template, only the text shown)."""

    @hookspec
    def palabre_modify_completion_params(
        self, params: GenerationParams, prompt: str, settings: BaseModel | None, state: ExtensionState
    ) -> GenerationParams | None:
        """The sampler parameters of a raw completion (``prompt``: its text as sent, for reference)."""

    @hookspec
    def palabre_modify_completion_prompt(
        self, prompt: str, params: GenerationParams, settings: BaseModel | None, state: ExtensionState
    ) -> str | None:
        """The text a raw completion continues, as the model will see it (the page and an API's echo keep
        the text as sent); ``params`` are the final sampler parameters."""

    @hookspec
    def palabre_modify_chunk(
        self, text: str, kind: GenerationKind, settings: BaseModel | None, state: ExtensionState
    ) -> str | None:
        """Each streamed piece of the reply (or of a raw completion's continuation), as it arrives."""

    @hookspec
    def palabre_modify_reply(
        self, text: str, kind: GenerationKind, settings: BaseModel | None, state: ExtensionState
    ) -> str | None:
        """The whole reply (or raw completion's continuation, without its prompt) once it ends. Text added
        at the end streams as a last piece; a change to text already streamed cannot be taken back and is
        reported instead."""

    @hookspec
    def palabre_ui(self, gr: Any, settings: BaseModel | None, state: ExtensionState) -> None:
        """Draw the extension's own tab (called inside a ``gr.Tab``; ``gr`` is the gradio module)."""

    @hookspec
    def palabre_routes(self, router: Any, settings: BaseModel | None, state: ExtensionState) -> None:
        """Add HTTP routes to ``router`` (a FastAPI APIRouter mounted at ``/v1/extensions/<name>``)."""

    @hookspec
    def palabre_css(self) -> str | None:
        """CSS added to the page."""

    @hookspec
    def palabre_js(self) -> str | None:
        """JavaScript run when the page loads."""


def _names(*specs: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(spec.__name__ for spec in specs)


def _piped_argument(spec: Callable[..., Any]) -> str:
    """The argument a pipeline hook passes on: the first one after ``self`` in its specification."""
    return list(inspect.signature(spec).parameters)[1]


def short_name(hook: str) -> str:
    """A hook's name as shown to users: ``palabre_modify_input`` -> ``modify_input``."""
    return hook.removeprefix(HOOK_PREFIX)


HOOK_NAMES: tuple[str, ...] = tuple(name for name in vars(HookSpecs) if name.startswith(HOOK_PREFIX))

# The hooks that change how text is generated; they take effect on the next message when an extension is
# enabled or disabled. Each is a pipeline (see the module docstring).
LIVE_HOOKS = _names(
    HookSpecs.palabre_modify_input,
    HookSpecs.palabre_modify_history,
    HookSpecs.palabre_modify_params,
    HookSpecs.palabre_modify_prompt,
    HookSpecs.palabre_modify_chunk,
    HookSpecs.palabre_modify_reply,
    HookSpecs.palabre_modify_completion_params,
    HookSpecs.palabre_modify_completion_prompt,
)
# Installed when the server starts (a restart applies a change).
RESTART_HOOKS = _names(
    HookSpecs.palabre_ui, HookSpecs.palabre_routes, HookSpecs.palabre_css, HookSpecs.palabre_js
)
# What each pipeline hook is given and returns, by name: read from its specification, never written twice.
PIPED_ARGUMENT: dict[str, str] = {hook: _piped_argument(getattr(HookSpecs, hook)) for hook in LIVE_HOOKS}
