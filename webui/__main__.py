"""``python -m webui``."""

import sys

from webui.cli import main

if __name__ == "__main__":
    sys.exit(main())
