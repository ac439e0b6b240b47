"""MCP servers from user_data/mcp.json, through the official SDK: a test server (tests/support/mcp_server.py)
started over stdio and over streamable HTTP, its tools listed and called; errors are results, a server that
fails is a status line, and nothing but mcp.json starts a server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mcp_server import http_server, stdio_entry
from webui.core.agent import Toolbox, run_tool
from webui.core.agent.mcp_config import parse_mcp_config, read_mcp_config
from webui.core.characters.model import Character

pytestmark = [pytest.mark.slow]  # starts real MCP servers (child processes, an HTTP server)


def write_config(user_data: Path, servers: dict[str, object]) -> None:
    user_data.mkdir(parents=True, exist_ok=True)
    (user_data / "mcp.json").write_text(json.dumps({"mcpServers": servers}))


@pytest.fixture
def stdio_box(tmp_path: Path) -> Iterator[tuple[Toolbox, Path]]:
    notes = tmp_path / "notes.txt"
    write_config(tmp_path, {"weather": stdio_entry(notes)})
    box = Toolbox(tmp_path)
    box.start_servers()
    yield box, notes
    box.close()


def tools_by_name(box: Toolbox) -> dict[str, object]:
    return {tool.spec.name: tool for tool in box.all_tools()}


def test_a_stdio_server_lists_and_runs_its_tools(stdio_box: tuple[Toolbox, Path]) -> None:
    box, notes = stdio_box
    assert box.server_status() == [("weather", "3 tools")]
    specs = {spec.name: spec for spec in box.specs()}
    weather = specs["get_weather"]
    assert weather.source == "weather" and weather.read_only  # readOnlyHint true
    assert weather.parameters["required"] == ["city"]
    assert not specs["save_note"].read_only and not specs["explode"].read_only  # no hint: asks first
    tools = {tool.spec.name: tool for tool in box.enabled()}
    assert run_tool(tools["get_weather"], '{"city": "Paris"}') == (
        '{"temperature": 22, "condition": "sunny"}',
        False,
    )
    assert run_tool(tools["save_note"], {"text": "hello"}) == ("Saved.", False)
    assert notes.read_text() == "hello\n"  # the child got the env from mcp.json


def test_tool_errors_are_results_and_the_server_keeps_serving(stdio_box: tuple[Toolbox, Path]) -> None:
    box, _ = stdio_box
    tools = {tool.spec.name: tool for tool in box.enabled()}
    result, failed = run_tool(tools["explode"], {})
    assert failed and "exploded on purpose" in result
    result, failed = run_tool(tools["get_weather"], '{"city": 42}')  # fails the tool's schema
    assert failed
    assert run_tool(tools["get_weather"], {"city": "Rome"})[0] == '{"temperature": 25, "condition": "cloudy"}'


def test_a_streamable_http_server(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    with http_server(notes) as url:
        write_config(tmp_path, {"remote": {"url": url, "headers": {"X-Test": "1"}}})
        box = Toolbox(tmp_path)
        try:
            box.start_servers()
            assert box.server_status() == [("remote", "3 tools")]
            tools = {tool.spec.name: tool for tool in box.enabled()}
            assert run_tool(tools["get_weather"], {"city": "Tokyo"})[0] == (
                '{"temperature": 26, "condition": "cloudy"}'
            )
            assert run_tool(tools["save_note"], {"text": "over http"}) == ("Saved.", False)
            assert notes.read_text() == "over http\n"
        finally:
            box.close()


def test_clashing_names_get_the_servers_prefix(tmp_path: Path) -> None:
    write_config(tmp_path, {"one": stdio_entry(), "two": stdio_entry()})
    box = Toolbox(tmp_path)
    try:
        box.start_servers()
        names = [spec.name for spec in box.specs()]
        assert names.count("get_weather") == 1 and "two_get_weather" in names
        assert run_tool(tools_by_name(box)["two_get_weather"], {"city": "Berlin"})[0].startswith(  # type: ignore[arg-type]
            '{"temperature": 18'
        )
    finally:
        box.close()


def test_a_server_that_cannot_start_is_a_status_not_a_crash(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "missing": {"command": str(tmp_path / "no-such-program")},
            "gone": {"url": "http://127.0.0.1:9/mcp"},
            "ok": stdio_entry(),
        },
    )
    box = Toolbox(tmp_path)
    try:
        box.start_servers()
        status = dict(box.server_status())
        assert status["missing"].startswith("error:") and status["gone"].startswith("error:")
        assert status["ok"] == "3 tools"
        assert "get_weather" in [spec.name for spec in box.specs()]
    finally:
        box.close()


def test_mcp_json_notation_and_its_mistakes() -> None:
    config = parse_mcp_config(
        json.dumps(
            {
                "mcpServers": {
                    "fs": {"command": "npx", "args": ["-y", "server-filesystem", "/tmp"], "env": {"A": "1"}},
                    "web": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer x"}},
                    "both": {"command": "x", "url": "https://example.com"},
                    "neither": {},
                    "badargs": {"command": "x", "args": "not a list"},
                    "ftp": {"url": "ftp://example.com"},
                    "off": {"command": "x", "disabled": True},
                }
            }
        )
    )
    assert [(s.name, s.transport) for s in config.servers] == [("fs", "stdio"), ("web", "http")]
    assert config.servers[0].args == ("-y", "server-filesystem", "/tmp")
    assert len(config.warnings) == 4
    assert parse_mcp_config("{nope").warnings and not parse_mcp_config("{nope").servers
    assert parse_mcp_config("[]").warnings


def test_servers_come_from_mcp_json_only(tmp_path: Path) -> None:
    """No mcp.json: no server, whatever a personality (e.g. an imported card) says."""
    assert read_mcp_config(tmp_path).servers == ()
    card = Character.model_validate(
        {"name": "Sneaky", "tools": ["get_weather", "rm_rf"], "mcpServers": {"evil": {"command": "touch"}}}
    )
    box = Toolbox(tmp_path)
    box.start_servers()
    assert box.server_status() == []
    assert [tool.spec.name for tool in box.enabled(card.tools)] == []  # names only narrow, never add
    box.close()


def test_reloading_reads_mcp_json_again(tmp_path: Path) -> None:
    box = Toolbox(tmp_path)
    try:
        box.start_servers()
        assert box.server_status() == []
        write_config(tmp_path, {"weather": stdio_entry()})
        box.reload_servers()
        assert box.server_status() == [("weather", "3 tools")]
        write_config(tmp_path, {})
        box.reload_servers()
        assert box.server_status() == [] and "get_weather" not in [spec.name for spec in box.specs()]
    finally:
        box.close()
