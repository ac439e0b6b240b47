"""Images and documents in the Chat tab, in a real Chromium against the real server.

With the default (text-only) model: images attached with the 📎 button, pasted into the box and dropped on it
show as thumbnails in the history, are stored once in user_data/images and stay after a reload; the model that
cannot see them says so in the status; a file that is not an image is refused before anything is sent; a
document shows as a chip with its tokens. With the tiny vision GGUF: a picture sent in the page is answered,
and the context meter counts its image tokens."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.page import goto_chat, set_max_new_tokens, start_new_chat
from tests.support.servers import Server
from tests.support.vision_models import GGUF_NAME, IMAGE_TOKENS, VisionModels
from webui.benchmarks.browser import BOT
from webui.core.media import decode_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

USER = '#chatbot [data-testid="user"]'
CANNOT_SEE = re.compile("cannot see images", re.IGNORECASE)

# Pastes a PNG (base64) into the message box as a browser does for a copied image: a paste event with a file.
PASTE_IMAGE = """
(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}));
  const box = document.querySelector('#chat-input textarea');
  box.focus();
  box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
}
"""

# Drops a PNG on the message box as a browser does for a file dragged from the desktop.
DROP_IMAGE = """
(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
  const target = document.querySelector('#chat-input textarea');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
  }
}
"""


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("images-browser"), default_model_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stored_images(server: Server) -> list[str]:
    folder = server.config.user_data_dir / "images"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def thumbnails_loaded(page: Page, count: int) -> None:
    """Wait until the history shows ``count`` images sent by the user, each drawn (its file was served)."""
    page.wait_for_function(
        """(count) => { const images = [...document.querySelectorAll('#chatbot [data-testid="user"] img')];
        return images.length === count && images.every((i) => i.complete && i.naturalWidth > 0); }""",
        arg=count,
    )


def wait_status(page: Page, pattern: re.Pattern[str]) -> str:
    page.wait_for_function(
        "(source) => new RegExp(source, 'i').test(document.querySelector('#chat-status')?.innerText ?? '')",
        arg=pattern.pattern,
    )
    return page.locator("#chat-status").inner_text()


def wait_box_files(page: Page, count: int) -> None:
    """Wait until the message box shows ``count`` attached files (uploaded, ready to send)."""
    page.wait_for_function(
        "(count) => document.querySelectorAll('#chat-input .thumbnail-item, #chat-input .thumbnail-image')"
        ".length >= count && !document.querySelector('#chat-input .loader, #chat-input .uploading')",
        arg=count,
    )


def test_images_are_attached_pasted_shown_stored_once_and_kept(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    goto_chat(page, server.url)
    start_new_chat(page)

    red = png((220, 20, 20))
    picture = tmp_path / "red.png"
    picture.write_bytes(red)
    expected = f"{hashlib.sha256(decode_image(red).data).hexdigest()}.png"

    # A file named .png that is no image: refused, nothing sent, the status says why.
    fake = tmp_path / "broken.png"
    fake.write_text("this is not a picture")
    page.locator("#chat-input input[type=file]").set_input_files(str(fake))
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("Is this broken?")
    page.locator("#chat-send").click()
    assert "broken.png" in wait_status(page, re.compile("not an image"))
    assert page.locator(USER).count() == 0 and stored_images(server) == []
    start_new_chat(page)  # clears the box (and its file)

    # Attached with the 📎 button (a file input), sent with a question.
    page.locator("#chat-input input[type=file]").set_input_files(str(picture))
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("What is in this picture?")
    page.locator("#chat-send").click()
    thumbnails_loaded(page, 1)
    status = wait_status(page, CANNOT_SEE)
    assert "Traceback" not in status
    assert "What is in this picture?" in page.locator(USER).first.inner_text()
    assert stored_images(server) == [expected]
    # The thumbnail is the stored file itself, served as it is (no copy hashed on every page update).
    source = page.locator(f"{USER} img").first.get_attribute("src") or ""
    assert source.endswith(f"/user_data/images/{expected}"), source
    page.wait_for_function("() => document.querySelector('#chat-input textarea')?.value === ''")

    # The same image pasted into the box: a second thumbnail, still one file.
    page.evaluate(PASTE_IMAGE, base64.b64encode(red).decode())
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("And this one?")
    page.locator("#chat-send").click()
    thumbnails_loaded(page, 2)
    wait_status(page, CANNOT_SEE)
    assert stored_images(server) == [expected]

    # Dropped on the box: a third thumbnail, still one file.
    page.evaluate(DROP_IMAGE, base64.b64encode(red).decode())
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("Dropped.")
    page.locator("#chat-send").click()
    thumbnails_loaded(page, 3)
    assert stored_images(server) == [expected]

    # A document: kept with the message as a chip with its tokens; the text-only model answers from it.
    set_max_new_tokens(page, 8)
    notes = tmp_path / "notes.md"
    notes.write_text("The launch is on Tuesday at noon.")
    page.locator("#chat-input input[type=file]").set_input_files(str(notes))
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("When is the launch?")
    page.locator("#chat-send").click()
    chip = page.locator('#chatbot [data-testid="chatbot-file"]')
    chip.wait_for()
    assert re.fullmatch(r"notes \(\d+ tokens\)\.md", chip.inner_text().strip()), chip.inner_text()
    # The file is served as a download, never as a page of this site (an .html file could hold a script).
    served = httpx.get(chip.get_attribute("href") or "", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "application/octet-stream"
    assert served.content == notes.read_bytes()
    page.wait_for_function(
        "() => { const s = document.querySelector('#chat-status')?.innerText ?? '';"
        " return !s.startsWith('Generating') && s.includes('tokens/s'); }"
    )

    # After a reload the conversation comes back with its thumbnails and its chip.
    page.reload()
    page.wait_for_selector("#chat-input textarea")
    thumbnails_loaded(page, 3)
    page.locator('#chatbot [data-testid="chatbot-file"]').wait_for()
    # The page draws a message's text and each image as bubbles of their own.
    texts = [t.strip() for t in page.locator(USER).all_inner_texts() if t.strip()]
    assert texts[:4] == ["What is in this picture?", "And this one?", "Dropped.", "When is the launch?"]
    assert re.fullmatch(r"notes \(\d+ tokens\)\.md\s+MD", texts[4])  # the chip: its name, then its type
    context.close()


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory, vision_models: VisionModels) -> Iterator[Server]:
    """`webui serve` with the tiny vision GGUF and its mmproj projector, loaded by a first API request."""
    server = Server(tmp_path_factory.mktemp("images-vlm-browser"))
    for file in (vision_models.gguf, vision_models.mmproj):
        (server.config.models_dir / file.name).symlink_to(file)
    server.start()
    try:
        request = {"model": GGUF_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        httpx.post(f"{server.url}v1/chat/completions", json=request, timeout=120).raise_for_status()
        yield server
    finally:
        server.stop()


def reply_done(page: Page) -> str:
    """Wait until the new chat's reply has come and finished (the status shows its speed); the status."""
    page.wait_for_function(f"() => document.querySelectorAll('{BOT}').length === 1")
    page.wait_for_function(
        "() => { const s = document.querySelector('#chat-status')?.innerText ?? '';"
        " return !s.startsWith('Generating') && s.includes('tokens/s'); }"
    )
    return page.locator("#chat-status").inner_text()


