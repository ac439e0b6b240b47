"""llama.cpp's own C++ ``llama-server`` as a subprocess, the reference the parallel section compares with.

Build it with ``shared/tools/build-llama-cpp-tools.sh`` (outside the repository) and pass ``--llama-server
PATH``. It gets the same model, threads and context per slot as Palabre.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from webui.benchmarks.server import free_port, stop_process


class LlamaServerProcess:
    """``llama-server -m MODEL -np SLOTS`` on a free port; ``start()`` waits until ``/health`` answers 200."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        slots: int,
        n_ctx: int,
        threads: int,
        batch_threads: int,
        log: Path,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # -c is the whole KV cache, shared out per slot: n_ctx per slot, as Palabre's slots have.
        self.args: Sequence[str] = (
            *("-m", str(model), "-np", str(slots), "-c", str(n_ctx * slots)),
            *("-t", str(threads), "-tb", str(batch_threads), "-ngl", "0"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--no-webui"),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 120) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(self.binary), *self.args], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.perf_counter() + timeout
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {self.process.returncode}: see {self.log}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama-server did not answer in {timeout:.0f} s: see {self.log}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None
