"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) as a subprocess for remote-loader tests."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

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
