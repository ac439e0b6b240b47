"""Tool calls in model output: the family from the chat template, then a streaming parser for it."""

from webui.core.tools.base import ToolFormat, new_call_id
from webui.core.tools.formats import FORMATS, detect_tool_format, get_tool_format
from webui.core.tools.stream import (
    ParsedToolCall,
    ToolCallParser,
    ToolParseDelta,
    accumulate,
    parse_tool_calls,
)

__all__ = [
    "FORMATS",
    "ParsedToolCall",
    "ToolCallParser",
    "ToolFormat",
    "ToolParseDelta",
    "accumulate",
    "detect_tool_format",
    "get_tool_format",
    "new_call_id",
    "parse_tool_calls",
]
