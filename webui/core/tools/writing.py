"""Writing tool calls back as a family's text: for templates that show an assistant message's content only, so
the calls made earlier in a conversation are not lost from the prompt (llama.cpp's chat polyfill does the
same), and for the ids some templates demand."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from typing import Any

from webui.core.tools.base import is_mistral_id

_ALNUM = string.ascii_letters + string.digits

# How each family writes a list of calls; the others write Hermes' <tool_call> blocks (what the generic reader
# and most small models know).
_LISTS: dict[str, tuple[str, str, str, str]] = {
    # family: (opening, closing, name key, arguments key)
    "granite": ("<|tool_call|>", "", "name", "arguments"),
    "lfm2": ("<|tool_call_start|>", "<|tool_call_end|>", "name", "arguments"),
    "mistral": ("[TOOL_CALLS]", "", "name", "arguments"),
    "llama3": ("", "", "name", "parameters"),
    "command_r": ("<|START_ACTION|>", "<|END_ACTION|>", "tool_name", "parameters"),
}


def calls_as_text(family: str, calls: Sequence[tuple[str, Any]]) -> str:
    """``calls`` ((name, arguments object) pairs) in ``family``'s own call syntax."""
    shape = _LISTS.get(family)
    if shape is None:
        return "\n".join(
            "<tool_call>\n"
            + json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
            + "\n</tool_call>"
            for name, args in calls
        )
    opening, closing, name_key, args_key = shape
    items = [{name_key: name, args_key: args} for name, args in calls]
    body = json.dumps(items[0] if family == "llama3" and len(items) == 1 else items, ensure_ascii=False)
    return f"{opening}{body}{closing}"


def mistral_id(value: str) -> str:
    """An id as Mistral's templates demand (9 letters or digits; they raise otherwise), the same for the same
    input, so that calls and their results still pair up."""
    if is_mistral_id(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).digest()
    return "".join(_ALNUM[byte % len(_ALNUM)] for byte in digest[:9])
