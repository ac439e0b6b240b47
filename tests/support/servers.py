"""`webui serve` as a subprocess for tests that drive the real server (browser tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.config import make_config
from webui.benchmarks.server import stop_process
from webui.config import PROJECT_ROOT
from webui.provision import DEFAULT_MODEL_FILE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180, *, require_model: bool = True
) -> None:
    """Until /health answers (with a model loaded, unless ``require_model`` is False); the log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}health", timeout=2) as response:
                if not require_model or b'"model":null' not in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the server did not start in {timeout} s:\n{log.read_text()[-3000:]}")


class Server:
    """``webui serve`` over one user_data folder, on one port; it can be stopped and started again.

    With ``model`` it serves the default model (n_ctx 2048); without, it starts with ``--no-model``.
    """

    def __init__(
        self,
        root: Path,
        model: Path | None = None,
        *,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = make_config(root / "user_data", *([model] if model else []))
        self.model = model
        self.extra_args = list(extra_args)  # more `webui serve` flags, e.g. ["--api-key", "k"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {
            **os.environ,
            "GRADIO_TEMP_DIR": str(root / "gradio-tmp"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            **(extra_env or {}),
        }
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "webui", "serve", "--port", str(self.port)]
        command += ["--user-data-dir", str(self.config.user_data_dir)]
        if self.model:
            command += ["--model", DEFAULT_MODEL_FILE, "--setting", "n_ctx=2048"]
        else:
            command += ["--no-model"]
        command += self.extra_args
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_serving(self.url, self.process, self.log, require_model=self.model is not None)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    @contextmanager
    def running(self) -> Iterator[Server]:
        """Started for the block, stopped after it (also when it fails)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


@contextmanager
def open_page(browser: Browser, url: str, *, timeout_ms: int = 60_000) -> Iterator[Page]:
    """A fresh browser context (no shared storage) showing ``url``; closed afterwards."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        yield page
    finally:
        context.close()
