"""Every benchmark section (the same as ``webui bench``); flags as ``webui bench --help`` lists them.

.venv/bin/python bench/run_all.py [--json] [--section llama ...] [--skip-browser] [--threads 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from webui.benchmarks.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
