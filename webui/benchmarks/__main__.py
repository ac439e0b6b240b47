"""``python -m webui.benchmarks`` = ``webui bench``."""

import sys

from webui.benchmarks.runner import main

sys.exit(main())
