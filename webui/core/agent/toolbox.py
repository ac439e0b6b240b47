"""The page's tools: the built-in ones and the MCP servers' tools, with the user's choices about them.

The choices live in ``user_data/tools.yaml`` (written by the Tools panel): which tools are switched off (the
fetch tool is off until the user turns it on), the folders the file tool may read, and whether API clients
may use the page's tools (off by default).

API clients cannot answer an approval question, so they are offered only the enabled tools that need none:
the read-only ones, and those the user listed under ``api_allowed`` in tools.yaml (the stored form of "Always
for this tool" for the API; empty by default). See ``Toolbox.api_tools``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webui.core.agent.base import Tool, ToolSpec
from webui.core.agent.calculator import Calculator
from webui.core.agent.clock import CurrentTime
from webui.core.agent.files import ReadFile
from webui.core.agent.mcp_client import McpHub, McpToolAdapter
from webui.core.agent.mcp_config import McpConfig, read_mcp_config
from webui.core.agent.web import FetchPage
from webui.core.paths import atomic_write_text

TOOLS_FILE = "tools.yaml"
BUILTIN_NAMES = ("calculator", "current_datetime", "read_file", "fetch_page")
_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class ToolSettings(BaseModel):
    """What the user chose in the Tools panel."""

    model_config = ConfigDict(extra="ignore")

    use_in_chat: bool = Field(
        False, description="Whether the Chat tab offers the enabled tools to the model."
    )
    disabled: list[str] = Field(
        default_factory=lambda: ["fetch_page"], description="Tools switched off (fetch_page is off at first)."
    )
    allowed_folders: list[str] = Field(default_factory=list, description="Folders read_file may read.")
    expose_to_api: bool = Field(
        False, description="Whether API clients may use the page's enabled tools (available_tools_for_api)."
    )
    api_allowed: list[str] = Field(
        default_factory=list,
        description="Tools that are not read-only which API clients may run without asking (none at first).",
    )


def read_tool_settings(user_data_dir: Path) -> ToolSettings:
    path = user_data_dir / TOOLS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ToolSettings.model_validate(data or {})
    except FileNotFoundError:
        return ToolSettings()
    except (OSError, yaml.YAMLError, ValidationError, UnicodeDecodeError):
        return ToolSettings()  # an unreadable file gives the safe defaults (fetch off, no folder, no API)


def write_tool_settings(user_data_dir: Path, settings: ToolSettings) -> None:
    text = "# Palabre's Tools panel choices (written by the page).\n" + yaml.safe_dump(
        settings.model_dump(mode="json"), sort_keys=False, allow_unicode=True
    )
    atomic_write_text(user_data_dir / TOOLS_FILE, text)


def _exposed_name(server: str, tool: str, taken: set[str]) -> str:
    name = _NAME.sub("_", tool)[:64] or "tool"
    if name in taken:
        name = _NAME.sub("_", f"{server}_{tool}")[:64]
    while name in taken:
        name += "_"
    return name


class Toolbox:
    """Every tool the page knows (built-in first, then each MCP server's), and the user's choices.

    MCP servers come from ``user_data/mcp.json`` only, and start on ``start_servers`` (the page calls it once).
    """

    def __init__(self, user_data_dir: Path, mcp: McpConfig | None = None) -> None:
        self.user_data_dir = user_data_dir
        self.settings = read_tool_settings(user_data_dir)
        self.mcp_config = mcp if mcp is not None else read_mcp_config(user_data_dir)
        self.hub = McpHub(self.mcp_config.servers)
        self._lock = threading.Lock()
        self._mcp_tools: list[Tool] = []
        self.started = threading.Event()  # set once start_servers has listed the servers' tools

    # -- the tools -------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        """Start the MCP servers of mcp.json and list their tools (failures show as each server's status)."""
        try:
            with self._lock:
                self.hub.start()
                taken = set(BUILTIN_NAMES)
                tools: list[Tool] = []
                for server in self.hub.servers.values():
                    for tool in server.tools:
                        name = _exposed_name(server.config.name, tool.name, taken)
                        taken.add(name)
                        tools.append(McpToolAdapter(server, tool, name))
                self._mcp_tools = tools
        finally:
            self.started.set()  # also after a failure: nobody waits for servers that will not come

    def reload_servers(self) -> None:
        """Stop the MCP servers, read mcp.json again and start its servers (after the user edited it)."""
        with self._lock:
            self.hub.close()
            self.mcp_config = read_mcp_config(self.user_data_dir)
            self.hub = McpHub(self.mcp_config.servers)
            self._mcp_tools = []
        self.start_servers()

    def builtin(self) -> list[Tool]:
        return [Calculator(), CurrentTime(), ReadFile(self.settings.allowed_folders), FetchPage()]

    def all_tools(self) -> list[Tool]:
        return [*self.builtin(), *self._mcp_tools]

    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self.all_tools()]

    def server_status(self) -> list[tuple[str, str]]:
        """(server name, status) per configured MCP server, and the config file's warnings."""
        rows = [(name, server.status) for name, server in self.hub.servers.items()]
        return rows + [("mcp.json", warning) for warning in self.mcp_config.warnings]

    def enabled(self, allowed: Iterable[str] | None = None) -> list[Tool]:
        """The tools switched on, narrowed to ``allowed`` names when given (a personality's list)."""
        keep = None if allowed is None else set(allowed)
        off = set(self.settings.disabled)
        return [
            tool
            for tool in self.all_tools()
            if tool.spec.name not in off and (keep is None or tool.spec.name in keep)
        ]

    def close(self) -> None:
        self.hub.close()

    # -- the user's choices ----------------------------------------------------------------------------

    def update(
        self,
        *,
        enabled: Sequence[str] | None = None,
        folders: Sequence[str] | None = None,
        expose_to_api: bool | None = None,
        use_in_chat: bool | None = None,
        api_allowed: Sequence[str] | None = None,
    ) -> ToolSettings:
        """Save new choices (``enabled``: the names switched on, every other known tool is off)."""
        with self._lock:
            data: dict[str, Any] = self.settings.model_dump()
            if enabled is not None:
                on = set(enabled)
                known = [tool.spec.name for tool in self.all_tools()]
                kept = [name for name in self.settings.disabled if name not in known]  # a server down now
                data["disabled"] = [name for name in known if name not in on] + kept
            if folders is not None:
                data["allowed_folders"] = [str(Path(f).expanduser()) for f in folders if f.strip()]
            if expose_to_api is not None:
                data["expose_to_api"] = bool(expose_to_api)
            if use_in_chat is not None:
                data["use_in_chat"] = bool(use_in_chat)
            if api_allowed is not None:
                data["api_allowed"] = [str(name) for name in api_allowed]
            self.settings = ToolSettings.model_validate(data)
            write_tool_settings(self.user_data_dir, self.settings)
            return self.settings

    def available_tools_for_api(self) -> list[Tool]:
        """The tools an API request may use: the page's enabled tools when the user turned on "expose to API
        clients" (off by default), else none. The API layer must still ask for approval of tools that are not
        read-only (or refuse them): see webui.core.agent.loop for the page's way."""
        return self.enabled() if self.settings.expose_to_api else []

    def api_tools(self, wait_s: float = 30.0) -> list[Tool]:
        """The tools the API offers its clients and runs for them: of ``available_tools_for_api``, those that
        need no approval (read-only, or listed in ``api_allowed``): nobody can answer one for an API request.
        While the MCP servers are starting, waits for them up to ``wait_s`` (only when exposing is on)."""
        if not self.settings.expose_to_api:
            return []
        self.started.wait(wait_s)
        allowed = set(self.settings.api_allowed)
        return [t for t in self.available_tools_for_api() if t.spec.read_only or t.spec.name in allowed]


def available_tools_for_api(toolbox: Toolbox | None) -> list[Tool]:
    """Module-level form for the API side: no toolbox (no page) means no tools."""
    return [] if toolbox is None else toolbox.available_tools_for_api()
