"""What a model's chat template lets it do: think (in which format, with which controls) and call tools (in
which family's syntax). Read from the template's text, never from the model's file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webui.core.reasoning.controls import ThinkingControls, thinking_controls
from webui.core.reasoning.formats import ReasoningFormat, detect_reasoning_format
from webui.core.tools.formats import detect_tool_format

__all__ = ["TemplateAbilities", "abilities_of"]

# A template that shows tools to the model reads the ``tools`` variable; these words say it does.
_TOOL_WORDS = ("tools", "tool_calls")


@dataclass(frozen=True)
class TemplateAbilities:
    """The thinking format and controls, and the tool-call family, of one chat template."""

    reasoning: ReasoningFormat
    thinking: ThinkingControls = field(default_factory=ThinkingControls)
    tool_format: str = "generic"
    tools: bool = False  # the template renders tool definitions and calls

    @property
    def thinks(self) -> bool:
        return self.reasoning.thinks


def abilities_of(template: str | None, special_tokens: tuple[str, ...] = ()) -> TemplateAbilities:
    """The abilities ``template`` (plus the tokenizer's special tokens) implies; none for no template."""
    source = template or ""
    tools = any(word in source for word in _TOOL_WORDS)
    return TemplateAbilities(
        reasoning=detect_reasoning_format(source, special_tokens),
        thinking=thinking_controls(source),
        tool_format=detect_tool_format(source),
        tools=tools,
    )
