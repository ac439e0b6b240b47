"""Images through every API of a real `webui serve`, with the clients people use: the `openai` client (chat
image_url parts as data: URLs, Responses input_image), the `ollama` client (``images=`` on chat and generate)
and the `anthropic` client (base64 image blocks).

The server runs the default model (SmolLM2, which cannot see) and offers a second, fake model through a loader
installed as a third-party package would be (tests/support/seeing_loader.py): it implements the SeeingModel
contract and records the images it is given, so the tests check that the pixels a client sent are the pixels
the model got. Bad images, refused URLs and a model that cannot see are 400s in each protocol's own error shape;
an http:// image URL is refused (the server was not started with --allow-image-host) and never contacted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.support.images import (
    PIXELS,
    ImageSite,
    b64,
    bomb_png,
    data_url,
    image_site,
    pixels_of,
    png_bytes,
)
from tests.support.seeing_loader import install_seeing_loader, recorded, seeing_model
from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

M = DEFAULT_MODEL_FILE  # cannot see images
EYE = "eye.see"  # the fake model that sees (and records) them
ASK = "What is in this picture?"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seen")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path, records: Path
) -> Iterator[Server]:
    site = install_seeing_loader(tmp_path_factory.mktemp("site"))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    server = Server(
        tmp_path_factory.mktemp("api-images"), model=default_model_path, extra_env={"PYTHONPATH": path}
    )
    seeing_model(server.config.models_dir, records, EYE)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site() -> Iterator[ImageSite]:
    """A loopback web server holding an image: the API must never fetch from it."""
    with image_site() as served:
        served.routes["/x.png"] = (200, {"Content-Type": "image/png"}, png_bytes())
        yield served


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ollama_client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url.rstrip("/"), timeout=120)


@pytest.fixture(scope="module")
def claude(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url.rstrip("/"), api_key="unused", max_retries=0)


def openai_parts(url: str) -> list[Any]:
    return [{"type": "text", "text": ASK}, {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]


def last_seen(records: Path, before: int) -> dict[str, Any]:
    """The one generation the seeing model recorded since ``before`` records, its images' pixels checked."""
    seen = recorded(records)
    assert len(seen) == before + 1, seen
    entry = seen[-1]
    assert entry["markers"] == len(entry["images"])  # one marker in the prompt per image, in place
    for sha in entry["images"]:
        assert pixels_of((records / f"{sha}.png").read_bytes()) == PIXELS
    return entry


# -- images reach a model that sees ---------------------------------------------------------------------------


def test_openai_chat_sends_the_image_to_the_model(client: openai.OpenAI, records: Path) -> None:
    before = len(recorded(records))
    reply = client.chat.completions.create(
        model=EYE, messages=[{"role": "user", "content": openai_parts(data_url(png_bytes()))}], max_tokens=16
    )
    assert reply.choices[0].message.content == "I saw 1 image(s)."
    assert len(last_seen(records, before)["images"]) == 1
    # The string form some clients send ("image_url": "data:...") and two images in one message.
    before += 1
    parts: Any = [
        {"type": "image_url", "image_url": data_url(png_bytes())},
        *openai_parts(data_url(png_bytes())),
    ]
    streamed = client.chat.completions.create(
        model=EYE, messages=[{"role": "user", "content": parts}], max_tokens=16, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == (
        "I saw 2 image(s)."
    )
    assert len(last_seen(records, before)["images"]) == 2


def test_ollama_chat_and_generate_send_the_image(ollama_client: ollama.Client, records: Path) -> None:
    before = len(recorded(records))
    reply = ollama_client.chat(
        model=EYE, messages=[{"role": "user", "content": ASK, "images": [png_bytes()]}]
    )
    assert reply.message.content == "I saw 1 image(s)."
    last_seen(records, before)
    generated = ollama_client.generate(model=EYE, prompt=ASK, images=[png_bytes()], stream=False)
    assert generated.response == "I saw 1 image(s)."
    last_seen(records, before + 1)


def test_responses_input_image_reaches_the_model(client: openai.OpenAI, records: Path) -> None:
    before = len(recorded(records))
    response = client.responses.create(
        model=EYE,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": ASK},
                    {"type": "input_image", "image_url": data_url(png_bytes()), "detail": "auto"},
                ],
            }
        ],
        max_output_tokens=16,
    )
    assert response.output_text == "I saw 1 image(s)."
    last_seen(records, before)


def test_anthropic_image_block_reaches_the_model(claude: anthropic.Anthropic, records: Path) -> None:
    before = len(recorded(records))
    image: Any = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(png_bytes())},
    }
    messages: Any = [{"role": "user", "content": [image, {"type": "text", "text": ASK}]}]
    message = claude.messages.create(model=EYE, max_tokens=16, messages=messages)
    assert message.content[0].type == "text" and message.content[0].text == "I saw 1 image(s)."
    last_seen(records, before)
    # count_tokens counts the image's own tokens (the fake model's 16) in the prompt.
    with_image = claude.messages.count_tokens(model=EYE, messages=messages).input_tokens
    text_only = claude.messages.count_tokens(
        model=EYE, messages=[{"role": "user", "content": ASK}]
    ).input_tokens
    assert with_image - text_only >= 16


