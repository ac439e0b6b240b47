"""The images and files of conversations, each stored once under its SHA-256 beside the chat database.

``user_data/images/<sha256>.png`` holds an image as ``webui.core.media.decode_image`` re-encoded it (the hash is
of those PNG bytes); ``user_data/attachments/<sha256>`` holds the bytes of a file sent with a message. The
database's messages name them by hash, so an image sent twice, branched or imported again is one file. Writes are
atomic (a temporary file renamed into place): a crash leaves either the whole file or none.

A file is deleted only by ``prune``: when no message names it any more (its conversations were deleted) and
it is older than a grace period, so that an image written just before its message is committed is never taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from webui.core.chats.records import AttachmentRecord, ChatStoreError, ImageRef, check_text
from webui.core.media import Image

__all__ = ["MediaFiles", "check_attachment", "check_sha256"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: object) -> str:
    """``value`` if it is a SHA-256 in lowercase hex (the only names these folders hold); ChatStoreError else."""
    if not isinstance(value, str) or _SHA256.match(value) is None:
        raise ChatStoreError(f"{value!r} is not a SHA-256 (64 lowercase hex digits).")
    return value


def check_attachment(attachment: object) -> AttachmentRecord:
    if not isinstance(attachment, AttachmentRecord):
        raise ChatStoreError(
            f"An attached file must be an AttachmentRecord, not {type(attachment).__name__}."
        )
    check_sha256(attachment.sha256)
    for value, what in ((attachment.name, "name"), (attachment.kind, "kind")):
        check_text(value, f"attached file's {what}")
    if attachment.text is not None:
        check_text(attachment.text, "attached file's text")
    return attachment


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically unless a file is already there (same name, same bytes: it is only
    touched, so that ``prune`` sees it in use again)."""
    try:
        os.utime(path)
        return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class MediaFiles:
    """The image and attachment folders of one chat store (``root`` is the folder holding the database)."""

    def __init__(self, root: Path) -> None:
        self.images_dir = Path(root) / "images"
        self.attachments_dir = Path(root) / "attachments"

    def image_path(self, sha256: str) -> Path:
        return self.images_dir / f"{check_sha256(sha256)}.png"

    def attachment_path(self, sha256: str) -> Path:
        return self.attachments_dir / check_sha256(sha256)

    def put_image(self, image: Image) -> Path:
        """Keep ``image`` (once: an image already kept is not written again); returns its file."""
        if hashlib.sha256(image.data).hexdigest() != image.sha256:
            raise ChatStoreError("The image's bytes do not match its SHA-256.")
        path = self.image_path(image.sha256)
        try:
            _write_once(path, image.data)
        except OSError as exc:
            raise ChatStoreError(f"Cannot save the image in {self.images_dir}: {exc}") from exc
        return path

    def image(self, ref: ImageRef) -> Image:
        """The image ``ref`` names, its bytes checked against its hash (ChatStoreError if missing or damaged).

        The bytes were decoded and re-encoded by ``decode_image`` before they were kept, and still hash to
        their name, so they are not decoded again here."""
        path = self.image_path(ref.sha256)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ChatStoreError(
                f"An image of this conversation is missing: {path} ({exc.strerror})."
            ) from exc
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ChatStoreError(
                f"An image of this conversation is damaged: {path} no longer matches its hash."
            )
        return Image(data=data, sha256=ref.sha256, width=ref.width, height=ref.height)

    def put_attachment(self, data: bytes) -> str:
        """Keep a sent file's bytes (once); returns their SHA-256."""
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            _write_once(self.attachment_path(sha256), data)
        except OSError as exc:
            raise ChatStoreError(f"Cannot save the file in {self.attachments_dir}: {exc}") from exc
        return sha256

    def attachment(self, sha256: str) -> bytes | None:
        """The bytes kept under ``sha256`` (None when they are not kept, e.g. an imported chat's file)."""
        try:
            return self.attachment_path(sha256).read_bytes()
        except OSError:
            return None

    def prune(
        self, images_in_use: Collection[str], files_in_use: Collection[str], *, older_than_s: float = 3600.0
    ) -> int:
        """Delete the kept images and files no message names, once older than ``older_than_s``; how many."""
        deleted = 0
        now = time.time()
        for folder, in_use, suffix in (
            (self.images_dir, images_in_use, ".png"),
            (self.attachments_dir, files_in_use, ""),
        ):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.removesuffix(suffix) if suffix else path.name
                if _SHA256.match(name) is None or (suffix and not path.name.endswith(suffix)):
                    continue  # not a kept file (a temporary one being written, something of the user's)
                try:
                    if name in in_use or now - path.stat().st_mtime < older_than_s:
                        continue
                    path.unlink()
                    deleted += 1
                except OSError:
                    continue
        return deleted
