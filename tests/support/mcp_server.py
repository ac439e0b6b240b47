"""An MCP server for the tests, written with the ``mcp`` SDK's server side (the low-level Server, so each tool's
definition is exactly what the tiny agent model was trained on).

Tools: ``get_weather(city)`` (annotated read-only; the agent model's trained results), ``save_note(text)`` (not
read-only: it appends the text to the file named by $PALABRE_TEST_NOTES, so a test sees whether it ran) and
``explode()`` (raises, so the client gets an error result).

    python -m tests.support.mcp_server stdio
    python -m tests.support.mcp_server http PORT      # streamable HTTP at http://127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server

from tests.support.agent_models import WEATHER, WEATHER_TOOL

NOTES_ENV = "PALABRE_TEST_NOTES"
GUARDED_ENV = "PALABRE_TEST_GUARDED"  # "1": get_weather is not read-only and notes each call it runs
CALLS_ENV = "PALABRE_TEST_CALLS"  # a file where every call is logged ("<name> <arguments JSON>" a line)


def build_server() -> Server[Any, Any]:
    server: Server[Any, Any] = Server("palabre-test")
    weather = WEATHER_TOOL["function"]
    guarded = os.environ.get(GUARDED_ENV) == "1"

    def note(text: str) -> None:
        notes = os.environ.get(NOTES_ENV)
        if notes:
            with Path(notes).open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")

    @server.list_tools()  # type: ignore[misc, no-untyped-call]
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=weather["name"],
                description=weather["description"],
                inputSchema=weather["parameters"],
                annotations=types.ToolAnnotations(readOnlyHint=not guarded),
            ),
            types.Tool(
                name="save_note",
                description="Save a note for the user.",
                inputSchema={
                    "type": "object",
                    "properties": {"text": {"type": "string", "description": "The note."}},
                    "required": ["text"],
                },
                annotations=types.ToolAnnotations(readOnlyHint=False, destructiveHint=False),
            ),
            types.Tool(name="explode", description="Always fails.", inputSchema={"type": "object"}),
        ]

    @server.call_tool()  # type: ignore[misc]
    async def call_tool(name: str, arguments: dict[str, Any]) -> list[types.TextContent]:
        calls = os.environ.get(CALLS_ENV)
        if calls:
            with Path(calls).open("a", encoding="utf-8") as handle:
                handle.write(f"{name} {json.dumps(arguments, sort_keys=True)}\n")
        if name == "get_weather":
            city = str(arguments.get("city", ""))
            if guarded:
                note(f"get_weather {city}")
            facts = WEATHER.get(city)
            text = json.dumps(facts) if facts else json.dumps({"error": f"unknown city {city}"})
            return [types.TextContent(type="text", text=text)]
        if name == "save_note":
            note(str(arguments.get("text", "")))
            return [types.TextContent(type="text", text="Saved.")]
        if name == "explode":
            raise RuntimeError("the test server exploded on purpose")
        raise ValueError(f"unknown tool {name}")

    return server


async def serve_stdio() -> None:
    from mcp.server.stdio import stdio_server

    server = build_server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http(port: int) -> None:
    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Mount

    manager = StreamableHTTPSessionManager(app=build_server())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    app = Starlette(routes=[Mount("/mcp", app=manager.handle_request)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]))
    else:
        import anyio

        anyio.run(serve_stdio)


# -- for the tests: the server's mcp.json entries, and the HTTP server as a process ------------------------


def stdio_entry(
    notes: Path | None = None, *, guarded: bool = False, calls: Path | None = None
) -> dict[str, Any]:
    """This server's mcp.json entry over stdio (the child gets only the environment the SDK allows, plus
    the notes file, the guarded switch and the calls log)."""
    root = Path(__file__).resolve().parents[2]
    entry: dict[str, Any] = {"command": sys.executable, "args": ["-m", "tests.support.mcp_server", "stdio"]}
    entry["cwd"] = str(root)
    env = {
        **({NOTES_ENV: str(notes)} if notes is not None else {}),
        **({GUARDED_ENV: "1"} if guarded else {}),
        **({CALLS_ENV: str(calls)} if calls is not None else {}),
    }
    if env:
        entry["env"] = env
    return entry


@contextlib.contextmanager
def http_server(notes: Path | None = None) -> Any:
    """This server over streamable HTTP on a free loopback port, for the block; yields its URL."""
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from tests.support.servers import free_port, stop_process

    port = free_port()
    env = {**os.environ, **({NOTES_ENV: str(notes)} if notes is not None else {})}
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_server", "http", str(port)], cwd=root, env=env
    )
    url = f"http://127.0.0.1:{port}/mcp/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the MCP test server exited with {process.returncode}")
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError:
                break  # it answers (a GET without a session is refused)
            except OSError:
                time.sleep(0.2)
                continue
            break
        yield url
    finally:
        stop_process(process)
