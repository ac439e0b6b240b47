"""Boom: an extension whose history hook always fails (the tests check that the reply still completes)."""

from __future__ import annotations

from webui.core.extensions.hooks import hookimpl
from webui.core.prompts import ChatMessage


@hookimpl
def palabre_modify_history(messages: list[ChatMessage]) -> list[ChatMessage]:
    raise RuntimeError("boom went the extension")
