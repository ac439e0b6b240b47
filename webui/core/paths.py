"""One validator for every user-supplied name that becomes a file path."""

from __future__ import annotations

import logging
import os
import tempfile
import unicodedata
from pathlib import Path

LOG = logging.getLogger("palabre.paths")

_FORBIDDEN = set('/\\:*?"<>|\0')
MAX_NAME_LENGTH = 120
MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name; leave room for suffixes and temp-file prefixes
# Names Windows reserves for devices (also with any extension): a file called so cannot be created there.
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {f"{d}{i}" for d in ("COM", "LPT") for i in range(10)}
)


class InvalidNameError(ValueError):
    """A name that cannot safely become a file name."""


def validate_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` unchanged if it is safe as a single file name, else raise InvalidNameError."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(f"The {what} must not be empty.")
    if name != name.strip():
        raise InvalidNameError(f"The {what} {name!r} must not start or end with spaces.")
    if len(name) > MAX_NAME_LENGTH or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidNameError(f"The {what} is longer than {MAX_NAME_LENGTH} characters.")
    normalized = unicodedata.normalize("NFKC", name)
    bad = sorted({c for c in normalized if c in _FORBIDDEN or unicodedata.category(c).startswith("C")})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidNameError(f"The {what} {name!r} contains characters that are not allowed: {shown}.")
    if normalized in {".", ".."} or normalized.startswith("."):
        raise InvalidNameError(f"The {what} {name!r} must not start with a dot.")
    if normalized.endswith("."):
        raise InvalidNameError(f"The {what} {name!r} must not end with a dot.")
    if normalized.split(".", 1)[0].rstrip().upper() in _DEVICE_NAMES:
        raise InvalidNameError(f"The {what} {name!r} is a device name on Windows; pick another.")
    return name


def path_in(folder: Path, name: str, suffix: str, *, what: str = "name") -> Path:
    """The path of ``name + suffix`` inside ``folder``, guaranteed not to escape it (symlinks included)."""
    validate_name(name, what=what)
    base = folder.resolve()
    candidate = (base / f"{name}{suffix}").resolve()
    if candidate.parent != base:
        raise InvalidNameError(f"The {what} {name!r} points outside {folder}.")
    return candidate


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files in ``folder`` with one of ``suffixes``, by name (file stem); an earlier suffix wins a tie.

    Names that are not valid (temporary files, oddities) are skipped, and so are symlinks that lead out of
    ``folder``: a link planted in a user folder must not make Palabre read (or later overwrite) a file elsewhere.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    base = folder.resolve()
    for suffix in reversed(suffixes):  # the preferred suffix comes last and overwrites
        for path in sorted(folder.glob(f"*{suffix}")):
            try:
                validate_name(path.stem)
            except InvalidNameError:
                continue
            if not path.is_file():
                continue
            if path.is_symlink() and path.resolve().parent != base:
                # Said in the log so that a user who linked a file on purpose learns why it is not listed.
                LOG.warning("Skipped %s: it is a link to %s, outside %s.", path, path.resolve(), base)
                continue
            found[path.stem] = path
    return found
