"""Images and files in the Chat tab: what the message box sends (each image decoded and re-encoded, documents
read for their text), and the thumbnails and file chips the Chatbot shows for a stored message.

No gradio import: the message box's value is a plain ``{"text": ..., "files": [paths]}`` mapping, and the
Chatbot takes ``{"path": ...}`` parts beside a message's text.
"""

from __future__ import annotations

import mimetypes
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.chats.agent_reply import with_documents
from webui.core.chats.media_files import MediaFiles
from webui.core.chats.records import AttachmentRecord, ChatStoreError, ImageRef
from webui.core.documents.extract import MAX_FILE_BYTES as MAX_DOCUMENT_BYTES
from webui.core.documents.extract import SUPPORTED_SUFFIXES, DocumentError, extract
from webui.core.media import MAX_IMAGE_BYTES, Image, ImageError, decode_image
from webui.core.prompts import ChatMessage
from webui.ui.convert import InputError, Message, content_text

# Files the box takes: images, and the documents whose text a model can be given.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
BOX_FILE_TYPES = ["image", *sorted(SUPPORTED_SUFFIXES)]
_SAFE_NAME = re.compile(r"[^\w.\- ]+")

# Reads a document's text: (file name, bytes) -> (kind, text); InputError when it cannot.
ReadDocument = Callable[[str, bytes], tuple[str, str]]


def box_parts(value: Any) -> tuple[str, list[str]]:
    """The message box's value (a multimodal ``{"text", "files"}`` mapping, or plain text) -> (text, paths)."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    if isinstance(value, Mapping):
        text = value.get("text") or ""
        files = value.get("files") or []
    else:
        text, files = getattr(value, "text", "") or "", getattr(value, "files", None) or []
    paths = []
    for item in files:
        item = item.get("path") if isinstance(item, Mapping) else getattr(item, "path", item)
        if isinstance(item, str | os.PathLike) and str(item):
            paths.append(str(item))
    return str(text), paths


def is_image_name(name: str) -> bool:
    """Whether a sent file is a picture by its name (any image type: one Pillow cannot read is refused)."""
    guessed, _ = mimetypes.guess_type(name)
    return Path(name).suffix.lower() in IMAGE_SUFFIXES or bool(guessed and guessed.startswith("image/"))


def display_name(path: str) -> str:
    """The name a user gave a file: gradio keeps uploads as ``<cache>/<hash>/<name>``."""
    return Path(path).name


@dataclass
class SentFiles:
    """What a message sends besides its text: checked images, and the documents' records (text included when
    it could be read); ``notes`` say what could not be read, for the status line."""

    images: list[Image] = field(default_factory=list)
    attachments: list[AttachmentRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def document_reader() -> ReadDocument:
    """Reads a sent document's text with webui.core.documents (InputError when it cannot be read)."""

    def read(name: str, data: bytes) -> tuple[str, str]:
        try:
            document = extract(name, data)
        except DocumentError as exc:
            raise InputError(str(exc)) from None
        if document.kind == "pdf":  # the pages marked, so that answers can name them
            text = "\n\n".join(
                f"[page {section.page}]\n{document.section_text(section).strip()}"
                for section in document.sections
            )
            return document.kind, text
        return document.kind, document.text

    return read


def read_sent_files(
    paths: Sequence[str],
    media: MediaFiles,
    *,
    count_tokens: Callable[[str], int] | None = None,
    read_document: ReadDocument | None = None,
) -> SentFiles:
    """Read the files of a message about to be sent; InputError (naming the file) when an image cannot be used.

    Images are decoded and re-encoded (``decode_image``); any other file is kept as an attachment (its bytes
    kept once by hash) with its text when ``read_document`` reads it, and its tokens when ``count_tokens`` can
    count them. Nothing is stored in the conversation here."""
    sent = SentFiles()
    for path in paths:
        name = display_name(path)
        limit = MAX_IMAGE_BYTES if is_image_name(name) else MAX_DOCUMENT_BYTES
        try:
            size = Path(path).stat().st_size
            if size > limit:
                raise InputError(f"{name} is {size / 2**20:.1f} MiB; the limit is {limit / 2**20:.0f} MiB.")
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"{name} could not be read ({exc.strerror or exc}).") from None
        if is_image_name(name):
            try:
                sent.images.append(decode_image(data))
            except ImageError as exc:
                raise InputError(f"{name}: {exc} Nothing was sent.") from None
            continue
        sent.attachments.append(_attachment(name, data, media, count_tokens, read_document, sent.notes))
    return sent


def _attachment(
    name: str,
    data: bytes,
    media: MediaFiles,
    count_tokens: Callable[[str], int] | None,
    read_document: ReadDocument | None,
    notes: list[str],
) -> AttachmentRecord:
    kind, text = Path(name).suffix.lower().lstrip(".") or "file", None
    if read_document is not None:
        try:
            kind, text = read_document(name, data)
        except InputError as exc:
            notes.append(f"{exc} The file is kept with the message; the model does not get its text.")
    else:
        notes.append(f"{name} is kept with the message; its text was not read.")
    tokens = None
    if text is not None and count_tokens is not None:
        try:
            tokens = count_tokens(text)
        except (ValueError, RuntimeError):  # no model loaded to count with
            tokens = None
    try:
        sha256 = media.put_attachment(data)
    except ChatStoreError as exc:
        raise InputError(str(exc)) from None
    return AttachmentRecord(name, kind, sha256, len(data), tokens, text)


