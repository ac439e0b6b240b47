"""Completer: expands a macro in raw completions, caps their length and marks their text (never chats).

The tests enable it to watch every completion hook through the real server; a prompt holding ``EXPLODE``
makes its params hook fail (the completion must still complete, with a warning naming it).
"""

from __future__ import annotations

from webui.core.extensions.hooks import GenerationKind, hookimpl
from webui.core.params import GenerationParams

MACRO = "{{capital}}"
EXPANSION = "The capital of France is"
CAP = 8
END_MARK = " [done]"


@hookimpl
def palabre_modify_completion_params(params: GenerationParams, prompt: str) -> GenerationParams:
    if "EXPLODE" in prompt:
        raise RuntimeError("completer went boom")
    return params.model_copy(update={"max_new_tokens": min(params.max_new_tokens, CAP)})


@hookimpl
def palabre_modify_completion_prompt(prompt: str) -> str:
    return prompt.replace(MACRO, EXPANSION)


@hookimpl
def palabre_modify_chunk(text: str, kind: GenerationKind) -> str | None:
    return text.upper() if kind == "completion" else None


@hookimpl
def palabre_modify_reply(text: str, kind: GenerationKind) -> str | None:
    return text + END_MARK if kind == "completion" else None
