"""Images and files in stored conversations: each image kept once under its SHA-256 beside the database, named
by the messages that show it; an older database gains them in place; exports carry the images (base64 PNG,
decoded again on import) and the files' text; the prompt gets the images and the documents' text back."""

from __future__ import annotations

import base64
import copy
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import ScriptedLoader
from webui.config import PROJECT_ROOT
from webui.core.chats.conversation import Conversations, history_of
from webui.core.chats.schema import MIGRATIONS
from webui.core.chats.store import AttachmentRecord, ChatStore, ChatStoreError, ImageRef
from webui.core.media import Image, ImageError, decode_image
from webui.core.params import GenerationParams
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import ChatSettings, Service
from webui.core.templates.store import TemplateStore


def picture(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 6), fmt: str = "PNG"
) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    with ChatStore(tmp_path / "palabre.db") as opened:
        yield opened


def image_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "images").iterdir()) if (root / "images").exists() else []


# -- the database ----------------------------------------------------------------------------------------


def test_a_schema_3_database_gains_images_in_place_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "palabre.db"
    with sqlite3.connect(db) as raw:
        for migration in MIGRATIONS[:3]:  # the schema as Palabre wrote it before images (user_version 3)
            for statement in migration:
                raw.execute(statement)
        raw.execute(
            "INSERT INTO conversations VALUES (1, 'Old chat', 0, 'Ada', 'chat', 1.0, 2.0, NULL, NULL)"
        )
        raw.execute("INSERT INTO conversations VALUES (2, 'Its branch', 0, 'Ada', 'chat', 3.0, 4.0, 1, 1)")
        raw.execute("INSERT INTO messages VALUES (1, 1, 0, 'user', 0, 1.0)")
        raw.execute("INSERT INTO messages VALUES (2, 1, 1, 'assistant', 1, 1.5)")
        raw.execute("INSERT INTO messages VALUES (3, 2, 0, 'user', 0, 3.0)")
        raw.execute("INSERT INTO alternatives VALUES (1, 0, 'Hi?', NULL, 1.0, '', NULL, '')")
        raw.execute("INSERT INTO alternatives VALUES (2, 0, 'Hello.', 'm', 1.5, 'Greet back.', 0.5, '')")
        rounds = json.dumps(
            [{"text": "", "reasoning": "", "calls": [{"id": "c1", "name": "clock", "arguments": "{}"}]}]
        )
        raw.execute("INSERT INTO alternatives VALUES (2, 1, 'Hi there.', 'm', 1.7, '', NULL, ?)", (rounds,))
        raw.execute("INSERT INTO alternatives VALUES (3, 0, 'Hi?', NULL, 3.0, '', NULL, '')")
        raw.execute("PRAGMA user_version = 3")
    raw.close()

    with ChatStore(db) as store:
        old = store.get(1)
        assert (old.title, old.character, old.mode, old.created_at) == ("Old chat", "Ada", "chat", 1.0)
        assert [(m.role, m.content, m.alternatives, m.active) for m in old.messages] == [
            ("user", "Hi?", ("Hi?",), 0),
            ("assistant", "Hi there.", ("Hello.", "Hi there."), 1),
        ]
        assert old.messages[1].tool_rounds[0].calls[0].name == "clock"
        assert [(m.images, m.attachments) for m in old.messages] == [((), ()), ((), ())]
        assert store.get(2).parent_id == 1 and store.get(2).messages[0].content == "Hi?"
        # The migrated database takes images from now on, in the old conversation too.
        sent = store.append(1, "user", "And this?", images=[decode_image(picture())])
        assert len(sent.images) == 1
    with ChatStore(db) as reopened:
        assert reopened.get(1).messages[-1].images == sent.images
        assert reopened.get(1).messages[0].content == "Hi?"
        assert reopened.get(1).messages[1].reasoning == ""  # the shown version's (the second)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 5
    raw.close()


def test_an_image_sent_twice_is_stored_once(store: ChatStore, tmp_path: Path) -> None:
    jpeg = picture(fmt="JPEG")
    image = decode_image(jpeg)
    first = store.create()
    one = store.append(first.id, "user", "Look", images=[image])
    two = store.append(
        first.id,
        "user",
        "Again, and another",
        images=[decode_image(jpeg), decode_image(picture((0, 0, 255)))],
    )
    other = store.create()
    store.append(other.id, "user", "", images=[image])  # an image alone is a message too

    assert image_files(tmp_path) == sorted({f"{image.sha256}.png", f"{two.images[1].sha256}.png"})
    stored = (tmp_path / "images" / f"{image.sha256}.png").read_bytes()
    assert stored == image.data and stored.startswith(b"\x89PNG")  # the re-encoded PNG, named by its hash
    assert one.images == (ImageRef(image.sha256, 8, 6),)
    assert two.images[0] == one.images[0] and store.get(other.id).messages[0].images == one.images
    assert store.image(one.images[0]) == image
    # A branch names the same files; deleting a conversation keeps the files its branch still shows.
    branch = store.branch(first.id, two.id)
    store.delete(first.id)
    assert store.get(branch.id).messages[1].images == two.images
    assert store.image(two.images[1]).data.startswith(b"\x89PNG")
    assert len(image_files(tmp_path)) == 2
    # No temporary file is left behind.
    assert not [p for p in (tmp_path / "images").iterdir() if p.name.startswith(".")]


