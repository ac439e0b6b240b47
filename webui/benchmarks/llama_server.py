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


def batched_bench(
    binary: Path,
    model: Path,
    *,
    prompt: int,
    tokens: int,
    sequences: int,
    threads: int,
    batch_threads: int,
    n_ctx: int,
) -> tuple[float, float]:
    """llama.cpp's own ``llama-batched-bench`` (no server): generated tokens per second over the whole time,
    prompt evaluation included, of ``sequences`` sequences decoded together and of one sequence alone, each with
    ``prompt`` prompt tokens and ``tokens`` generated ones."""
    args = (
        *("-m", str(model), "-c", str(n_ctx * sequences), "-npp", str(max(1, prompt)), "-ntg", str(tokens)),
        *("-npl", f"1,{sequences}", "-t", str(threads), "-tb", str(batch_threads), "-ngl", "0"),
    )
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama-batched-bench exited with {done.returncode}: {done.stderr[-1000:]}")
    total_s = batched_bench_times(done.stdout)
    if 1 not in total_s or sequences not in total_s:
        raise RuntimeError(f"llama-batched-bench printed no table: {done.stdout[-1000:]}")
    return sequences * tokens / total_s[sequences], tokens / total_s[1]


def batched_bench_times(table: str) -> dict[int, float]:
    """Seconds in all (prompt and generation) per number of sequences, from llama-batched-bench's table:
    ``| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |``."""
    total_s: dict[int, float] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[2].isdigit():
            total_s[int(cells[2])] = float(cells[8])
    return total_s
