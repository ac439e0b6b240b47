"""The curated catalog: current small and mid-size GGUF models, each quantization with a fit verdict for this
machine, downloadable through the Hub downloader in one step.

The fit verdict is the same estimate the load check uses (``webui.core.hardware.estimates.fit_advice``), fed
with the catalog's file size and the model's shape instead of a file's header. Sizes come from the catalog's data
until ``refresh`` replaces them with the Hub's live listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webui.core.hardware.estimates import fit_advice
from webui.core.hardware.machine import MachineFacts
from webui.core.hub import download as dl
from webui.core.hub.catalog_data import CATALOG
from webui.core.hub.catalog_types import CatalogEntry, CatalogFile, Shape
from webui.core.hub.refs import RepoRef
from webui.core.loader import CancelToken
from webui.core.models.facts import ArchFacts

__all__ = [
    "CatalogEntry",
    "CatalogError",
    "CatalogFile",
    "CatalogRow",
    "Shape",
    "catalog_entries",
    "catalog_rows",
    "download_entry",
    "find_entry",
    "local_model_name",
    "quant_fit",
    "refresh",
    "refresh_all",
]


class CatalogError(dl.DownloadError):
    """No such entry or quantization; the message is meant for the user."""


@dataclass(frozen=True)
class CatalogRow:
    """One quantization of one entry, with its fit verdict on this machine."""

    entry: CatalogEntry
    file: CatalogFile
    verdict: str  # fits | tight | does not fit
    message: str
    downloaded: bool = False

    @property
    def download_size(self) -> int:
        return self.file.size + (self.entry.projector.size if self.entry.projector else 0)

    @property
    def key(self) -> str:
        """What names this row to ``download_entry`` and the page: ``repo_id:file``."""
        return f"{self.entry.repo_id}:{self.file.path}"


def catalog_entries() -> tuple[CatalogEntry, ...]:
    """Every curated model, smallest first."""
    return tuple(sorted(CATALOG, key=lambda e: (e.parameters, e.name)))


def find_entry(name: str, entries: Sequence[CatalogEntry] | None = None) -> CatalogEntry:
    """The entry named ``name`` (its name or repo id, case-insensitive); CatalogError listing them otherwise."""
    wanted = name.strip().lower()
    pool = entries if entries is not None else catalog_entries()
    for entry in pool:
        if wanted in (entry.name.lower(), entry.repo_id.lower()):
            return entry
    names = ", ".join(e.name for e in pool)
    raise CatalogError(f"No catalog model {name!r}. The catalog has: {names}.")


def _facts(entry: CatalogEntry, file: CatalogFile) -> ArchFacts:
    shape = entry.shape
    return ArchFacts(
        format="gguf",
        architecture=entry.family,
        n_layers=shape.layers,
        n_embd=shape.heads * shape.head_dim,
        n_head=shape.heads,
        n_head_kv=shape.kv_heads,
        key_length=shape.head_dim,
        value_length=shape.head_dim,
        context_length=entry.context_length,
        n_vocab=shape.vocab,
        quantization=file.quant,
        size_label=entry.parameters_label,
        parameter_count=int(entry.parameters),
        weight_bytes=file.size,
        bytes_per_token=file.size,
        weights_per_token=int(entry.parameters),
    )


def quant_fit(entry: CatalogEntry, file: CatalogFile, machine: MachineFacts) -> tuple[str, str]:
    """(verdict, message) for loading ``file`` with the loader's default context and GPU use on ``machine``."""
    advice = fit_advice(
        _facts(entry, file),
        machine,
        name=f"{entry.name} {file.quant}",
        n_gpu_layers=-1 if machine.gpus else 0,
    )
    return advice.verdict, advice.message


def local_model_name(entry: CatalogEntry, file: CatalogFile) -> str:
    """The name the model has in the models folder once downloaded (``org_model/file.gguf``)."""
    return f"{RepoRef(entry.repo_id).folder_name}/{file.path.rsplit('/', 1)[-1]}"


def is_downloaded(entry: CatalogEntry, file: CatalogFile, models_dir: Path) -> bool:
    return (models_dir / local_model_name(entry, file)).is_file()


def catalog_rows(
    machine: MachineFacts, models_dir: Path | None = None, entries: Sequence[CatalogEntry] | None = None
) -> list[CatalogRow]:
    """Every quantization of every entry with its fit verdict (and whether it is already downloaded)."""
    rows = []
    for entry in entries if entries is not None else catalog_entries():
        for file in entry.files:
            verdict, message = quant_fit(entry, file, machine)
            here = models_dir is not None and is_downloaded(entry, file, models_dir)
            rows.append(CatalogRow(entry, file, verdict, message, here))
    return rows


def refresh(entry: CatalogEntry, listing: dl.RepoListing) -> CatalogEntry:
    """The entry with sizes from the Hub's live listing (files the listing lacks are dropped; a new projector
    is taken in). CatalogError when none of the entry's files is listed any more."""
    sizes = {f.path: f.size for f in listing.files}
    files = tuple(CatalogFile(f.path, sizes[f.path]) for f in entry.files if f.path in sizes)
    if not files:
        raise CatalogError(f"{entry.repo_id} no longer lists {', '.join(f.path for f in entry.files)}.")
    projector = entry.projector
    if projector is not None:
        projector = CatalogFile(projector.path, sizes[projector.path]) if projector.path in sizes else None
    return entry.with_files(files, projector)


def refresh_all(
    entries: Sequence[CatalogEntry], token: str | None = None
) -> tuple[tuple[CatalogEntry, ...], list[str]]:
    """Every entry with the Hub's live sizes, and one sentence per entry that kept the catalog's.

    When the Hub cannot be reached at all, the others are not asked (each would wait through the same retries).
    """
    fresh: list[CatalogEntry] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            fresh.append(refresh(entry, dl.list_files(entry.repo_id, token=token)))
        except dl.HubUnreachable as exc:
            fresh.extend(entries[index:])
            problems.append(f"{exc} The catalog's sizes are shown.")
            break
        except dl.DownloadError as exc:
            fresh.append(entry)
            problems.append(f"{entry.name}: {exc}")
    return tuple(fresh), problems


def download_entry(
    entry: CatalogEntry,
    quant: str,
    *,
    models_dir: Path,
    token: str | None = None,
    progress: dl.ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dl.DownloadResult:
    """Download one quantization of ``entry`` (with its vision projector) into the models folder.

    The Hub's live listing is read first: the downloader checks every file against its sha256 from there.
    """
    file = entry.file(quant)
    if file is None:
        offered = ", ".join(f.quant for f in entry.files)
        raise CatalogError(f"{entry.name} has no {quant!r} file in the catalog; it offers {offered}.")
    listing = dl.list_files(entry.repo_id, token=token)
    if listing.file(file.path) is None:
        raise CatalogError(f"{entry.repo_id} no longer has {file.path}; the catalog needs an update.")
    wanted = [file.path]
    if entry.projector is not None and listing.file(entry.projector.path) is not None:
        wanted.append(entry.projector.path)
    return dl.download(
        listing.ref,
        wanted,
        models_dir=models_dir,
        token=token,
        progress=progress,
        cancel=cancel,
        listing=listing,
    )