def test_a_damaged_or_missing_image_file_is_a_readable_error(store: ChatStore, tmp_path: Path) -> None:
    conversation = store.create()
    message = store.append(conversation.id, "user", "Look", images=[decode_image(picture())])
    path = tmp_path / "images" / f"{message.images[0].sha256}.png"
    path.write_bytes(b"not the image")
    with pytest.raises(ChatStoreError, match="damaged"):
        store.image(message.images[0])
    path.unlink()
    with pytest.raises(ChatStoreError, match="missing"):
        store.image(message.images[0])
    assert store.get(conversation.id).messages[0].content == "Look"  # the conversation itself is intact
    with pytest.raises(ChatStoreError, match="SHA-256"):
        store.image(ImageRef("../../etc/passwd", 1, 1))
    with pytest.raises(ChatStoreError, match=r"media\.Image"):
        store.append(conversation.id, "user", "x", images=[picture()])  # type: ignore[list-item]


def test_attachments_are_kept_with_their_text(store: ChatStore, tmp_path: Path) -> None:
    conversation = store.create()
    data = b"# Notes\nThe launch is on Tuesday."
    sha = store.media.put_attachment(data)
    notes = AttachmentRecord("notes.md", "markdown", sha, len(data), 9, "# Notes\nThe launch is on Tuesday.")
    report = AttachmentRecord("report.pdf", "pdf", "a" * 64, 1234)  # not extracted (yet)
    message = store.append(conversation.id, "user", "When is the launch?", attachments=[notes, report])
    assert message.attachments == (notes, report)
    assert store.media.attachment(sha) == data and store.media.attachment("a" * 64) is None
    with ChatStore(tmp_path / "palabre.db") as reopened:
        assert reopened.get(conversation.id).messages[0].attachments == (notes, report)
    (model_view,) = history_of(store.get(conversation.id))
    assert model_view.content == (
        "When is the launch?\n\nATTACHMENTS:\n\nName: notes.md\nContents:\n\n=====\n# Notes\nThe launch is on Tuesday.\n====="
    )
    with pytest.raises(ChatStoreError, match="SHA-256"):
        store.append(conversation.id, "user", "x", attachments=[AttachmentRecord("a", "text", "nope")])


def test_prune_deletes_only_old_files_no_message_names(store: ChatStore, tmp_path: Path) -> None:
    kept, dropped = store.create(), store.create()
    red, blue = decode_image(picture()), decode_image(picture((0, 0, 255)))
    store.append(kept.id, "user", "Mine", images=[red])
    store.append(dropped.id, "user", "Gone", images=[red, blue])
    sha = store.media.put_attachment(b"notes")
    store.append(dropped.id, "user", "A file", attachments=[AttachmentRecord("n.txt", "text", sha, 5)])
    (tmp_path / "images" / "my-own-picture.png").write_bytes(b"not Palabre's")
    store.delete(dropped.id)
    assert store.prune_media() == 0  # too recent: it may belong to a message being committed
    assert store.prune_media(older_than_s=0) == 2  # blue and the file; red is still shown
    assert image_files(tmp_path) == sorted([f"{red.sha256}.png", "my-own-picture.png"])
    assert store.media.attachment(sha) is None
    assert store.image(store.get(kept.id).messages[0].images[0]) == red


# -- export and import -----------------------------------------------------------------------------------


def test_export_import_round_trip_carries_the_images(tmp_path: Path) -> None:
    red, blue = decode_image(picture()), decode_image(picture((0, 0, 255), (3, 4)))
    with ChatStore(tmp_path / "a" / "palabre.db") as source:
        conversation = source.create(title="Pictures")
        source.append(conversation.id, "user", "Two pictures", images=[red, blue])
        source.append(conversation.id, "assistant", "Red and blue.", model="vlm")
        note = AttachmentRecord("n.txt", "text", "b" * 64, 5, 2, "hello")
        source.append(conversation.id, "user", "And a note", attachments=[note])
        exported = json.loads(json.dumps(source.export_json(conversation.id)))  # plain JSON: survives a file
        before = source.get(conversation.id)
    assert exported["version"] == 2
    assert [i["sha256"] for i in exported["messages"][0]["images"]] == [red.sha256, blue.sha256]
    assert base64.b64decode(exported["messages"][0]["images"][0]["data"]) == red.data
    with ChatStore(tmp_path / "b" / "palabre.db") as target:  # another user_data: the images travel inside
        imported = target.get(target.import_json(exported).id)
        assert image_files(tmp_path / "b") == sorted([f"{red.sha256}.png", f"{blue.sha256}.png"])
        assert [(m.role, m.content, m.images, m.attachments) for m in imported.messages] == [
            (m.role, m.content, m.images, m.attachments) for m in before.messages
        ]
        assert target.image(imported.messages[0].images[1]) == blue
        again = target.export_json(imported.id)
        assert again["messages"] == exported["messages"]