def test_ollama_show_reports_vision_for_the_model_that_sees(
    server: Server, ollama_client: ollama.Client
) -> None:
    ollama_client.chat(model=EYE, messages=[{"role": "user", "content": "Hi"}])  # loads it beside the page's
    assert "vision" in (ollama_client.show(EYE).capabilities or [])
    info = httpx.get(f"{server.url}v1/internal/model", timeout=60).json()
    assert EYE in [model["name"] for model in info["models"]]
    ollama_client.chat(model=M, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 1})
    assert "vision" not in (ollama_client.show(M).capabilities or [])
    info = httpx.get(f"{server.url}v1/internal/model", timeout=60).json()
    assert info["sees_images"] is (info["name"] == EYE)  # the page's model's own answer


# -- refusals --------------------------------------------------------------------------------------------------


def test_a_model_that_cannot_see_says_so(client: openai.OpenAI, ollama_client: ollama.Client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=M, messages=[{"role": "user", "content": openai_parts(data_url(png_bytes()))}], max_tokens=4
        )
    assert "cannot see images" in caught.value.message and M in caught.value.message
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.chat(model=M, messages=[{"role": "user", "content": ASK, "images": [png_bytes()]}])
    assert refused.value.status_code == 400 and "cannot see images" in refused.value.error
    with pytest.raises(ollama.ResponseError) as generated:
        ollama_client.generate(model=M, prompt=ASK, images=[png_bytes()])
    assert generated.value.status_code == 400 and "cannot see images" in generated.value.error


def _bad_images(site: ImageSite) -> list[tuple[str, str, str]]:
    """(what, data URL or URL for OpenAI-shaped APIs, what the 400 says)."""
    return [
        ("corrupt", data_url(b"\x89PNG\r\n\x1a\nthis is not a picture"), "image"),
        ("bomb", data_url(bomb_png()), "too large"),
        ("bad base64", "data:image/png;base64,%%%not-base64%%%", "not valid base64"),
        ("file", "file:///etc/passwd", "file: URLs are never read"),
        ("loopback", f"http://127.0.0.1:{site.port}/x.png", "--allow-image-host"),
    ]


BAD = ["corrupt", "bomb", "bad base64", "file", "loopback"]


@pytest.mark.parametrize("what", BAD)
def test_bad_images_are_400s_in_the_openai_shape(server: Server, site: ImageSite, what: str) -> None:
    _, url, says = next(case for case in _bad_images(site) if case[0] == what)
    for model in (M, EYE):
        body = {"model": model, "messages": [{"role": "user", "content": openai_parts(url)}], "max_tokens": 4}
        reply = httpx.post(f"{server.url}v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and says in error["message"], error
        responses = {
            "model": model,
            "input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}],
        }
        reply = httpx.post(f"{server.url}v1/responses", json=responses, timeout=60)
        assert reply.status_code == 400 and says in reply.json()["error"]["message"], reply.text
    assert site.hits == []  # the loopback image was never fetched


@pytest.mark.parametrize("what", BAD)
def test_bad_images_are_400s_in_the_anthropic_shape(server: Server, site: ImageSite, what: str) -> None:
    _, url, says = next(case for case in _bad_images(site) if case[0] == what)
    if url.startswith("data:"):
        _, _, data = url.partition(",")
        source = {"type": "base64", "media_type": "image/png", "data": data}
    else:
        source = {"type": "url", "url": url}
    body = {
        "model": EYE,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}],
    }
    reply = httpx.post(f"{server.url}v1/messages", json=body, timeout=60)
    assert reply.status_code == 400, reply.text
    payload = reply.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert says in payload["error"]["message"], payload
    assert site.hits == []


def test_anthropic_checks_the_media_type(claude: anthropic.Anthropic) -> None:
    source: Any = {"type": "base64", "media_type": "application/pdf", "data": b64(png_bytes())}
    with pytest.raises(anthropic.BadRequestError, match="media_type must be one of"):
        claude.messages.create(
            model=EYE,
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": source}]}],
        )


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (b64(b"\x89PNG\r\n\x1a\nthis is not a picture"), "image"),
        (b64(bomb_png()), "too large"),
        ("%%%not-base64%%%", "not valid base64"),
        ("file:///etc/passwd", "not valid base64"),
    ],
)
def test_bad_images_are_400s_in_the_ollama_shape(server: Server, image: str, says: str) -> None:
    for path, body in (
        ("api/chat", {"model": EYE, "messages": [{"role": "user", "content": ASK, "images": [image]}]}),
        ("api/generate", {"model": EYE, "prompt": ASK, "images": [image]}),
    ):
        reply = httpx.post(f"{server.url}{path}", json={**body, "stream": False}, timeout=60)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert isinstance(error, str) and says in error, error


