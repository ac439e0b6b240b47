"""Models already in the Hugging Face cache (``huggingface_hub.scan_cache_dir``), usable without downloading.

``use_cached`` makes one appear in the models folder through symlinks: nothing is copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from webui.core.hub.refs import DownloadError, format_size, split_part


@dataclass(frozen=True)
class CachedModel:
    """A model in the Hugging Face cache that can be used without downloading it again."""

    repo_id: str
    commit: str
    refs: tuple[str, ...]
    path: Path  # a GGUF file (first part if split) or a snapshot folder
    kind: Literal["gguf", "folder"]
    size: int

    @property
    def label(self) -> str:
        refs = ",".join(self.refs) or self.commit[:8]
        what = self.path.name if self.kind == "gguf" else "model folder"
        return f"{self.repo_id} · {what} · {refs} · {format_size(self.size)}"


def hub_cache_dir() -> Path:
    """Where huggingface_hub caches downloads (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """GGUF files and Transformers model folders in the Hugging Face cache (the newest snapshot of each repo)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir or hub_cache_dir())
    except CacheNotFound:
        return []
    found: list[CachedModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            found.extend(_snapshot_models(repo.repo_id, rev))
    return found


def _snapshot_models(repo_id: str, rev: Any) -> list[CachedModel]:
    sizes = {f.file_path: f.size_on_disk for f in rev.files}
    refs = tuple(sorted(rev.refs))
    models: list[CachedModel] = []
    root: Path = rev.snapshot_path
    for path in sorted(sizes, key=str):
        split = split_part(path.name)
        if path.suffix.lower() != ".gguf" or (split and split[1] != 1):
            continue
        parts = (
            [path]
            if not split
            else [
                path.with_name(f"{split[0]}-{i:05d}-of-{split[2]:05d}.gguf") for i in range(1, split[2] + 1)
            ]
        )
        models.append(
            CachedModel(repo_id, rev.commit_hash, refs, path, "gguf", sum(sizes.get(p, 0) for p in parts))
        )
    has_weights = any(p.parent == root and p.suffix in (".safetensors", ".bin") for p in sizes)
    if (root / "config.json").is_file() and has_weights:
        models.append(CachedModel(repo_id, rev.commit_hash, refs, root, "folder", sum(sizes.values())))
    return models


def use_cached(model: CachedModel, models_dir: Path) -> Path:
    """Make a cached model appear in the models folder (symlinks, nothing copied); returns the new entry's path."""
    target_dir = models_dir / model.repo_id.replace("/", "_")
    if model.kind == "folder":
        if target_dir.exists() or target_dir.is_symlink():
            raise DownloadError(f"{target_dir.name} already exists in {models_dir}.")
        models_dir.mkdir(parents=True, exist_ok=True)
        target_dir.symlink_to(model.path, target_is_directory=True)
        return target_dir
    split = split_part(model.path.name)
    parts = [model.path]
    if split:
        parts = [
            model.path.with_name(f"{split[0]}-{i:05d}-of-{split[2]:05d}.gguf") for i in range(1, split[2] + 1)
        ]
    target_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        link = target_dir / part.name
        if not link.exists():
            link.symlink_to(part.resolve())
    return target_dir / model.path.name
