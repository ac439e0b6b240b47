"""What a tool the model may call is: a name, a description, a JSON schema, whether it only reads, and a run.

Tool arguments are untrusted model output: each tool checks its own, and a tool's failure is a text result
the model reads (ToolError's message), never an exception that ends the reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

RESULT_LIMIT = 16_000  # characters of a result the model gets back (the rest is cut, and it is told so)
REJECTED = "The user rejected this call."


class ToolError(Exception):
    """A call that cannot be done; the message is what the model reads as the result."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model and the page see it. ``source`` is "builtin" or the MCP server's name."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    read_only: bool = False
    source: str = "builtin"

    def definition(self) -> dict[str, Any]:
        """The OpenAI-shaped definition (``{type: function, function: {...}}``) that ToolRequest takes."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


class Tool(Protocol):
    """A tool: its spec, and ``run`` with the decoded arguments -> the text result (ToolError on failure)."""

    @property
    def spec(self) -> ToolSpec: ...

    def run(self, arguments: Mapping[str, Any]) -> str: ...


def cap_text(text: str, limit: int = RESULT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n[… cut: the result had {len(text)} characters, only the first {limit} are shown]"
    )


def decode_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments (JSON object text or already an object) as a dict; ToolError when not an object."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        value = json.loads(arguments or "{}")
    except ValueError as exc:
        raise ToolError(f"The arguments are not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise ToolError("The arguments must be a JSON object.")
    return value


def string_argument(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f'The argument "{name}" must be a non-empty string.')
    return value


def run_tool(tool: Tool, arguments: str | Mapping[str, Any], limit: int = RESULT_LIMIT) -> tuple[str, bool]:
    """Run ``tool`` with untrusted ``arguments``: (the size-capped text result, whether it failed).

    Any error becomes a result the model can read; nothing propagates."""
    try:
        result = tool.run(decode_arguments(arguments))
        return cap_text(result, limit), False
    except ToolError as exc:
        return cap_text(f"Error: {exc}", limit), True
    except Exception as exc:  # a tool's bug must not end the reply: the model is told
        return cap_text(f"Error: the tool failed ({type(exc).__name__}: {exc}).", limit), True
