"""The shapes of the curated catalog's entries (the data is in ``catalog_data``, the logic in ``catalog``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from webui.core.hub.refs import gguf_quant


@dataclass(frozen=True)
class Shape:
    """What sizes the KV cache: layers, attention heads, KV heads, head size, vocabulary (from config.json)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


@dataclass(frozen=True)
class CatalogFile:
    """One GGUF file of a catalog entry (a quantization, or the vision projector) and its size in bytes."""

    path: str
    size: int

    @property
    def quant(self) -> str:
        return gguf_quant(self.path) or "?"


@dataclass(frozen=True)
class CatalogEntry:
    """One curated model: where it is on the Hub, its quantizations and what it can do."""

    name: str
    repo_id: str
    family: str
    parameters: float
    context_length: int
    licence: str
    files: tuple[CatalogFile, ...]
    shape: Shape
    thinking: bool = False
    tools: bool = False
    vision: bool = False
    projector: CatalogFile | None = None  # the mmproj file that gives it sight, downloaded with it
    note: str = ""
    refreshed: bool = False  # sizes come from the Hub's live listing, not the catalog's data

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, has in (("thinking", self.thinking), ("tools", self.tools), ("vision", self.vision))
            if has
        )

    @property
    def parameters_label(self) -> str:
        billions = self.parameters / 1e9
        return f"{billions:.1f}B" if billions < 10 else f"{billions:.0f}B"

    def file(self, path_or_quant: str) -> CatalogFile | None:
        """The file with this path or quantization label (case-insensitive), else None."""
        wanted = path_or_quant.strip().lower()
        return next((f for f in self.files if wanted in (f.path.lower(), f.quant.lower())), None)

    def with_files(self, files: tuple[CatalogFile, ...], projector: CatalogFile | None) -> CatalogEntry:
        return replace(self, files=files, projector=projector, refreshed=True)
