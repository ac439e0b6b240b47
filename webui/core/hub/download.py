"""Hugging Face Hub downloads: list a repository's files, download them resumably and verified.

huggingface_hub is imported inside the functions (``import webui`` stays light). It reads ``HF_ENDPOINT``,
``HF_TOKEN`` and ``HF_HOME`` when it is imported; this module reads them again at each call, so a process that
changes them (a test, a long-running server) is honoured.

Downloads go to ``<models_dir>/.downloads/<org>_<model>/`` first: a partial file is ``<name>.<hash>.incomplete``
and grows from where it stopped on the next attempt (an HTTP Range request); a finished file is checked against
the Hub's sha256 (LFS files) or git blob id (small files) before it gets its real name. When every chosen file
is there, they move into ``<models_dir>/<org>_<model>/`` together, so the model list never shows half a model.

References and file names (``parse_reference``, ``gguf_quant``, ``split_part``, ``format_size``) are parsed in
``webui.core.hub.refs``; they are importable from here too.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from webui.core.hardware.estimates import FitVerdict, quick_fit
from webui.core.hub.refs import (
    DownloadError,
    RepoRef,
    format_size,
    gguf_quant,
    parse_reference,
    split_part,
)
from webui.core.loader import CancelToken

__all__ = [
    "STAGING_DIR",
    "DownloadCancelled",
    "DownloadError",
    "DownloadResult",
    "FileChoice",
    "HubFile",
    "HubUnreachable",
    "ProgressCallback",
    "RepoKind",
    "RepoListing",
    "RepoRef",
    "build_listing",
    "default_files",
    "download",
    "format_size",
    "gguf_quant",
    "hub_error",
    "list_files",
    "parse_reference",
    "partial_bytes",
    "split_part",
]

ProgressCallback = Callable[[int, int, str], None]
"""progress(done_bytes, total_bytes, file): called as bytes arrive, over all the chosen files."""

RepoKind = Literal["gguf", "transformers", "other"]

STAGING_DIR = ".downloads"
# Weights in other frameworks' formats: a whole-repository download of a Transformers model skips them.
_OTHER_FRAMEWORKS = re.compile(
    r"(^|/)(onnx|openvino|coreml|tflite)/|\.(h5|msgpack|ot|tflite|mlmodel|onnx)$|(^|/)(tf|flax)_model",
    re.IGNORECASE,
)


class HubUnreachable(DownloadError):
    """The Hub (or HF_ENDPOINT) could not be reached at all: asking again for another repository is pointless."""


class DownloadCancelled(DownloadError):
    """The user cancelled; the partial file is kept so the next Download resumes."""


@dataclass(frozen=True)
class HubFile:
    """One file in a repository as the Hub lists it."""

    path: str
    size: int
    blob_id: str  # git object id (what the Hub's ETag is for small files)
    sha256: str | None  # LFS files only
    quant: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.path.lower().endswith(".gguf")


@dataclass(frozen=True)
class FileChoice:
    """Something the user can pick: one file, a split GGUF set (all its parts) or a whole Transformers repo."""

    label: str
    files: tuple[str, ...]
    size: int
    quant: str | None = None
    fit: FitVerdict | None = None


@dataclass(frozen=True)
class RepoListing:
    """A repository's files (with sizes and checksums) and the choices they make."""

    ref: RepoRef
    kind: RepoKind
    files: tuple[HubFile, ...]
    choices: tuple[FileChoice, ...]

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def _endpoint() -> str | None:
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return endpoint or None


def _token(token: str | None) -> str | None:
    """A token the user typed wins; None lets huggingface_hub use HF_TOKEN or the saved login."""
    token = (token or "").strip()
    return token or None