def test_file_ids_and_raw_prompts_with_images_say_what_to_send_instead(server: Server) -> None:
    body = {
        "model": EYE,
        "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}],
    }
    reply = httpx.post(f"{server.url}v1/responses", json=body, timeout=60)
    assert reply.status_code == 400 and "does not store files" in reply.json()["error"]["message"]
    raw = {"model": EYE, "prompt": ASK, "images": [b64(png_bytes())], "raw": True, "stream": False}
    reply = httpx.post(f"{server.url}api/generate", json=raw, timeout=60)
    assert reply.status_code == 400 and "without raw" in reply.json()["error"]


def test_an_image_in_a_tool_result_reaches_the_model(server: Server, records: Path) -> None:
    before = len(recorded(records))
    screenshot = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(png_bytes())},
    }
    body = {
        "model": EYE,
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "Take a screenshot."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [screenshot]}],
            },
        ],
    }
    reply = httpx.post(f"{server.url}v1/messages", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"][0]["text"] == "I saw 1 image(s)."
    last_seen(records, before)


def test_with_allowed_image_hosts_a_loopback_address_is_still_refused(
    tmp_path: Path, site: ImageSite
) -> None:
    allowing = Server(
        tmp_path, extra_args=["--allow-image-host", "localhost", "--allow-image-host", "127.0.0.1"]
    )
    with allowing.running():
        for host in ("localhost", "127.0.0.1"):
            url = f"http://{host}:{site.port}/x.png"
            body = {
                "model": EYE,
                "messages": [{"role": "user", "content": openai_parts(url)}],
                "max_tokens": 4,
            }
            reply = httpx.post(f"{allowing.url}v1/chat/completions", json=body, timeout=60)
            assert reply.status_code == 400, reply.text
            message = reply.json()["error"]["message"]
            assert "private, loopback or link-local" in message and "--allow-image-host" not in message
    assert site.hits == []


def test_more_images_than_a_request_may_carry_is_a_400_naming_the_limit(server: Server) -> None:
    from webui.api.core_requests import MAX_REQUEST_IMAGES

    many = [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}}] * (MAX_REQUEST_IMAGES + 1)
    body = {"model": EYE, "messages": [{"role": "user", "content": many}], "max_tokens": 4}
    reply = httpx.post(f"{server.url}v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert f"at most {MAX_REQUEST_IMAGES} images" in error["message"] and error["code"] == "too_many_images"
    images = [b64(png_bytes())] * (MAX_REQUEST_IMAGES + 1)
    chat = {"model": EYE, "messages": [{"role": "user", "content": ASK, "images": images}], "stream": False}
    reply = httpx.post(f"{server.url}api/chat", json=chat, timeout=60)
    assert reply.status_code == 400 and f"at most {MAX_REQUEST_IMAGES}" in reply.json()["error"]


def test_the_chat_prompt_endpoint_takes_image_parts(server: Server, records: Path) -> None:
    # The prompt endpoint builds for the page's model: make the seeing model that one (an API load takes the
    # page's place only when it is empty).
    for model in httpx.get(f"{server.url}v1/internal/model", timeout=60).json()["models"]:
        httpx.post(f"{server.url}v1/internal/model/unload", json={"model": model["name"]}, timeout=60)
    load = {"model": EYE, "messages": [{"role": "user", "content": ASK}], "max_tokens": 4}
    assert httpx.post(f"{server.url}v1/chat/completions", json=load, timeout=60).status_code == 200
    plain = {"messages": [{"role": "user", "content": [{"type": "text", "text": ASK}]}]}
    with_image = {"messages": [{"role": "user", "content": openai_parts(data_url(png_bytes()))}]}
    without = httpx.post(f"{server.url}v1/internal/chat-prompt", json=plain, timeout=60)
    shown = httpx.post(f"{server.url}v1/internal/chat-prompt", json=with_image, timeout=60)
    assert without.status_code == 200 and shown.status_code == 200, shown.text
    assert "<|image-" in shown.json()["prompt"] and "<|image-" not in without.json()["prompt"]
    assert shown.json()["prompt_tokens"] > without.json()["prompt_tokens"]  # the image's own tokens count
    bad = {"messages": [{"role": "user", "content": openai_parts("file:///etc/passwd")}]}
    reply = httpx.post(f"{server.url}v1/internal/chat-prompt", json=bad, timeout=60)
    assert reply.status_code == 400 and "file: URLs are never read" in reply.json()["error"]["message"]
