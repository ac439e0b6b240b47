"""Facts about this machine for will-it-fit advice: RAM, cores, GPUs and VRAM, measured memory speed.

Nothing here needs torch: RAM comes from /proc/meminfo, GPUs from ``nvidia-smi`` when it is on PATH, and the
speed figures from a short numpy benchmark (a fraction of a second) run with the thread count generation uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Memory bandwidth of common GPUs in GB/s (vendor data sheets); others get DEFAULT_GPU_BANDWIDTH.
GPU_BANDWIDTH_GBPS: dict[str, float] = {
    "H200": 4800,
    "H100 PCIe": 2000,
    "H100": 3350,
    "A100": 1935,
    "L40S": 864,
    "L40": 864,
    "L4": 300,
    "A10": 600,
    "T4": 320,
    "V100": 900,
    "RTX 4090": 1008,
    "RTX 4080": 717,
    "RTX 4070": 504,
    "RTX 4060": 272,
    "RTX 3090": 936,
    "RTX 3080": 760,
    "RTX 3070": 448,
    "RTX 3060": 360,
    "RTX 5090": 1792,
    "RTX 5080": 960,
}
DEFAULT_GPU_BANDWIDTH = 400.0


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as nvidia-smi reports it."""

    name: str
    total_bytes: int
    free_bytes: int
    bandwidth_bytes_per_s: float