def hub_error(exc: BaseException, ref: RepoRef, filename: str | None = None) -> DownloadError:
    """A huggingface_hub / network exception as one sentence the user can act on."""
    import httpx2
    from huggingface_hub import errors

    where = _endpoint() or "https://huggingface.co"
    if isinstance(exc, errors.GatedRepoError):
        return DownloadError(
            f"{ref.repo_id} is gated: accept its conditions on huggingface.co, then give a token "
            "(the Token field or HF_TOKEN)."
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return DownloadError(
            f"Repository {ref.repo_id} was not found on {where}. Check the name; a private repository "
            "needs a token (the Token field or HF_TOKEN)."
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return DownloadError(f"{ref.repo_id} has no branch, tag or commit {ref.revision!r}.")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return DownloadError(f"{ref.repo_id} has no file {filename!r} at {ref.revision or 'main'}.")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return DownloadError("HF_HUB_OFFLINE is set: downloads are off. Unset it to download.")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401 or status == 403:
            return DownloadError(f"The Hub refused access to {ref.repo_id} (HTTP {status}): check the token.")
        return DownloadError(f"The Hub answered HTTP {status} for {ref.repo_id}: {str(exc).splitlines()[0]}")
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return HubUnreachable(
            f"Cannot reach the Hub at {where} ({exc}). Check the connection or HF_ENDPOINT."
        )
    return DownloadError(f"{ref.repo_id}: {exc}")


def _fit(size: int) -> FitVerdict | None:
    return quick_fit(size) if size > 0 else None


def _gguf_choices(files: Sequence[HubFile]) -> list[FileChoice]:
    groups: dict[str, list[HubFile]] = {}
    for f in files:
        if not f.is_gguf:
            continue
        split = split_part(f.path)
        groups.setdefault(split[0] if split else f.path, []).append(f)
    choices = []
    for key, members in sorted(groups.items(), key=lambda item: item[0].lower()):
        members.sort(key=lambda f: f.path)
        size = sum(f.size for f in members)
        split = split_part(members[0].path)
        label = f"{key}.gguf ({split[2]} parts)" if split else key
        choices.append(FileChoice(label, tuple(f.path for f in members), size, members[0].quant, _fit(size)))
    return choices


def default_files(files: Sequence[HubFile]) -> list[str]:
    """What "the whole repository" means for a Transformers model: everything but other frameworks' weights
    (and ``.bin`` weights when safetensors are there)."""
    paths = [f.path for f in files if f.path != ".gitattributes" and not _OTHER_FRAMEWORKS.search(f.path)]
    if any(p.endswith(".safetensors") for p in paths):
        paths = [p for p in paths if not (p.endswith(".bin") and "model" in PurePosixPath(p).name)]
    return paths


def _weights_size(files: Sequence[HubFile], chosen: Iterable[str]) -> int:
    wanted = set(chosen)
    return sum(f.size for f in files if f.path in wanted and f.path.endswith((".safetensors", ".bin", ".pt")))


def build_listing(ref: RepoRef, files: Sequence[HubFile]) -> RepoListing:
    """The choices a set of files makes (GGUF quantizations, or the whole Transformers repository)."""
    files = tuple(sorted(files, key=lambda f: f.path))
    if any(f.is_gguf for f in files):
        return RepoListing(ref, "gguf", files, tuple(_gguf_choices(files)))
    chosen = default_files(files)
    kind: RepoKind = "transformers" if any(f.path == "config.json" for f in files) else "other"
    size = sum(f.size for f in files if f.path in set(chosen))
    fit = _fit(_weights_size(files, chosen) or size) if kind == "transformers" else None
    whole = FileChoice(f"whole repository ({len(chosen)} files)", tuple(chosen), size, None, fit)
    return RepoListing(ref, kind, files, (whole,) if chosen else ())


def list_files(
    reference: str | RepoRef, revision: str | None = None, token: str | None = None
) -> RepoListing:
    """Every file of a model repository with its size, sha256 (LFS files), GGUF quantization and fit verdict."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    ref = reference if isinstance(reference, RepoRef) else parse_reference(reference, revision)
    if revision and isinstance(reference, RepoRef):
        ref = RepoRef(ref.repo_id, revision.strip() or ref.revision, ref.filename)
    api = HfApi(endpoint=_endpoint(), token=_token(token))
    try:
        tree = list(api.list_repo_tree(ref.repo_id, recursive=True, revision=ref.revision))
    except Exception as exc:  # huggingface_hub raises many types; each becomes one clear sentence
        raise hub_error(exc, ref) from exc
    files = [
        HubFile(
            path=item.path,
            size=int(item.size),
            blob_id=item.blob_id,
            sha256=item.lfs.sha256 if item.lfs else None,
            quant=gguf_quant(item.path) if item.path.lower().endswith(".gguf") else None,
        )
        for item in tree
        if isinstance(item, RepoFile)
    ]
    if not files:
        raise DownloadError(f"{ref.label} has no files.")
    return build_listing(ref, files)


@dataclass(frozen=True)
class DownloadResult:
    """What a finished download left in the models folder."""

    folder: Path
    files: tuple[Path, ...]
    verified: tuple[str, ...]  # files checked against the Hub's sha256 (LFS) or git blob id
    fetched_bytes: int  # bytes that came over the network in this run
    resumed_bytes: int  # bytes a previous, interrupted run had already fetched
    skipped: tuple[str, ...] = field(default=())  # already in the models folder

    @property
    def message(self) -> str:
        names = ", ".join(p.name for p in self.files)
        note = (
            f" (resumed: {format_size(self.resumed_bytes)} were already there)" if self.resumed_bytes else ""
        )
        checked = (
            f"verified sha256 of {len(self.verified)} file(s)" if self.verified else "nothing new to verify"
        )
        return f"Downloaded {names} into {self.folder}: {checked}{note}."


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or "\\" in path:
        raise DownloadError(f"The Hub listed an unsafe file name {path!r}; nothing was written.")
    return rel


def _expand(listing: RepoListing, files: Sequence[str] | None) -> list[HubFile]:
    """The HubFiles to fetch: what the user chose, with every part of a chosen split GGUF."""
    ref = listing.ref
    wanted = [f for f in (files or ()) if f]
    if not wanted and ref.filename:
        wanted = [ref.filename]
    if not wanted:
        if listing.kind == "gguf":
            if len(listing.choices) == 1:
                wanted = list(listing.choices[0].files)
            else:
                labels = ", ".join(c.label for c in listing.choices[:8])
                raise DownloadError(f"{ref.repo_id} has several GGUF files; choose one ({labels}).")
        else:
            wanted = default_files(listing.files)
    chosen: dict[str, HubFile] = {}
    for path in wanted:
        by_label = next((c for c in listing.choices if c.label == path), None)
        paths = list(by_label.files) if by_label else [path]
        hub_file = listing.file(path)
        if by_label is None and hub_file is None:
            names = ", ".join(f.path for f in listing.files[:12])
            raise DownloadError(f"{ref.repo_id} has no file {path!r}. Its files: {names}.")
        split = split_part(path)
        if split:
            paths = [
                f.path
                for f in listing.files
                if (s := split_part(f.path)) and s[0] == split[0] and s[2] == split[2]
            ]
        for p in paths:
            f = listing.file(p)
            if f is not None:
                chosen[p] = f
    return list(chosen.values())


def _local_name(listing: RepoListing, f: HubFile) -> PurePosixPath:
    """GGUF files land flat in the model's folder (where model discovery looks); other files keep their path."""
    rel = _safe_relative(f.path)
    return PurePosixPath(rel.name) if listing.kind == "gguf" and f.is_gguf else rel


class _Hasher:
    """sha256 for LFS files; git's blob sha1 (``blob <size>\\0`` + bytes) for small files."""

    def __init__(self, f: HubFile) -> None:
        self.expected = f.sha256 or f.blob_id
        self.kind = "sha256" if f.sha256 else "git sha1"
        self._hash = hashlib.sha256() if f.sha256 else hashlib.sha1(f"blob {f.size}\0".encode())

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def feed_file(self, path: Path) -> None:
        with path.open("rb") as stream:
            while block := stream.read(1024 * 1024):
                self._hash.update(block)

    def ok(self) -> bool:
        return self._hash.hexdigest() == self.expected.lower()

    @property
    def actual(self) -> str:
        return self._hash.hexdigest()


@dataclass
class _Run:
    """Byte counts of one download() call (mutable on purpose: it is local to that call)."""

    total: int
    done: int = 0
    fetched: int = 0
    resumed: int = 0
    progress: ProgressCallback | None = None

    def report(self, name: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, name)


def _fetch(
    ref: RepoRef, f: HubFile, partial: Path, run: _Run, token: str | None, cancel: CancelToken | None
) -> None:
    """Fetch ``f`` into ``partial``, continuing from its current size; verify it; raise DownloadError if not."""
    import httpx2
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

    hasher = _Hasher(f)
    have = partial.stat().st_size if partial.exists() else 0
    if have > f.size:  # not ours to continue: start again
        partial.unlink()
        have = 0
    if have:
        hasher.feed_file(partial)
        run.resumed += have
    url = hf_hub_url(ref.repo_id, f.path, revision=ref.revision, endpoint=_endpoint())
    headers = build_hf_headers(token=_token(token), library_name="palabre")
    if cancel is not None and cancel.cancelled:
        raise DownloadCancelled(f"Cancelled before {f.path}; Download again to continue.")
    if have < f.size or f.size == 0:
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with http_stream_backoff(
                "GET",
                url,
                headers=headers,
                follow_redirects=True,
                timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                retry_on_exceptions=(),
                retry_on_status_codes=(429, 500, 502, 503, 504),
            ) as response:
                hf_raise_for_status(response)
                if have and response.status_code != 206:  # the server ignored Range: take it all again
                    run.done -= have
                    run.resumed -= have
                    have, hasher = 0, _Hasher(f)
                    partial.unlink()
                with partial.open("ab") as out:
                    for chunk in response.iter_bytes():  # as they arrive: a dropped line loses nothing
                        out.write(chunk)  # kept even when cancelled now: the next run need not fetch it again
                        hasher.update(chunk)
                        run.done += len(chunk)
                        run.fetched += len(chunk)
                        run.report(f.path)
                        if cancel is not None and cancel.cancelled:
                            out.flush()
                            raise DownloadCancelled(
                                f"Cancelled: {format_size(out.tell())} of {format_size(f.size)} of {f.path} "
                                "kept; Download again to resume."
                            )
        except DownloadError:
            raise
        except HfHubHTTPError as exc:  # an OSError too: handled first so it is not called an interruption
            raise hub_error(exc, ref, f.path) from exc
        except (httpx2.TransportError, OSError) as exc:
            got = partial.stat().st_size if partial.exists() else 0
            raise DownloadError(
                f"The download of {f.path} was interrupted at {format_size(got)} of {format_size(f.size)} "
                f"({exc or type(exc).__name__}). Download again to resume from there."
            ) from exc
    got = partial.stat().st_size
    if got < f.size:
        raise DownloadError(
            f"The download of {f.path} was interrupted at {format_size(got)} of {format_size(f.size)} "
            "(the server ended it early). Download again to resume from there."
        )
    if got > f.size or not hasher.ok():
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{f.path} is corrupt: its {hasher.kind} is {hasher.actual}, the Hub says {hasher.expected}. "
            "The file was deleted; download it again."
        )


def download(
    reference: str | RepoRef,
    files: Sequence[str] | None = None,
    *,
    models_dir: Path,
    revision: str | None = None,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    listing: RepoListing | None = None,
) -> DownloadResult:
    """Download ``files`` (paths or choice labels; default: the GGUF if there is one, else the whole Transformers
    repository) into ``models_dir/<org>_<model>/``, resuming partial files and verifying each one.

    Raises DownloadError (DownloadCancelled when ``cancel`` is set); partial files stay for the next attempt.
    """
    ref = reference if isinstance(reference, RepoRef) else parse_reference(reference, revision)
    if revision and isinstance(reference, RepoRef):
        ref = RepoRef(ref.repo_id, revision.strip() or ref.revision, ref.filename)
    if listing is None or listing.ref.repo_id != ref.repo_id or listing.ref.revision != ref.revision:
        listing = list_files(ref, token=token)
    chosen = _expand(listing, files)
    dest = models_dir / ref.folder_name
    staging = models_dir / STAGING_DIR / ref.folder_name
    run = _Run(total=sum(f.size for f in chosen), progress=progress)
    verified: list[str] = []
    skipped: list[str] = []
    ready: list[PurePosixPath] = []
    for f in chosen:
        local = _local_name(listing, f)
        final, staged = dest / local, staging / local
        if final.is_file() and final.stat().st_size == f.size:
            skipped.append(f.path)  # already downloaded earlier (and verified then)
            run.done += f.size
            ready.append(local)
            continue
        if staged.is_file() and staged.stat().st_size == f.size:
            run.done += f.size  # verified by an earlier, interrupted run of a multi-file download
            ready.append(local)
            verified.append(f.path)
            continue
        expected = f.sha256 or f.blob_id
        partial = staged.with_name(f"{staged.name}.{expected[:16]}.incomplete")
        partial.parent.mkdir(parents=True, exist_ok=True)
        for stale in partial.parent.glob(f"{staged.name}.*.incomplete"):
            if stale != partial:  # a partial of an older version of the file cannot be continued
                stale.unlink(missing_ok=True)
        run.done += partial.stat().st_size if partial.exists() else 0
        run.report(f.path)
        _fetch(ref, f, partial, run, token, cancel)
        os.replace(partial, staged)
        verified.append(f.path)
        ready.append(local)
    placed = []
    for local in ready:
        staged, final = staging / local, dest / local
        if staged.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        placed.append(final)
    _remove_empty_dirs(staging, models_dir / STAGING_DIR)
    run.report(chosen[-1].path if chosen else "")
    return DownloadResult(dest, tuple(placed), tuple(verified), run.fetched, run.resumed, tuple(skipped))


def _remove_empty_dirs(folder: Path, stop: Path) -> None:
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    current = folder
    while current != stop.parent and current.is_dir() and not any(current.iterdir()):
        current.rmdir()
        current = current.parent


def partial_bytes(models_dir: Path, reference: str | RepoRef) -> int:
    """Bytes already fetched for a repository by downloads that did not finish (what the next one resumes)."""
    ref = reference if isinstance(reference, RepoRef) else parse_reference(reference)
    staging = models_dir / STAGING_DIR / ref.folder_name
    if not staging.is_dir():
        return 0
    return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
