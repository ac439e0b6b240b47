"""Clean-up of the files uploaded to the page: Gradio keeps every upload until told otherwise.

Uploads (character cards, chat imports, avatars, lorebooks) are read by their handler at once, or held by a
form until the user saves it. The janitor deletes the ones older than :data:`UPLOAD_MAX_AGE_S` every
:data:`SWEEP_EVERY_S`, and all of them when the server stops, so uploads never pile up on disk. Only files
Gradio recorded as uploads are touched: the cached copies the page shows (avatars, exports) stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import MutableSet
from pathlib import Path

log = logging.getLogger(__name__)

UPLOAD_MAX_AGE_S = 3600.0  # an hour to finish a form that holds an upload (an avatar before Save)
SWEEP_EVERY_S = 300.0


class UploadJanitor:
    """Deletes the files in ``uploads`` (Gradio's ``blocks.upload_file_set``) once they are old enough."""

    def __init__(
        self,
        uploads: MutableSet[str],
        max_age_s: float = UPLOAD_MAX_AGE_S,
        every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.uploads = uploads
        self.max_age_s = max_age_s
        self.every_s = every_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, max_age_s: float | None = None) -> int:
        """Delete uploads older than ``max_age_s`` (default: the janitor's); how many were deleted."""
        age_limit = self.max_age_s if max_age_s is None else max_age_s
        now = time.time()
        deleted = 0
        for name in list(self.uploads):  # a copy: Gradio adds uploads from its event loop meanwhile
            path = Path(name)
            try:
                if now - path.lstat().st_ctime < age_limit:
                    continue
                path.unlink()
                deleted += 1
                _remove_empty_parent(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("Could not delete the old upload %s: %s", path, exc)
                continue
            self.uploads.discard(name)
        return deleted

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="palabre-uploads", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop sweeping and delete every upload: nothing needs them once the server is gone."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.sweep(max_age_s=0)

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            self.sweep()


def _remove_empty_parent(path: Path) -> None:
    """Gradio puts each upload in a folder of its own, named by its hash: remove that folder when emptied."""
    name = path.parent.name
    if len(name) < 32 or any(ch not in "0123456789abcdef" for ch in name):
        return  # not a hash folder: never remove anything else (the temporary folder itself, say)
    with contextlib.suppress(OSError):  # not empty (another file of the same hash) or already gone
        os.rmdir(path.parent)
