"""MCP servers through the official ``mcp`` SDK (v1 line, pinned in the ``tools`` extra).

One background thread runs an asyncio loop; each server has one task that opens its transport (a child
process over stdio, or streamable HTTP), initializes the session, lists the tools and then serves calls from
a queue, so the SDK's contexts are entered and left in the same task. A server that fails to start, or a call
that fails, becomes a status line or an error result: it never takes the page down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from webui.core.agent.base import ToolError, ToolSpec
from webui.core.agent.mcp_config import McpServerConfig

START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class McpTool:
    """A tool a server offers, as it names it; ``read_only`` only when its annotations say readOnlyHint."""

    server: str
    name: str
    description: str
    parameters: Mapping[str, Any]
    read_only: bool


@dataclass
class _Call:
    name: str
    arguments: dict[str, Any]
    future: Future[str] = field(default_factory=Future)


def _result_text(result: Any) -> tuple[str, bool]:
    """A CallToolResult as text: its text parts (other kinds named), and whether it is an error."""
    parts: list[str] = []
    for item in getattr(result, "content", None) or ():
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(str(item.text))
        elif kind == "resource" and hasattr(getattr(item, "resource", None), "text"):
            parts.append(str(item.resource.text))
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and getattr(result, "structuredContent", None) is not None:
        import json

        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts), bool(getattr(result, "isError", False))


class McpServer:
    """One configured server's connection; ``start`` waits until its tools are listed (or it failed)."""

    def __init__(self, config: McpServerConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.tools: tuple[McpTool, ...] = ()
        self.error = ""
        self._loop = loop
        self._queue: asyncio.Queue[_Call | None] | None = None
        self._ready = threading.Event()
        self._task: Future[None] | None = None

    @property
    def status(self) -> str:
        if self.error:
            return f"error: {self.error}"
        return f"{len(self.tools)} tools" if self._ready.is_set() else "starting"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        if not self._ready.wait(timeout):
            self.error = f"did not answer within {timeout:.0f} s"
            self.stop()

    async def _transport(self, stack: AsyncExitStack) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        c = self.config
        if c.url:
            client = await stack.enter_async_context(create_mcp_http_client(headers=dict(c.headers) or None))
            return await stack.enter_async_context(streamable_http_client(c.url, http_client=client))
        params = StdioServerParameters(
            command=c.command, args=list(c.args), env=dict(c.env) or None, cwd=c.cwd
        )
        return await stack.enter_async_context(stdio_client(params))

    async def _serve(self) -> None:
        from mcp import ClientSession

        self._queue = asyncio.Queue()
        try:
            async with AsyncExitStack() as stack:
                streams = await self._transport(stack)
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                await session.initialize()
                listed = await session.list_tools()
                self.tools = tuple(
                    McpTool(
                        self.config.name,
                        tool.name,
                        tool.description or "",
                        tool.inputSchema or {"type": "object"},
                        bool(tool.annotations is not None and tool.annotations.readOnlyHint is True),
                    )
                    for tool in listed.tools
                )
                self._ready.set()
                while (call := await self._queue.get()) is not None:
                    await self._call(session, call)
        except BaseException as exc:  # the SDK raises exception groups and cancellations
            if not self.error:
                self.error = _describe(exc)
            self._ready.set()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._fail_waiting()

    async def _call(self, session: Any, call: _Call) -> None:
        try:
            result = await session.call_tool(
                call.name, call.arguments, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S)
            )
        except Exception as exc:
            call.future.set_exception(
                ToolError(f"the MCP server {self.config.name!r} failed: {_describe(exc)}")
            )
            return
        text, failed = _result_text(result)
        if failed:
            call.future.set_exception(ToolError(text or "the tool reported an error"))
        else:
            call.future.set_result(text)

    def _fail_waiting(self) -> None:
        queue = self._queue
        while queue is not None and not queue.empty():
            call = queue.get_nowait()
            if call is not None and not call.future.done():
                call.future.set_exception(ToolError(f"the MCP server {self.config.name!r} is not running."))

    def call(self, name: str, arguments: Mapping[str, Any], timeout: float = CALL_TIMEOUT_S + 5) -> str:
        """The text result of calling tool ``name``; ToolError when the tool or the server fails."""
        if self.error or self._queue is None or self._task is None or self._task.done():
            raise ToolError(
                f"The MCP server {self.config.name!r} is not running ({self.error or 'stopped'})."
            )
        call = _Call(name, dict(arguments))
        queue = self._queue
        self._loop.call_soon_threadsafe(queue.put_nowait, call)
        try:
            return call.future.result(timeout)
        except TimeoutError as exc:
            raise ToolError(f"The MCP server {self.config.name!r} did not answer in time.") from exc

    def stop(self) -> None:
        queue = self._queue
        if queue is not None and self._task is not None and not self._task.done():
            self._loop.call_soon_threadsafe(queue.put_nowait, None)
            try:
                self._task.result(10)
            except Exception:
                self._task.cancel()


def _describe(exc: BaseException) -> str:
    """The innermost message of an exception (group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class McpHub:
    """The configured servers' connections, on one background event loop."""

    def __init__(self, configs: tuple[McpServerConfig, ...]) -> None:
        self.servers: dict[str, McpServer] = {}
        self._configs = configs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every server (once); failures are kept as each server's ``error``."""
        if self._loop is not None or not self._configs:
            return  # started already, or no server to start (no thread either)
        try:
            import mcp  # noqa: F401
        except ImportError:
            for config in self._configs:
                server = McpServer(config, asyncio.new_event_loop())
                server.error = "the mcp package is not installed (pip install 'palabre[tools]')"
                self.servers[config.name] = server
            return
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="palabre-mcp", daemon=True)
        self._thread.start()
        for config in self._configs:
            server = self.servers[config.name] = McpServer(config, loop)
            server.start()

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop = None


class McpToolAdapter:
    """An MCP tool as a Tool, under the name the model sees (prefixed with the server's when it clashes)."""

    def __init__(self, server: McpServer, tool: McpTool, exposed_name: str) -> None:
        self._server = server
        self._tool = tool
        self.spec = ToolSpec(
            exposed_name, tool.description, tool.parameters, read_only=tool.read_only, source=tool.server
        )

    def run(self, arguments: Mapping[str, Any]) -> str:
        return self._server.call(self._tool.name, arguments)