def test_an_export_without_images_still_imports(store: ChatStore) -> None:
    version_1 = {
        "format": "palabre-chat",
        "version": 1,
        "title": "Old export",
        "messages": [{"role": "user", "alternatives": ["Hi"]}, {"role": "assistant", "content": "Hello"}],
    }
    imported = store.get(store.import_json(version_1).id)
    assert [(m.content, m.images, m.attachments) for m in imported.messages] == [
        ("Hi", (), ()),
        ("Hello", (), ()),
    ]


def test_an_image_exported_without_its_file_leaves_the_rest(store: ChatStore, tmp_path: Path) -> None:
    conversation = store.create()
    message = store.append(conversation.id, "user", "Look", images=[decode_image(picture())])
    (tmp_path / "images" / f"{message.images[0].sha256}.png").unlink()
    exported = store.export_json(conversation.id)
    assert "data" not in exported["messages"][0]["images"][0]
    imported = store.get(store.import_json(exported).id)
    assert imported.messages[0].content == "Look" and imported.messages[0].images == ()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"data": base64.b64encode(b"GIF89a not really").decode()}, "image 1: The data is not an image"),
        ({"data": "%%% not base64 %%%"}, "image 1: The image is not valid base64"),
        ({"data": 42}, "image 1: its data is not base64"),
        ("a picture", "image 1: not an object"),
    ],
)
def test_a_corrupt_image_in_an_import_is_a_clear_error_and_nothing_is_lost(
    store: ChatStore, tmp_path: Path, image: object, message: str
) -> None:
    kept = store.create(title="Kept")
    store.append(kept.id, "user", "Already here", images=[decode_image(picture())])
    exported = store.export_json(kept.id)
    bad = copy.deepcopy(exported)
    bad["messages"].append({"role": "user", "alternatives": ["See"], "images": [image]})
    with pytest.raises(ChatStoreError, match=f"Message 2 of the chat file, {message}"):
        store.import_json(bad)
    assert [c.title for c in store.conversations()] == ["Kept"]  # nothing half-imported
    assert store.get(kept.id).messages[0].content == "Already here"
    assert len(image_files(tmp_path)) == 1


# -- the prompt ------------------------------------------------------------------------------------------


@pytest.fixture
def chats(tmp_path: Path) -> Iterator[Conversations]:
    """A scripted model that cannot see images."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "blind.gguf").write_text("I| see| nothing|.")
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=models,
        presets=PresetStore(PROJECT_ROOT / "presets", tmp_path / "presets"),
        templates=TemplateStore(PROJECT_ROOT / "instruction-templates", tmp_path / "templates"),
    )
    service.load_model("blind.gguf", "scripted")
    with ChatStore(tmp_path / "palabre.db") as opened:
        yield Conversations(service, opened)
    service.close()


def test_images_sent_to_a_model_that_cannot_see_are_kept_and_refused(chats: Conversations) -> None:
    conversation = chats.start()
    image = decode_image(picture())
    with pytest.raises(ImageError, match="cannot see images"):
        chats.send(
            conversation.id,
            "What is this?",
            ChatSettings(template="ChatML"),
            GenerationParams(),
            images=[image],
        )
    (kept,) = chats.store.get(conversation.id).messages
    assert (kept.role, kept.content, kept.images) == (
        "user",
        "What is this?",
        (ImageRef(image.sha256, 8, 6),),
    )
    # Text alone still gets its reply.
    reply = chats.send(
        conversation.id, "Then just say hi.", ChatSettings(template="ChatML"), GenerationParams()
    )
    assert "".join(chunk.text for chunk in reply) == "I see nothing."


def test_the_prompt_history_carries_the_stored_images(store: ChatStore) -> None:
    conversation = store.create()
    image = decode_image(picture())
    store.append(conversation.id, "user", "What is this?", images=[image])
    store.append(conversation.id, "assistant", "A red rectangle.")
    question, answer = history_of(store.get(conversation.id), store.image)
    assert question.images == (image,) and isinstance(question.images[0], Image)
    assert answer.images == ()
    assert history_of(store.get(conversation.id))[0].images == ()  # without a loader of images: text only