def context_tokens(page: Page) -> int:
    """The prompt tokens the context meter shows ("Context: 123 / 2,048 tokens ...")."""
    page.wait_for_function(
        "() => /Context: \\*?\\*?[\\d,]+ \\//.test(document.querySelector('#chat-context')?.innerText ?? '')"
    )
    found = re.search(r"Context: ([\d,]+) /", page.locator("#chat-context").inner_text())
    assert found, page.locator("#chat-context").inner_text()
    return int(found.group(1).replace(",", ""))


def test_a_vision_model_answers_the_picture_sent_in_the_page(
    browser: Browser, vision_server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(120_000)
    goto_chat(page, vision_server.url)
    set_max_new_tokens(page, 8)  # random weights: a short reply says as much as a long one
    start_new_chat(page)
    page.locator("#chat-input textarea").fill("Describe it.")
    page.locator("#chat-send").click()
    reply_done(page)
    text_only = context_tokens(page)

    start_new_chat(page)
    picture = tmp_path / "red.png"
    picture.write_bytes(png((220, 30, 30)))
    page.locator("#chat-input input[type=file]").set_input_files(str(picture))
    wait_box_files(page, 1)
    page.locator("#chat-input textarea").fill("Describe it.")
    page.locator("#chat-send").click()
    thumbnails_loaded(page, 1)
    status = reply_done(page)
    assert "cannot see" not in status
    # The meter counts the picture's own tokens (a tile and the overview) with the same question's text.
    page.wait_for_function(
        "(before) => { const m = /Context: \\*?\\*?([\\d,]+) \\//.exec(document.querySelector('#chat-context')"
        "?.innerText ?? ''); return m && Number(m[1].replace(/,/g, '')) >= before + 2 * arguments[0].tokens; }".replace(
            "arguments[0].tokens", str(IMAGE_TOKENS)
        ),
        arg=text_only,
    )
    assert len(stored_images(vision_server)) == 1
    context.close()
