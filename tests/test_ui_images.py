"""The Chat tab's handlers with images and documents in the message box (scripted model, no browser): a file
that is not an image is refused before anything is saved; images go to the store once and show as thumbnails;
a model that cannot see them says so; documents become file chips and their text reaches the prompt."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ui import chat_values, last_prompt
from webui.core.chats.records import AttachmentRecord
from webui.core.media import decode_image
from webui.ui.chat_media import box_parts, chip_name, read_sent_files
from webui.ui.convert import InputError
from webui.ui.state import SessionJobs


def png(color: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", (5, 4), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def chat(scripted_service: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from webui.ui.chat_tab import ChatHandlers
    from webui.ui.parameters_tab import ParametersTab

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # where the page's copies go
    return ChatHandlers(scripted_service, ParametersTab(scripted_service))


def values() -> list[Any]:
    chosen = chat_values()
    chosen[7] = "ChatML"
    return chosen


def upload(tmp_path: Path, name: str, data: bytes) -> str:
    """A file as gradio keeps an upload: <cache>/<hash>/<the user's name>."""
    folder = tmp_path / "uploads" / str(abs(hash((name, data))))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return str(folder / name)


def run(updates: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(updates)


def test_box_values() -> None:
    assert box_parts(None) == ("", [])
    assert box_parts("Hi") == ("Hi", [])
    assert box_parts({"text": "Hi", "files": ["/a/b.png", {"path": "/c.md"}]}) == (
        "Hi",
        ["/a/b.png", "/c.md"],
    )


def test_a_file_that_is_not_an_image_is_refused_and_nothing_is_saved(chat: Any, tmp_path: Path) -> None:
    bad = upload(tmp_path, "holiday.png", b"GIF89a? no, just text")
    (update,) = run(chat.send({"text": "Look", "files": [bad]}, "", None, SessionJobs(), *values()))
    assert "holiday.png" in update[4] and "not an image" in update[4] and "Nothing was sent" in update[4]
    assert chat.store.conversations() == []
    assert not (chat.store.media.images_dir).exists()


def test_an_image_for_a_model_that_cannot_see_is_kept_and_shown(chat: Any, tmp_path: Path) -> None:
    image = upload(tmp_path, "green.png", png())
    updates = run(chat.send({"text": "What is it?", "files": [image]}, "", None, SessionJobs(), *values()))
    conversation_id, _history, shown, box, status = updates[-1]
    assert "cannot see images" in status and box == ""
    sha = decode_image(png()).sha256
    assert [p.name for p in chat.store.media.images_dir.iterdir()] == [f"{sha}.png"]
    (stored,) = chat.store.get(conversation_id).messages
    assert stored.content == "What is it?" and [r.sha256 for r in stored.images] == [sha]
    text, thumbnail = shown[0]["content"]
    assert text == "What is it?" and Path(thumbnail["path"]).read_bytes() == decode_image(png()).data
    # Regenerate answers the question again: still refused, still one question with its picture.
    (update,) = run(chat.regenerate("", conversation_id, SessionJobs(), *values()))
    assert "cannot see images" in update[4]
    (again,) = chat.store.get(conversation_id).messages
    assert again.images == stored.images and again.content == "What is it?"
    # Text alone is still answered; the picture stays in the history.
    updates = run(chat.send("Just say hi", "", conversation_id, SessionJobs(), *values()))
    assert updates[-1][1][-1]["content"] == "Hello!"
    # Remove last gives the question back to the box with its picture.
    *_, box, _ = chat.remove_last(conversation_id, SessionJobs())
    assert box == "Just say hi"
    *_, box, _ = chat.remove_last(conversation_id, SessionJobs())
    assert box["text"] == "What is it?" and Path(box["files"][0]).read_bytes() == decode_image(png()).data


def test_documents_become_chips_and_their_text_reaches_the_model(chat: Any, tmp_path: Path) -> None:
    notes = upload(tmp_path, "notes.md", b"The launch is on Tuesday.")
    updates = run(chat.send({"text": "When?", "files": [notes]}, "", None, SessionJobs(), *values()))
    conversation_id, history, shown, _, status = updates[-1]
    assert "tokens/s" in status
    (attachment,) = chat.store.get(conversation_id).messages[0].attachments
    assert (attachment.name, attachment.kind, attachment.text) == (
        "notes.md",
        "markdown",
        "The launch is on Tuesday.",
    )
    assert attachment.tokens and attachment.tokens > 0
    assert chat.store.media.attachment(attachment.sha256) == b"The launch is on Tuesday."
    text, chip, note = shown[0]["content"]
    assert text == "When?" and chip["file"]["orig_name"] == f"notes ({attachment.tokens} tokens).md"
    assert note.startswith("📚 given whole: notes.md")  # how the file reached the model
    assert (
        "When?\n\nATTACHMENTS:\n\nName: notes.md\nContents:\n\n=====\nThe launch is on Tuesday.\n====="
        in last_prompt(chat.service)
    )
    # Send to Default / Notebook gives the prompt with the document's text, as the model read it.
    prompt, _ = chat.prompt_text(history, "", *values())
    assert "Name: notes.md" in prompt and "The launch is on Tuesday." in prompt


def test_without_a_document_reader_files_are_kept_and_said_so(tmp_path: Path) -> None:
    from webui.core.chats.media_files import MediaFiles

    media = MediaFiles(tmp_path)
    sent = read_sent_files([upload(tmp_path, "report.pdf", b"%PDF-1.4 ...")], media)
    (attachment,) = sent.attachments
    assert (attachment.name, attachment.kind, attachment.text, attachment.tokens) == (
        "report.pdf",
        "pdf",
        None,
        None,
    )
    assert "report.pdf is kept" in sent.notes[0]
    with pytest.raises(InputError, match=r"tiny\.gif: The data is not an image"):
        read_sent_files([upload(tmp_path, "tiny.gif", b"GIF89a")], media)
    assert chip_name(AttachmentRecord("a.txt", "text", "0" * 64, 3, 1, "abc")) == "a (1 tokens).txt"


def test_export_and_import_in_the_page_keep_the_pictures(chat: Any, tmp_path: Path) -> None:
    from webui.ui.conversations_panel import ConversationHandlers

    panel = ConversationHandlers(chat)
    image = upload(tmp_path, "green.png", png())
    conversation_id = run(chat.send({"text": "See", "files": [image]}, "", None, SessionJobs(), *values()))[
        -1
    ][0]
    download, status = panel.export(conversation_id)
    assert status.startswith("Exported")
    for file in chat.store.media.images_dir.iterdir():
        file.unlink()  # the export alone carries the picture
    imported_id, _, shown, _, status, _ = panel.import_file(download["value"], None, SessionJobs())
    assert status.startswith("Imported") and imported_id != conversation_id
    _text, thumbnail = shown[0]["content"]
    assert Path(thumbnail["path"]).read_bytes() == decode_image(png()).data
    assert [p.name for p in chat.store.media.images_dir.iterdir()] == [f"{decode_image(png()).sha256}.png"]
