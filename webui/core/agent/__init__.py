"""Tools the model may use in the page: built-in ones, MCP servers' tools, and the loop that runs them.

Plain Python (no gradio, no fastapi). Tool arguments are untrusted model output; tools that are not
read-only run only after the user approves them; MCP servers start only from ``user_data/mcp.json``.
"""

from webui.core.agent.base import REJECTED, RESULT_LIMIT, Tool, ToolError, ToolSpec, cap_text, run_tool
from webui.core.agent.loop import (
    ApprovalGate,
    Approver,
    Decision,
    LoopUpdate,
    ToolLoop,
    ToolRound,
    ToolSession,
    ToolStep,
)
from webui.core.agent.toolbox import Toolbox, ToolSettings, available_tools_for_api

__all__ = [
    "REJECTED",
    "RESULT_LIMIT",
    "ApprovalGate",
    "Approver",
    "Decision",
    "LoopUpdate",
    "Tool",
    "ToolError",
    "ToolLoop",
    "ToolRound",
    "ToolSession",
    "ToolSettings",
    "ToolSpec",
    "ToolStep",
    "Toolbox",
    "available_tools_for_api",
    "cap_text",
    "run_tool",
]
