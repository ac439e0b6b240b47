"""What a request asks of tools: the definitions it offers, which of them the model must call, and how many."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHOICES = ("none", "auto", "required")


class ToolRequestError(ValueError):
    """Tools or a tool choice that cannot be used; the message is meant for the client."""


@dataclass(frozen=True)
class ToolRequest:
    """Tools offered to the model (OpenAI-shaped: ``{type: function, function: {name, description, parameters}}``).

    ``choice`` is ``none`` (the model answers in text: the tools are not shown to it), ``auto`` (it may call),
    ``required`` (it must call one) or the name of the one function it must call.
    """

    definitions: tuple[Mapping[str, Any], ...]
    choice: str = "auto"
    parallel: bool = True

    @classmethod
    def build(
        cls, definitions: Sequence[Mapping[str, Any]] | None, choice: str = "auto", parallel: bool = True
    ) -> ToolRequest | None:
        """A checked request; None when no tools are offered. ToolRequestError for a bad definition or choice."""
        if not definitions:
            if choice not in ("none", "auto"):
                raise ToolRequestError(f'tool_choice "{choice}" needs tools, but the request has none.')
            return None
        functions: list[dict[str, Any]] = []
        for index, tool in enumerate(definitions):
            function = tool.get("function", tool) if isinstance(tool, Mapping) else None
            name = function.get("name") if isinstance(function, Mapping) else None
            if not isinstance(name, str) or not name.strip():
                raise ToolRequestError(f"tools[{index}] has no function name.")
            parameters = function.get("parameters") if isinstance(function, Mapping) else None
            if parameters is not None and not isinstance(parameters, Mapping):
                raise ToolRequestError(f"tools[{index}] ({name}): parameters must be a JSON schema object.")
            functions.append({"type": "function", "function": dict(function)})
        names = [str(f["function"]["name"]) for f in functions]
        if choice not in CHOICES and choice not in names:
            raise ToolRequestError(
                f'tool_choice names the function "{choice}", but the request offers only: {", ".join(names)}.'
            )
        return cls(tuple(functions), choice, parallel)

    @property
    def names(self) -> list[str]:
        return [str(tool["function"]["name"]) for tool in self.definitions]

    @property
    def offered(self) -> tuple[Mapping[str, Any], ...]:
        """The definitions the template shows the model (none for ``tool_choice: none``)."""
        return () if self.choice == "none" else self.definitions

    @property
    def forced(self) -> bool:
        """Whether the model must call (``required`` or a named function)."""
        return self.choice not in ("none", "auto")

    def schema_of(self, name: str) -> Mapping[str, Any]:
        """The parameters schema of the function ``name`` (an open object when it gives none)."""
        for tool in self.definitions:
            function = tool["function"]
            if function["name"] == name:
                parameters = function.get("parameters")
                return parameters if isinstance(parameters, Mapping) else {"type": "object"}
        raise KeyError(name)