@dataclass(frozen=True)
class MachineFacts:
    """What the estimates need to know about the machine (inject a made-up one in tests)."""

    total_ram_bytes: int
    available_ram_bytes: int
    cores: int
    threads: int  # the thread count generation will use (llama.cpp's automatic value)
    bandwidth_bytes_per_s: float  # measured: bytes moved per second by a large copy (read + write)
    compute_weights_per_s: float  # measured: matrix-vector weights per second, cache-resident float32
    dispatch_seconds: float  # measured: time of one tiny vector operation (per-operation overhead)
    gpus: tuple[GpuFacts, ...] = field(default_factory=tuple)

    @property
    def free_vram_bytes(self) -> int:
        return sum(gpu.free_bytes for gpu in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures, rounded for people."""
        data = asdict(self)
        data["bandwidth_gb_per_s"] = round(self.bandwidth_bytes_per_s / 1e9, 2)
        data["compute_gweights_per_s"] = round(self.compute_weights_per_s / 1e9, 2)
        data["dispatch_us"] = round(self.dispatch_seconds * 1e6, 3)
        for key in ("bandwidth_bytes_per_s", "compute_weights_per_s", "dispatch_seconds"):
            data.pop(key)
        return data


def read_meminfo(path: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(total, available) RAM in bytes; (0, 0) where /proc/meminfo is missing (not Linux)."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return 0, 0
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return total, values.get("MemAvailable", values.get("MemFree", 0))


def gpu_bandwidth(name: str) -> float:
    """Bytes/s for a GPU name from the table (longest matching key), else the default."""
    matches = [key for key in GPU_BANDWIDTH_GBPS if key.lower() in name.lower()]
    best = max(matches, key=len) if matches else None
    return (GPU_BANDWIDTH_GBPS[best] if best else DEFAULT_GPU_BANDWIDTH) * 1e9


def parse_nvidia_smi(output: str) -> tuple[GpuFacts, ...]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits``."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            total, free = int(float(parts[1])) * 2**20, int(float(parts[2])) * 2**20
        except ValueError:
            continue
        gpus.append(GpuFacts(parts[0], total, free, gpu_bandwidth(parts[0])))
    return tuple(gpus)


def query_gpus() -> tuple[GpuFacts, ...]:
    """NVIDIA GPUs through nvidia-smi; none when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        result = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else ()


def _in_threads(threads: int, work: Callable[[int], None]) -> float:
    """Run ``work(i)`` in ``threads`` threads started together; the wall time of the slowest."""
    if threads <= 1:
        started = time.perf_counter()
        work(0)
        return time.perf_counter() - started
    barrier = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def measure_bandwidth(threads: int, size_bytes: int = 32 * 2**20, repeats: int = 10) -> float:
    """Bytes per second (read + write) of large copies, one buffer per thread (numpy releases the GIL)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with llama-cpp-python and transformers
        src, dst = bytearray(size_bytes), bytearray(size_bytes)
        started = time.perf_counter()
        dst[:] = src
        return 2 * size_bytes / max(time.perf_counter() - started, 1e-9)
    sources = [np.ones(size_bytes // 8) for _ in range(threads)]
    targets = [np.empty_like(s) for s in sources]
    for s, t in zip(sources, targets, strict=True):
        np.copyto(t, s)  # touch the pages first: the first write pays for page faults
    # Total time over all repeats (a sustained rate): generation shares the CPU the way this loop does.
    total = sum(_in_threads(threads, lambda i: np.copyto(targets[i], sources[i])) for _ in range(repeats))
    return 2 * size_bytes * threads * repeats / max(total, 1e-9)


def _single_threaded_blas() -> Any:
    """A context manager limiting BLAS to one thread (our threads supply the parallelism)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - without it, small matrices stay single-threaded anyway
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def measure_compute(
    threads: int, rows: int = 256, cols: int = 1024, calls: int = 100, repeats: int = 40
) -> float:
    """Weights per second of float32 matrix-vector products on a cache-resident matrix, per ``threads``."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return 1e10
    matrices = [np.ones((rows, cols), dtype=np.float32) for _ in range(threads)]
    vector = np.ones(cols, dtype=np.float32)
    outs = [np.empty(rows, dtype=np.float32) for _ in range(threads)]

    def work(i: int) -> None:
        for _ in range(calls):
            np.matmul(matrices[i], vector, out=outs[i])

    with _single_threaded_blas():
        work(0)
        # A sustained rate (total time, not the best run): on a shared machine generation is slowed by
        # the neighbours just as this loop is.
        total = sum(_in_threads(threads, work) for _ in range(repeats))
    return rows * cols * calls * threads * repeats / max(total, 1e-9)


def measure_dispatch(calls: int = 1000) -> float:
    """Seconds per tiny vector operation: a proxy for per-operation overhead on this CPU."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return 1e-6
    a, b, out = np.ones(64), np.ones(64), np.empty(64)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        for _ in range(calls):
            np.add(a, b, out=out)
        times.append(time.perf_counter() - started)
    return sum(times) / (len(times) * calls)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def generation_threads() -> int:
    """The llama.cpp loader's automatic thread count (kept in step with loaders/llama_cpp.py)."""
    cores = cpu_cores()
    if cores <= 2:
        return 1
    if cores <= 8:
        return cores - 1
    return cores // 2


class MachineProbe:
    """Measures the machine once per thread count and keeps the result (one per process, owned by a caller)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[float, float, float]] = {}
        self._lock = threading.Lock()

    def facts(
        self, threads: int | None = None, *, measure_speed: bool = True, remeasure: bool = False
    ) -> MachineFacts:
        """Current RAM and GPU figures, and speed figures measured with ``threads`` (default: automatic).

        With ``measure_speed=False`` the speed figures are the cached ones, or 0 when never measured (a fit
        check needs only memory figures and should not spend half a second on a benchmark).
        """
        threads = threads or generation_threads()
        with self._lock:
            if measure_speed and (remeasure or threads not in self._cache):
                self._cache[threads] = (
                    measure_bandwidth(threads),
                    measure_compute(threads),
                    measure_dispatch(),
                )
            bandwidth, compute, dispatch = self._cache.get(threads, (0.0, 0.0, 0.0))
        total, available = read_meminfo()
        return MachineFacts(
            total_ram_bytes=total,
            available_ram_bytes=available,
            cores=cpu_cores(),
            threads=threads,
            bandwidth_bytes_per_s=bandwidth,
            compute_weights_per_s=compute,
            dispatch_seconds=dispatch,
            gpus=query_gpus(),
        )
