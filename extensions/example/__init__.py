"""Example: shows every hook with the smallest useful body; copy this folder to start a new extension.

Each ``@hookimpl`` function is named after a hook in webui/core/extensions/hooks.py and takes only the
arguments it needs, by name; what an extension uses from Palabre comes from ``webui.core.extensions.api``.
The ``palabre_modify_*`` hooks return the new value, or None to leave it as it is. With the default settings this extension changes nothing; turn its settings on to see each hook work.
The chunk and reply hooks also run for raw completions (Default / Notebook tabs, /v1/completions): their
``kind`` argument says which, so a hook that only suits chat replies (the signature here) can skip the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from webui.core.extensions.api import (
    ChatContext,
    ChatMessage,
    ExtensionState,
    GenerationKind,
    GenerationParams,
    hookimpl,
)


class ExampleSettings(BaseModel):
    """Settings: every field needs a default; the description becomes the widget's help text."""

    input_suffix: str = Field(
        "", description="Added to the end of your latest message (as the model sees it)."
    )
    system_note: str = Field("", description="Added as a system message before the conversation.")
    max_new_tokens: int = Field(
        0, ge=0, le=32768, description="If not 0, replies and raw completions are limited to this length."
    )
    prompt_prefix: str = Field(
        "", description="Put in front of the rendered prompt text (and of a raw completion's text)."
    )
    uppercase: bool = Field(
        False, description="Show the reply (and a raw completion) in upper case, as it streams."
    )
    signature: str = Field("", description="Added at the end of every chat reply (not of raw completions).")


@hookimpl
def palabre_settings_model() -> type[BaseModel]:
    return ExampleSettings


@hookimpl
def palabre_setup(state: ExtensionState, user_data_dir: Path | None) -> None:
    state["replies"] = 0  # state is this extension's own, kept while the server runs


@hookimpl
def palabre_teardown(state: ExtensionState) -> None:
    state.clear()


@hookimpl
def palabre_modify_input(text: str, settings: ExampleSettings) -> str | None:
    return text + settings.input_suffix if settings.input_suffix else None


@hookimpl
def palabre_modify_params(params: GenerationParams, settings: ExampleSettings) -> GenerationParams | None:
    if not settings.max_new_tokens:
        return None
    return params.model_copy(update={"max_new_tokens": settings.max_new_tokens})


@hookimpl
def palabre_modify_history(
    messages: list[ChatMessage], settings: ExampleSettings, chat: ChatContext
) -> list[ChatMessage] | None:
    if not settings.system_note:
        return None
    return [ChatMessage("system", settings.system_note), *messages]


@hookimpl
def palabre_modify_prompt(prompt: str, settings: ExampleSettings) -> str | None:
    return settings.prompt_prefix + prompt if settings.prompt_prefix else None


@hookimpl
def palabre_modify_completion_params(
    params: GenerationParams, settings: ExampleSettings
) -> GenerationParams | None:
    return palabre_modify_params(params, settings)


@hookimpl
def palabre_modify_completion_prompt(prompt: str, settings: ExampleSettings) -> str | None:
    return palabre_modify_prompt(prompt, settings)


@hookimpl
def palabre_modify_chunk(text: str, settings: ExampleSettings) -> str | None:
    return text.upper() if settings.uppercase else None


@hookimpl
def palabre_modify_reply(
    text: str, kind: GenerationKind, settings: ExampleSettings, state: ExtensionState
) -> str | None:
    if kind != "chat":
        return None  # a signature would end up inside the user's text in the Notebook
    state["replies"] = state.get("replies", 0) + 1
    return text + settings.signature if settings.signature else None


@hookimpl
def palabre_ui(gr: Any, state: ExtensionState) -> None:
    gr.Markdown(
        "This tab is drawn by the **example** extension's `palabre_ui` hook.", elem_id="example-ext-note"
    )


@hookimpl
def palabre_routes(router: Any, state: ExtensionState) -> None:
    @router.get("/status")
    def status() -> dict[str, Any]:
        return {"extension": "example", "replies": state.get("replies", 0)}


@hookimpl
def palabre_css() -> str | None:
    return "#example-ext-note { opacity: 0.8; }"


@hookimpl
def palabre_js() -> str | None:
    return "() => { document.body.dataset.exampleExtension = 'loaded'; }"
