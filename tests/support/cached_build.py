"""Test assets built once in a subprocess and cached outside the repository (~/.cache/palabre-tests/<key>/)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def default_cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "palabre-tests"


def build_once(root: Path, module: str, what: str, env: Mapping[str, str] | None = None) -> None:
    """Run ``python -m module STAGING`` unless ``root`` exists, then move the staging folder to ``root``.

    The rename is atomic: a concurrent or interrupted build never leaves a half folder. ``what`` names the
    asset in the error raised when the build fails.
    """
    if root.is_dir():
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    project = Path(__file__).resolve().parents[2]  # the checkout: tests/support/ is two levels down
    full_env = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        **(env or {}),
        PYTHONPATH=os.pathsep.join(p for p in (str(project), os.environ.get("PYTHONPATH", "")) if p),
    )
    try:
        # The working directory is the staging folder: builders that write logs/ (gptqmodel) keep them there.
        result = subprocess.run(
            [sys.executable, "-m", module, str(staging)],
            cwd=staging,
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building {what} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
        try:
            staging.rename(root)
        except OSError:
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_key(
    builder: str, libraries: Sequence[str], *, prefix: str = "", extra: Sequence[Path] = ()
) -> str:
    """A cache key that changes whenever the builder file ``builder`` (its ``__file__``), the ``extra`` files it
    reads, one of the ``libraries`` it relies on, or Python changes."""
    digest = hashlib.sha256(Path(builder).read_bytes())
    for path in extra:
        digest.update(path.read_bytes())
    for name in libraries:
        try:
            digest.update(f"{name}={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}=missing".encode())
    digest.update(sys.version.encode())
    return prefix + digest.hexdigest()[:16]
