"""Images through the remote loader: a conversation with images goes to the OpenAI-compatible server (vLLM,
llama.cpp's server ...) as ``image_url`` parts holding PNG data: URLs, so a vision model behind Palabre sees
them; with the completions endpoint (Palabre renders the prompt as text) images are refused, saying to use
the chat endpoint. The server is a scripted stand-in that keeps every request body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaders.remote_server import _vision_from
from tests.support.config import make_config
from tests.support.images import PIXELS, data_url, pixels_of, png_bytes
from tests.support.openai_server import ScriptedOpenAIServer, ScriptedReply
from webui.core.media import ImageError, image_from_data_url
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service

SEEN = ScriptedReply([{"content": "A red pixel."}])


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAIServer]:
    server = ScriptedOpenAIServer([SEEN]).start()
    yield server
    server.stop()


def _service(root: Path, server: ScriptedOpenAIServer, endpoint: str) -> Service:
    from webui.app import build_service

    service = build_service(make_config(root / "user_data"))
    service.load_model("", "remote", {"base_url": server.base_url, "endpoint": endpoint})
    return service


def test_images_go_to_the_server_as_data_url_parts(tmp_path: Path, scripted: ScriptedOpenAIServer) -> None:
    service = _service(tmp_path, scripted, "chat")
    try:
        image = image_from_data_url(data_url(png_bytes()))
        history = [ChatMessage("user", "What is this?", images=(image, image))]
        stream = service.stream_chat_reply(history, ChatSettings(), GenerationParams(max_new_tokens=8))
        assert "".join(chunk.text for chunk in stream) == "A red pixel."
    finally:
        service.close()
    (message,) = [m for m in scripted.requests[-1]["messages"] if m["role"] == "user"]
    content: list[dict[str, Any]] = message["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    urls = [part["image_url"]["url"] for part in content[1:]]
    assert len(urls) == 2 and all(url.startswith("data:image/png;base64,") for url in urls)
    assert all(pixels_of(image_from_data_url(url).data) == PIXELS for url in urls)


def test_a_text_only_conversation_keeps_plain_string_content(
    tmp_path: Path, scripted: ScriptedOpenAIServer
) -> None:
    service = _service(tmp_path, scripted, "chat")
    try:
        list(service.stream_chat_reply([ChatMessage("user", "Hi")], ChatSettings(), GenerationParams()))
    finally:
        service.close()
    assert scripted.requests[-1]["messages"][-1]["content"] == "Hi"


def test_the_completions_endpoint_refuses_images_saying_to_use_chat(
    tmp_path: Path, scripted: ScriptedOpenAIServer
) -> None:
    service = _service(tmp_path, scripted, "completions")
    try:
        image = image_from_data_url(data_url(png_bytes()))
        with pytest.raises(ImageError, match="endpoint=chat"):
            service.stream_chat_reply(
                [ChatMessage("user", "What?", images=(image,))], ChatSettings(), GenerationParams()
            )
    finally:
        service.close()
    assert scripted.requests == []


def test_the_servers_own_word_on_vision_is_read() -> None:
    assert _vision_from({"modalities": {"vision": True, "audio": False}}) is True
    assert _vision_from({"modalities": {"vision": False}}) is False
    assert _vision_from({}) is None
