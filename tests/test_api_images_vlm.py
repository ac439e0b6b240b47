"""An image sent through the API reaches a real vision model: a `webui serve` whose models folder holds the tiny
random-weight vision GGUF with its mmproj projector beside it (tests/support/vision_models.py), asked with the
official `openai` and `ollama` clients. The weights are random, so what is checked is what a user would notice:
the image takes its tokens in the prompt, the reply depends on which picture was sent (and is the same for the
same picture), and /api/show lists "vision"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

from tests.support.images import b64
from tests.support.servers import Server
from tests.support.vision_models import GGUF_NAME, IMAGE_TOKENS, VisionModels, solid_image

pytestmark = pytest.mark.slow

ASK = "What is in this picture?"
RED = solid_image((220, 30, 30))
BLUE = solid_image((30, 30, 220), (90, 60))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, vision_models: VisionModels) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("api-vlm"))  # no model at start: the request names it
    for file in (vision_models.gguf, vision_models.mmproj):
        (server.config.models_dir / file.name).symlink_to(file)
    server.start()
    yield server
    server.stop()


def _ask(client: openai.OpenAI, *images: Any) -> tuple[str, int]:
    content: list[Any] = [{"type": "text", "text": ASK}]
    content += [{"type": "image_url", "image_url": {"url": image.data_url}} for image in images]
    reply = client.chat.completions.create(
        model=GGUF_NAME,
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        seed=1,
    )
    assert reply.usage is not None
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens


def test_the_model_sees_the_picture_the_client_sent(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)
    text_only, text_tokens = _ask(client)
    red, red_tokens = _ask(client, RED)
    assert red_tokens - text_tokens >= 2 * IMAGE_TOKENS  # the image's own tokens (a tile and the overview)
    assert red != text_only
    assert _ask(client, RED)[0] == red  # greedy: the same picture, the same reply
    assert _ask(client, BLUE)[0] != red  # another picture, another reply

    chat = ollama.Client(host=server.url.rstrip("/"), timeout=120)
    assert "vision" in (chat.show(GGUF_NAME).capabilities or [])
    options = {"temperature": 0, "seed": 1, "num_predict": 8}
    seen = chat.chat(
        model=GGUF_NAME,
        messages=[{"role": "user", "content": ASK, "images": [b64(RED.data)]}],
        options=options,
    )
    assert seen.message.content == red  # the same prompt through Ollama's API: the same reply
