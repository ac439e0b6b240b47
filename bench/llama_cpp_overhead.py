"""Palabre vs raw llama-cpp-python on the same GGUF, interleaved, in one run: ``webui bench --section llama``.

Kept as a script for muscle memory; every section of ``webui bench`` lives in ``webui/benchmarks/``.

    .venv/bin/python bench/llama_cpp_overhead.py [--model PATH] [--rounds 5] [--tokens 128] [--threads N] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from webui.benchmarks.runner import main

if __name__ == "__main__":
    sys.exit(main(["--section", "llama", *sys.argv[1:]]))
