"""Telling a thinking model's reasoning from its answer, for every family's markers, while the reply streams."""

from webui.core.reasoning.controls import ThinkingControls, thinking_controls
from webui.core.reasoning.formats import (
    FORMATS,
    Phase,
    ReasoningFormat,
    detect_reasoning_format,
    initial_phase,
)
from webui.core.reasoning.splitter import ReasoningSplitter, Split, split_reasoning, split_stream

__all__ = [
    "FORMATS",
    "Phase",
    "ReasoningFormat",
    "ReasoningSplitter",
    "Split",
    "ThinkingControls",
    "detect_reasoning_format",
    "initial_phase",
    "split_reasoning",
    "split_stream",
    "thinking_controls",
]
