"""``user_data/mcp.json``: the MCP servers the user listed (Cursor / LM Studio / Claude Desktop notation).

    {"mcpServers": {"name": {"command": "...", "args": [...], "env": {...}},
                    "other": {"url": "https://.../mcp", "headers": {"Authorization": "..."}}}}

This file is the only place a server comes from: nothing downloaded (a card, a Modelfile) and no API request
can add one, because a stdio server is a program that runs with the user's rights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MCP_FILE = "mcp.json"


@dataclass(frozen=True)
class McpServerConfig:
    """One server: a command to start (stdio) or a URL (streamable HTTP)."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"


@dataclass(frozen=True)
class McpConfig:
    servers: tuple[McpServerConfig, ...] = ()
    warnings: tuple[str, ...] = ()


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _string_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def parse_mcp_config(text: str, source: str = MCP_FILE) -> McpConfig:
    """The servers in ``text``; what cannot be used is left out with a warning (never an exception)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return McpConfig(warnings=(f"{source} is not valid JSON ({exc}); no MCP server is used.",))
    servers_data = data.get("mcpServers") if isinstance(data, Mapping) else None
    if not isinstance(servers_data, Mapping):
        return McpConfig(warnings=(f'{source} has no "mcpServers" object; no MCP server is used.',))
    servers: list[McpServerConfig] = []
    warnings: list[str] = []
    for name, entry in servers_data.items():
        if not isinstance(entry, Mapping):
            warnings.append(f"MCP server {name!r}: not an object, left out.")
            continue
        if entry.get("disabled") is True:
            continue
        url, command = entry.get("url", ""), entry.get("command", "")
        args, env, headers = entry.get("args", []), entry.get("env", {}), entry.get("headers", {})
        cwd = entry.get("cwd")
        if not (isinstance(url, str) and isinstance(command, str)) or bool(url) == bool(command):
            warnings.append(f'MCP server {name!r}: give either "command" (stdio) or "url" (HTTP); left out.')
        elif url and not url.startswith(("http://", "https://")):
            warnings.append(f"MCP server {name!r}: the url must be http(s); left out.")
        elif not _strings(args) or not _string_map(env) or not _string_map(headers):
            warnings.append(f'MCP server {name!r}: "args" must be strings, "env"/"headers" string maps.')
        elif cwd is not None and not isinstance(cwd, str):
            warnings.append(f'MCP server {name!r}: "cwd" must be a string; left out.')
        else:
            servers.append(McpServerConfig(name, command, tuple(args), dict(env), cwd, url, dict(headers)))
    return McpConfig(tuple(servers), tuple(warnings))


def read_mcp_config(user_data_dir: Path) -> McpConfig:
    """``user_data/mcp.json`` (no file: no servers)."""
    path = user_data_dir / MCP_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return McpConfig()
    except (OSError, UnicodeDecodeError) as exc:
        return McpConfig(warnings=(f"{path} cannot be read ({exc}); no MCP server is used.",))
    return parse_mcp_config(text, str(path))
