"""A small, defensive reader of a GGUF file's metadata (the key/value header), without touching the weights.

GGUF files come from strangers: every length is bounded, large arrays are skipped rather than read, and any
inconsistency raises GGUFHeaderError with a readable message instead of crashing or allocating gigabytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
MAX_KV_COUNT = 1_000_000
MAX_STRING_BYTES = 16 * 1024 * 1024  # chat templates are a few KB; 16 MB is generous
MAX_ARRAY_KEPT = 64  # longer arrays (token lists) are skipped, only their length is kept

# GGUF value types (GGUF spec): fixed-size scalars, then string, array.
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9


class GGUFHeaderError(ValueError):
    """The file is not a readable GGUF model file."""


class GGUFTruncatedError(GGUFHeaderError):
    """The bytes end before the header does."""


@dataclass(frozen=True)
class SkippedArray:
    """Stands in for an array too long to keep (e.g. the tokenizer's vocabulary)."""

    length: int


class _Cursor:
    """Reads little-endian values from a memory-mapped file; every read is bounds-checked."""

    def __init__(self, data: mmap.mmap | bytes, path: Path, *, prefix: bool = False) -> None:
        self.data = data
        self.offset = 0
        self.path = path
        self.prefix = prefix  # only the file's first bytes: running past them is not an error in the file

    def take(self, size: int) -> int:
        """Advance by ``size`` bytes and return the old offset."""
        start = self.offset
        if size < 0 or start + size > len(self.data):
            raise GGUFTruncatedError(f"{self.path.name}: the file is truncated (its GGUF header ends early).")
        self.offset = start + size
        return start

    def scalar(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack_from(fmt, self.data, self.take(struct.calcsize(fmt)))[0]
        return value

    def string(self) -> str:
        length = int(self.scalar("<Q"))
        if length > MAX_STRING_BYTES:
            raise GGUFHeaderError(
                f"{self.path.name}: a metadata string claims {length} bytes, which is not plausible."
            )
        start = self.take(length)
        return bytes(self.data[start : start + length]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(int(self.scalar("<Q")))

    def value(self, value_type: int, depth: int = 0) -> object:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            if depth > 2:
                raise GGUFHeaderError(f"{self.path.name}: metadata arrays are nested too deeply.")
            item_type = int(self.scalar("<I"))
            length = int(self.scalar("<Q"))
            if length > len(self.data):
                if self.prefix:
                    raise GGUFTruncatedError(f"{self.path.name}: the header goes on past the bytes read.")
                raise GGUFHeaderError(
                    f"{self.path.name}: a metadata array claims {length} items, more than the file holds."
                )
            if length > MAX_ARRAY_KEPT:
                self.skip_array(item_type, length, depth)
                return SkippedArray(length)
            return [self.value(item_type, depth + 1) for _ in range(length)]
        raise GGUFHeaderError(f"{self.path.name}: unknown metadata value type {value_type}.")

    def skip_array(self, item_type: int, length: int, depth: int) -> None:
        if item_type in _SCALARS:
            self.take(struct.calcsize(_SCALARS[item_type]) * length)
        elif item_type == _STRING:
            for _ in range(length):
                self.skip_string()
        else:
            for _ in range(length):
                self.value(item_type, depth + 1)


def read_gguf_header(path: Path) -> dict[str, object]:
    """All metadata key/values of a GGUF file (long arrays as SkippedArray); GGUFHeaderError if unreadable."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise GGUFHeaderError(
                    f"{path.name}: the file is too small to be a GGUF model ({size} bytes)."
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(_Cursor(data, path))
    except OSError as exc:
        raise GGUFHeaderError(f"{path.name}: cannot be read: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's name, shape and ggml type id, as the GGUF header lists it (the data is not read)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


MAX_TENSORS = 1_000_000


def read_gguf_tensors(path: Path) -> tuple[dict[str, object], list[TensorInfo]]:
    """The metadata and the tensor list of a GGUF file; GGUFHeaderError if unreadable."""
    try:
        with path.open("rb") as handle:
            if path.stat().st_size < 24:
                raise GGUFHeaderError(f"{path.name}: the file is too small to be a GGUF model.")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                cursor = _Cursor(data, path)
                metadata = _parse(cursor)
                count = int(metadata.get("GGUF.tensor_count", 0))  # type: ignore[call-overload]
                if count > MAX_TENSORS:
                    raise GGUFHeaderError(f"{path.name}: the header claims {count} tensors.")
                tensors = []
                for _ in range(count):
                    name = cursor.string()
                    n_dims = int(cursor.scalar("<I"))
                    if n_dims > 8:
                        raise GGUFHeaderError(f"{path.name}: tensor {name!r} claims {n_dims} dimensions.")
                    shape = tuple(int(cursor.scalar("<Q")) for _ in range(n_dims))
                    ggml_type = int(cursor.scalar("<I"))
                    tensors.append(TensorInfo(name, shape, ggml_type, int(cursor.scalar("<Q"))))
                return metadata, tensors
    except OSError as exc:
        raise GGUFHeaderError(f"{path.name}: cannot be read: {exc.strerror or exc}") from exc


def _parse(cursor: _Cursor) -> dict[str, object]:
    name = cursor.path.name
    start = cursor.take(4)
    if bytes(cursor.data[start : start + 4]) != GGUF_MAGIC:
        raise GGUFHeaderError(f"{name}: not a GGUF file (wrong magic bytes).")
    version = int(cursor.scalar("<I"))
    if version not in (2, 3):
        raise GGUFHeaderError(f"{name}: unsupported GGUF version {version}.")
    tensor_count = int(cursor.scalar("<Q"))
    kv_count = int(cursor.scalar("<Q"))
    if kv_count > MAX_KV_COUNT:
        raise GGUFHeaderError(f"{name}: the header claims {kv_count} metadata entries.")
    metadata: dict[str, object] = {"GGUF.version": version, "GGUF.tensor_count": tensor_count}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(int(cursor.scalar("<I")))
    return metadata


def parse_gguf_prefix(data: bytes, name: str) -> dict[str, object] | None:
    """The metadata of a GGUF file from its first bytes (e.g. fetched with an HTTP Range request): None while
    ``data`` ends before the key/value section does; GGUFHeaderError when it is not a GGUF file at all."""
    if len(data) < 24:
        return None
    try:
        return _parse(_Cursor(data, Path(name), prefix=True))
    except GGUFTruncatedError:
        return None
