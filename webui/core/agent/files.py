"""The read-a-file tool: text files inside the folders the user allowed, never outside them.

The path is model output: it is resolved (symlinks followed) and must land inside an allowed folder; the
file is opened and checked to be the very file that was resolved, read up to a size cap, and refused when it
is not text.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webui.core.agent.base import ToolError, ToolSpec, string_argument

READ_LIMIT = 64 * 1024  # bytes read from a file
LIST_LIMIT = 200  # entries listed for a folder


class ReadFile:
    """Read a text file (or list a folder) under one of ``folders``."""

    def __init__(self, folders: Sequence[Path | str], limit: int = READ_LIMIT) -> None:
        self.folders = [Path(f).expanduser().resolve() for f in folders if str(f).strip()]
        self.limit = limit

    @property
    def spec(self) -> ToolSpec:
        where = ", ".join(str(f) for f in self.folders) or "(no folder is allowed yet)"
        return ToolSpec(
            name="read_file",
            description=(
                "Read a text file, or list a folder, inside the folders the user allowed: "
                f"{where}. The path is relative to the first folder, or absolute."
            ),
            parameters={
                "type": "object",
                "properties": {"path": {"type": "string", "description": "The file or folder to read."}},
                "required": ["path"],
            },
            read_only=True,
        )

    def resolve(self, path: str) -> Path:
        """The real path ``path`` names inside an allowed folder; ToolError if it is outside them all."""
        if not self.folders:
            raise ToolError("No folder is allowed: the user has to allow one in the Tools panel.")
        if "\x00" in path:
            raise ToolError("The path is not valid.")
        given = Path(path).expanduser()
        candidates = [given] if given.is_absolute() else [folder / given for folder in self.folders]
        for candidate in candidates:
            try:
                real = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if any(real == folder or real.is_relative_to(folder) for folder in self.folders):
                return real
            raise ToolError(f"{path} is outside the allowed folders.")
        raise ToolError(f"{path} does not exist in the allowed folders.")

    def run(self, arguments: Mapping[str, Any]) -> str:
        real = self.resolve(string_argument(arguments, "path"))
        if real.is_dir():
            return self._list(real)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise ToolError(f"Cannot open {real.name}: {exc.strerror}.") from exc
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(handle.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise ToolError(f"{real.name} is not a regular file.")
            current = os.stat(real)
            if (opened.st_dev, opened.st_ino) != (current.st_dev, current.st_ino):
                raise ToolError(f"{real.name} changed while it was opened.")
            data = handle.read(self.limit + 1)
        if b"\x00" in data:
            raise ToolError(f"{real.name} is not a text file.")
        text = data[: self.limit].decode("utf-8", errors="replace")
        if len(data) > self.limit:
            text += f"\n[… cut: only the first {self.limit} bytes of {opened.st_size} are shown]"
        return text

    def _list(self, folder: Path) -> str:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
        lines = [f"{p.name}/" if p.is_dir() else p.name for p in entries[:LIST_LIMIT]]
        if len(entries) > LIST_LIMIT:
            lines.append(f"[… {len(entries) - LIST_LIMIT} more]")
        return "\n".join(lines) or "(empty folder)"
