"""``webui serve`` as a subprocess for the benchmarks, and a streaming HTTP client that times what it reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from webui.config import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB; 0 where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def serve_args(model: Path, settings: Sequence[str]) -> list[str]:
    """``webui serve`` arguments that load ``model`` (a file in the models folder) with ``settings``."""
    args = ["--model", model.name]
    for setting in settings:
        args += ["--setting", setting]
    return args


class ServeProcess:
    """``python -m webui serve`` on a free port over ``user_data``; ``start()`` returns the seconds until the
    page (``GET /``) answers."""

    def __init__(self, user_data: Path, args: Sequence[str], log: Path) -> None:
        self.user_data = user_data
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 300, need_model: bool = True) -> float:
        env = {
            **os.environ,
            "GRADIO_TEMP_DIR": str(self.user_data.parent / "gradio-tmp"),
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        command = [sys.executable, "-m", "webui", "serve", "--port", str(self.port)]
        command += ["--user-data-dir", str(self.user_data), *self.args]
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = started + timeout
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"webui serve exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                    )
                try:
                    if client.get(f"{self.url}/").status_code == 200 and (
                        not need_model or b'"model":null' not in client.get(f"{self.url}/health").content
                    ):
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"webui serve did not answer in {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid) if self.process else 0.0

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Ask ``process`` to end (SIGTERM), and kill it if it has not within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Streamed:
    """What a client saw of one streamed reply: seconds from the request, token counts, the text."""

    ttft_s: float  # first text
    last_s: float  # last text
    total_s: float  # end of the stream
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int  # of the prompt's, reused from the server's cache
    chunks: int  # text events
    text: str

    @property
    def gen_tps(self) -> float:
        """Tokens per second between the first and the last text (the first token's wait excluded)."""
        span = self.last_s - self.ttft_s
        return (self.completion_tokens - 1) / span if self.completion_tokens > 1 and span > 0 else 0.0


def stream_timed(client: httpx.Client, url: str, body: dict[str, Any]) -> Streamed:
    """POST a streaming OpenAI-style request (completions or chat) and time what arrives."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage: dict[str, Any] = {}
    text_parts: list[str] = []
    with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.read()[:500]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if text:
                    now = time.perf_counter() - start
                    first = first or now
                    last = now
                    chunks += 1
                    text_parts.append(text)
    return Streamed(
        ttft_s=first,
        last_s=last,
        total_s=time.perf_counter() - start,
        completion_tokens=int(usage.get("completion_tokens", chunks)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
        chunks=chunks,
        text="".join(text_parts),
    )


def client_load(
    request: Callable[[httpx.Client, int], Streamed], clients: int, *, at_once: bool
) -> dict[str, float]:
    """Requests 0 .. ``clients`` - 1, all at once or one after another; aggregate generated tokens/s over the
    wall time, how many failed (counted, never hidden), and the mean prompt tokens per request the server
    evaluated (those it took from its cache left out)."""
    results: list[Streamed | BaseException] = []
    lock = threading.Lock()

    def worker(indexes: Sequence[int]) -> None:
        for index in indexes:
            # A connection per request: llama-server may close a kept-alive one after a stream, which would
            # count as a failed request that a real client simply retries.
            with httpx.Client(timeout=600) as client:
                try:
                    outcome: Streamed | BaseException = request(client, index)
                except BaseException as exc:
                    outcome = exc
            with lock:
                results.append(outcome)

    groups = [[i] for i in range(clients)] if at_once else [list(range(clients))]
    threads = [threading.Thread(target=worker, args=(group,)) for group in groups]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    done = [r for r in results if isinstance(r, Streamed)]
    produced = sum(r.completion_tokens for r in done)
    evaluated = sum(r.prompt_tokens - r.cached_tokens for r in done) / len(done) if done else 0.0
    return {
        "tps": produced / wall if wall else 0.0,
        "errors": float(len(results) - len(done)),
        "evaluated_prompt": evaluated,
    }
