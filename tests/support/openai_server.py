"""OpenAI-compatible servers for remote-loader tests: llama.cpp's (``python -m llama_cpp.server``) as a
subprocess, and a scripted one in a thread that streams the replies a test gives it (reasoning, tool calls)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.servers import free_port


class OpenAIServer:
    """``python -m llama_cpp.server`` on a loopback port, serving one GGUF file under ``alias``."""

    def __init__(
        self,
        model: Path,
        log: Path | None = None,
        *,
        alias: str = "smollm2",
        n_ctx: int = 2048,
        api_key: str = "",
    ) -> None:
        self.model = model
        self.alias = alias
        self.n_ctx = n_ctx
        self.api_key = api_key
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log or Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> OpenAIServer:
        """Start the server and wait until /v1/models answers (the log is shown if it dies)."""
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            "1",
            *(["--api_key", self.api_key] if self.api_key else []),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"llama_cpp.server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError:
                return self  # answering (401 without the key) is enough
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(
            f"llama_cpp.server did not start in {timeout} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- a scripted server: replies given by the test, every request recorded ----------------------------------


@dataclass
class ScriptedReply:
    """One streamed chat reply: each delta as OpenAI's ``choices[0].delta`` (content, reasoning_content,
    reasoning, tool_calls ...), then the finish reason."""

    deltas: list[dict[str, Any]]
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 7})


class ScriptedOpenAIServer:
    """An OpenAI-compatible server on a loopback port whose chat replies are scripted: ``replies`` are
    streamed in turn (the last one again once they run out), and every request body is kept in
    ``requests``. It lists one model and has no tokenizer or /props (as a hosted API)."""

    def __init__(self, replies: list[ScriptedReply], *, model: str = "scripted-model") -> None:
        self.replies = list(replies)
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> ScriptedOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self) -> ScriptedReply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        reply = self._next_reply()
        envelope = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0}
        envelope["model"] = self.model
        for delta in reply.deltas:
            yield {**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield {**envelope, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]}
        if (body.get("stream_options") or {}).get("include_usage"):
            total = reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
            yield {**envelope, "choices": [], "usage": {**reply.usage, "total_tokens": total}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": "not found"}})
                    return
                server.requests.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for event in server._events(body):
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        return Handler
