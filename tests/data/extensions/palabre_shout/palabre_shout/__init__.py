"""Shout: marks the prompt and upper-cases replies (a third-party extension installed as a package)."""

from __future__ import annotations

from webui.core.extensions.hooks import hookimpl

MARK = "[shout-extension-was-here]"


@hookimpl
def palabre_modify_prompt(prompt: str) -> str:
    return f"{MARK}\n{prompt}"


@hookimpl
def palabre_modify_chunk(text: str) -> str:
    return text.upper()
