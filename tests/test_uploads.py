"""The janitor that deletes old page uploads (webui/ui/uploads.py)."""

from __future__ import annotations

import time
from pathlib import Path

from webui.ui.uploads import UploadJanitor


def upload(root: Path, name: str) -> str:
    """A file where Gradio puts uploads: a folder named by the content's hash."""
    folder = root / ("ab" * 20)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("x")
    return str(path)


def test_old_uploads_are_deleted_and_recent_ones_kept(tmp_path: Path) -> None:
    first = upload(tmp_path, "first.json")
    uploads = {first}
    janitor = UploadJanitor(uploads, max_age_s=3600)
    assert janitor.sweep() == 0 and Path(first).exists()  # younger than an hour
    time.sleep(0.05)
    second = upload(tmp_path, "second.json")
    uploads.add(second)
    assert janitor.sweep(max_age_s=0.02) == 1  # only the first is old enough
    assert not Path(first).exists() and Path(second).exists() and uploads == {second}


def test_stopping_deletes_every_upload_and_its_hash_folder_but_nothing_else(tmp_path: Path) -> None:
    kept = tmp_path / "cached-avatar.png"
    kept.write_text("not an upload")
    name = upload(tmp_path, "card.png")
    uploads = {name, str(tmp_path / "already-gone.json")}
    janitor = UploadJanitor(uploads, every_s=0.01)
    janitor.start()
    janitor.stop()
    assert uploads == set() and not Path(name).parent.exists()
    assert kept.exists() and tmp_path.exists()