def model_messages(
    history: Iterable[Any] | None, load_image: Callable[[ImageRef], Image] | None
) -> list[ChatMessage]:
    """The page's history as the model reads it: each message with its documents' text and (with
    ``load_image``: a model that sees them) its images; ChatStoreError when an image file is gone."""
    out = []
    for message in history or ():
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant", "system"):
            continue
        text = with_documents(content_text(message.get("content")), message.get("attachments") or ())
        images = tuple(map(load_image, message.get("images") or ())) if load_image is not None else ()
        out.append(ChatMessage(message["role"], text, images=images))
    return out


def chip_label(attachment: AttachmentRecord) -> str:
    """A file chip's text: its name, and its tokens once counted."""
    if attachment.tokens is None:
        return attachment.name
    return f"{attachment.name} · {attachment.tokens:,} token{'s' if attachment.tokens != 1 else ''}"


def chip_name(attachment: AttachmentRecord) -> str:
    """The name a file chip shows: ``notes (120 tokens).md`` (the page reads the type from the suffix)."""
    if attachment.tokens is None:
        return attachment.name
    path = Path(attachment.name)
    return f"{path.stem} ({attachment.tokens:,} tokens){path.suffix}"


class PageMedia:
    """Where the page finds a stored image or file to show.

    With ``direct`` (the page registered the store's folders with gradio as static paths, see ``folders``) the
    stored files themselves are served: gradio then neither copies nor hashes them on every streamed update.
    The images are PNGs Palabre wrote and the files have no suffix (served as application/octet-stream, a
    download, never a page). Without it, copies go to gradio's temp folder, by hash."""

    def __init__(self, media: Callable[[], MediaFiles | None], scratch_dir: Path | None = None) -> None:
        self._media = media
        self._scratch_dir = scratch_dir
        self.direct = False

    def folders(self) -> list[Path]:
        """The folders to serve directly (created if missing); none without a store."""
        media = self._media()
        if media is None:
            return []
        for folder in (media.images_dir, media.attachments_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return [media.images_dir, media.attachments_dir]

    def _folder(self, kind: str) -> Path:
        base = (
            self._scratch_dir or Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "palabre"
        )
        folder = base / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image_path(self, ref: ImageRef) -> str | None:
        """A servable copy of the image (None when its file is missing or damaged: the text still shows)."""
        media = self._media()
        if media is None:
            return None
        if self.direct:
            stored = media.image_path(ref.sha256)
            return str(stored) if stored.is_file() else None
        try:
            target = self._folder("chat-images") / f"{ref.sha256}.png"
            if not target.is_file():
                image = media.image(ref)
                partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                partial.write_bytes(image.data)
                os.replace(partial, target)
        except (ChatStoreError, OSError):
            return None
        return str(target)

    def attachment_path(self, attachment: AttachmentRecord) -> str | None:
        """A servable copy of a sent file under its own name, as the message box takes it again (None when its
        bytes are not kept)."""
        media = self._media()
        data = media.attachment(attachment.sha256) if media is not None else None
        if data is None:
            return None
        try:
            folder = self._folder("chat-files") / attachment.sha256
            folder.mkdir(exist_ok=True)
            target = folder / (_SAFE_NAME.sub("_", attachment.name).strip(". ") or "file")
            if not target.is_file():
                target.write_bytes(data)
        except OSError:
            return None
        return str(target)

    def _chip_path(self, attachment: AttachmentRecord) -> str | None:
        media = self._media()
        if self.direct and media is not None:
            stored = media.attachment_path(attachment.sha256)
            return str(stored) if stored.is_file() else None
        return self.attachment_path(attachment)

    def content(self, message: Message) -> Any:
        """What the Chatbot shows for ``message``: its text, then its images and file chips (the text alone
        when it has none)."""
        images: Iterable[ImageRef] = message.get("images") or ()
        files: Iterable[AttachmentRecord] = message.get("attachments") or ()
        parts: list[Any] = []
        for ref in images:
            path = self.image_path(ref)
            if path is not None:
                parts.append({"path": path, "alt_text": f"image {ref.width}×{ref.height}"})
        for attachment in files:
            path = self._chip_path(attachment)
            if path is not None:  # a file chip: its name (with its tokens), a link to the file
                chip = {
                    "path": path,
                    "orig_name": chip_name(attachment),
                    "mime_type": "application/octet-stream",
                }
                parts.append({"file": chip, "alt_text": chip_label(attachment)})
        note = message.get("grounding_note")
        if note:  # what the files and collections gave the model, and how
            parts.append(f"📚 {note}")
        if not parts:
            return message["content"]
        return [message["content"], *parts] if message["content"] else parts

    def box_value(self, text: str, message: Message | None) -> Any:
        """The message box holding ``text`` and the images and files ``message`` was sent with (Remove last)."""
        if (
            message is None
            or message["role"] != "user"
            or not (message.get("images") or message.get("attachments"))
        ):
            return text
        paths = [self.image_path(ref) for ref in message.get("images") or ()]
        paths += [self.attachment_path(a) for a in message.get("attachments") or ()]
        return {"text": text, "files": [p for p in paths if p is not None]}
