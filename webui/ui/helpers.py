"""Page helpers that ask the core Service (no gradio import): the context meter, token counts, the chat prompt
for "Send to Default / Notebook", and the instruction template editor's preview."""

from __future__ import annotations

from collections.abc import Sequence

from webui.core.media import ImageError
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, EngineError, Service
from webui.core.templates.store import InstructionTemplate, TemplateError
from webui.ui.convert import (
    Message,
    context_meter_text,
    open_reply,
    preview_messages,
    to_chat_messages,
)


def count_tokens(service: Service, text: str) -> int | None:
    """The loaded model's token count of ``text``; None when no model is loaded."""
    try:
        return service.count_tokens(text or "")
    except EngineError:
        return None


def context_meter(
    service: Service,
    history: Sequence[Message],
    settings: ChatSettings,
    params: GenerationParams,
    messages: Sequence[ChatMessage] | None = None,
) -> str:
    """The context meter's text: the tokens of the next reply's prompt (as the model would see it: the
    ``messages`` when given, with their images and documents, else the ``history``'s text) out of the context
    size and the room kept for the reply, as the Service built it."""
    if service.loaded is None:
        return "Context: no model loaded."
    chat = list(messages) if messages is not None else to_chat_messages(history)
    try:
        # A preview: extensions must not stall the meter (e.g. summary_memory asking the model).
        built = service.build_chat_prompt(chat, settings, params, preview=True)
    except (EngineError, ImageError) as exc:
        return f"Context: the prompt cannot be built ({exc})"
    return context_meter_text(
        built.prompt_tokens, built.context_tokens, built.reply_tokens, built.dropped_messages
    )


def next_reply_prompt(
    service: Service,
    history: Sequence[Message],
    settings: ChatSettings,
    params: GenerationParams,
    start_with: str | None = None,
) -> str:
    """The exact prompt text the model would get for the next reply (with "Start reply with" opening it).

    Raises EngineError (no model, a template or prompt error).
    """
    opened, continuing = open_reply(history, start_with)
    return service.build_chat_prompt(
        to_chat_messages(opened), settings, params, continue_last=continuing
    ).text


def template_preview(
    service: Service, name: str | None, source: str, history: Sequence[Message], system_message: str | None
) -> tuple[str, str]:
    """``source`` (an instruction template being edited) rendered over the current chat, ready for a reply.

    Returns (rendered text, a note for the user). Errors come back as text, never raised (this runs as the
    user types); an empty chat renders an example conversation, and the note says so.
    """
    messages, example = preview_messages(history, system_message)
    state = service.loaded
    facts = state.model.facts if state is not None else None
    try:
        template = InstructionTemplate(name or "Edited template", source or "", origin="custom")
        text = template.render(
            messages,
            add_generation_prompt=True,
            bos_token=facts.bos_token if facts else "",
            eos_token=facts.eos_token if facts else "",
        )
    except TemplateError as exc:
        return f"⚠️ {exc}", f"⚠️ {exc}"
    if example:
        return text, "The chat is empty: the preview shows an example conversation."
    return text, f"The preview shows the current chat ({len(messages)} messages)."
