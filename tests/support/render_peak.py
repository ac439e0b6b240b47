"""Renders hostile templates in a process of their own and reports each render's peak memory (JSON on stdout).

Run by tests/test_template_memory.py as ``python -m tests.support.render_peak`` with ``{name: source}`` on stdin.
A process of its own, because the peak is read from the whole process (VmHWM): in the test process, threads left
by other tests (servers, models) allocate at the same time and their memory would be counted as the template's.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from webui.core.templates.store import InstructionTemplate, TemplateError, TemplateOutputTooLargeError


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory (or, with "VmHWM", its peak since the last reset), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def wear_the_allocator() -> None:
    """Free one 32 MiB block, as a long-running server has: glibc then serves large blocks from its heap
    instead of mmap, so a growing list is copied (old and new both held) rather than remapped: the worst case."""
    block = bytearray(32 * 2**20)
    del block


def measure(source: str) -> dict[str, object]:
    """One render of ``source``: what stopped it, the peak and the memory kept afterwards, both in MiB."""
    gc.collect()
    before = rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    started = time.monotonic()
    error: BaseException | None = None
    try:
        InstructionTemplate("hostile", source).render([{"role": "user", "content": "hi"}])
    except Exception as exc:  # reported to the test, which judges it
        error = exc
    elapsed = time.monotonic() - started
    return {
        "error": type(error).__name__ if error else None,
        "template_error": isinstance(error, TemplateError),
        "message": str(error) if error else "",
        "trimmed": isinstance(error, TemplateOutputTooLargeError),
        "chained": error is not None and (error.__context__ is not None or error.__cause__ is not None),
        "peak": rss_mib("VmHWM") - before,
        "after": rss_mib() - before,
        "elapsed": elapsed,
    }


def main() -> None:
    sources: dict[str, str] = json.load(sys.stdin)
    wear_the_allocator()
    json.dump({name: measure(source) for name, source in sources.items()}, sys.stdout)


if __name__ == "__main__":
    main()
