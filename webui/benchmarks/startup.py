"""Start-up (``import webui.core``, ``webui serve`` until the page answers) and memory against raw llama_cpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from webui.benchmarks.figures import Figure, Target, figure, median
from webui.benchmarks.server import ServeProcess
from webui.config import PROJECT_ROOT

_IMPORT_TIME = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
# A process that does what `serve` must at least do with a model: load it and generate a few tokens.
_RAW_MEMORY = """
import json, sys
import llama_cpp
path, n_ctx, threads, batch_threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(
    path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=batch_threads, flash_attn=True, verbose=False
)
for _ in llm.create_completion("<|im_start|>user\\nHello<|im_end|>\\n<|im_start|>assistant\\n", max_tokens=16, stream=True):
    pass
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(json.dumps({"peak_rss_mb": int(line.split()[1]) / 1024}))
"""


def _import_seconds(module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_TIME.format(module=module)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def import_time(rounds: int = 3) -> tuple[list[Figure], dict[str, Any]]:
    """``import webui.core`` (and the whole core behind the Service) in a fresh interpreter each time.

    The interpreter's own start is excluded; the two imports alternate.
    """
    times: dict[str, list[float]] = {"webui.core": [], "webui.core.service": []}
    for _ in range(rounds):
        for module, values in times.items():
            values.append(_import_seconds(module))
    return [
        figure(
            "start-up",
            "import webui.core",
            median(times["webui.core"]),
            "s",
            target=Target("value_at_most", 0.3),
            samples=rounds,
        ),
        figure(
            "start-up",
            "import webui.core.service (engine, prompts, stores)",
            median(times["webui.core.service"]),
            "s",
            target=Target("value_at_most", 0.3),
            samples=rounds,
        ),
    ], {"import_s": times}


def serve_time(workdir: Path, rounds: int = 2) -> tuple[list[Figure], dict[str, Any]]:
    """``webui serve --no-model`` until ``GET /`` answers 200 (model load excluded)."""
    times = []
    for number in range(rounds):
        user_data = workdir / f"startup-{number}" / "user_data"
        user_data.mkdir(parents=True, exist_ok=True)
        server = ServeProcess(user_data, ["--no-model"], workdir / f"startup-{number}.log")
        try:
            times.append(server.start(timeout=120, need_model=False))
        finally:
            server.stop()
    value = median(times)
    return [
        figure(
            "start-up",
            "webui serve until the page answers (no model)",
            value,
            "s",
            target=Target("value_at_most", 6.0),
            samples=rounds,
        )
    ], {"serve_s": times}


def raw_peak_rss_mb(model: Path, n_ctx: int, threads: int, batch_threads: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RAW_MEMORY, str(model), str(n_ctx), str(threads), str(batch_threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def memory(
    server_peak_mb: float, model: Path, n_ctx: int, threads: int, batch_threads: int
) -> tuple[list[Figure], dict[str, Any]]:
    """Peak RSS of ``serve`` (model loaded, after generating) against a raw llama_cpp process."""
    raw = raw_peak_rss_mb(model, n_ctx, threads, batch_threads)
    return [
        figure(
            "memory",
            "peak RSS of webui serve",
            server_peak_mb,
            "MB",
            reference=raw,
            reference_name="raw llama_cpp process",
            target=Target("excess_at_most", 400),
            samples=1,
            note=f"overhead {server_peak_mb - raw:.0f} MB",
        )
    ], {"serve_peak_mb": server_peak_mb, "raw_peak_mb": raw}
