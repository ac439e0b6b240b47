"""The internal endpoints (/v1/internal/*) through httpx against a real `webui serve` with the default model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import Server
from webui.api.jobs import ApiJobs
from webui.core.chats.conversation import chat_settings_for, params_for
from webui.core.presets import DEFAULT_PRESET
from webui.core.service import ChatSettings, Service
from webui.provision import DEFAULT_MODEL_FILE
from webui.ui.helpers import next_reply_prompt

CONVERSATION = [
    {"role": "user", "content": "Hello! Who are you?"},
    {"role": "assistant", "content": "I am a small model."},
    {"role": "user", "content": "Name three colours."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("internal"), model=default_model_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}v1/internal", timeout=120) as client:
        yield client


def error_message(response: httpx.Response) -> str:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    return str(body["error"]["message"])


# -- tokens -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tokenize_round_trip(api: httpx.Client) -> None:
    text = "Palabre speaks: héllo, wörld! 123"
    tokenized = api.post("/tokenize", json={"text": text})
    assert tokenized.status_code == 200, tokenized.text
    tokens = tokenized.json()["tokens"]
    assert tokenized.json()["count"] == len(tokens) > 3
    assert all(isinstance(t, int) for t in tokens)

    detokenized = api.post("/detokenize", json={"tokens": tokens})
    assert detokenized.status_code == 200, detokenized.text
    assert detokenized.json()["text"] == text

    counted = api.post("/token-count", json={"text": text})
    assert counted.json() == {"count": len(tokens)}
    assert api.post("/token-count", json={"text": ""}).json() == {"count": 0}


@pytest.mark.slow
def test_bad_token_ids_are_refused_and_the_server_lives_on(api: httpx.Client, server: Server) -> None:
    for tokens in ([-1], [10**9], [1, 2, 49152]):
        response = api.post("/detokenize", json={"tokens": tokens})
        assert response.status_code == 400, response.text
        assert "token ids" in error_message(response).lower()
    for body in ({"tokens": "hello"}, {"text": 5}, {}):
        assert api.post("/detokenize", json=body).status_code == 422
    assert httpx.get(f"{server.url}health").json()["model"] == DEFAULT_MODEL_FILE


# -- the chat prompt ------------------------------------------------------------------------------------------


def _prompt(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/chat-prompt", json={"messages": CONVERSATION, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.slow
def test_chat_prompt_is_what_send_to_notebook_shows(api: httpx.Client, smol_service: Service) -> None:
    """The same conversation and settings give the prompt the page's "Send to Notebook" puts in the box."""
    params = smol_service.presets.load(DEFAULT_PRESET).params

    instruct = _prompt(api, mode="instruct", system_message="Answer briefly.")
    page = next_reply_prompt(
        smol_service, CONVERSATION, ChatSettings(mode="instruct", system_message="Answer briefly."), params
    )
    assert instruct["prompt"] == page
    assert "Answer briefly." in page and "Name three colours." in page
    assert instruct["template"] == smol_service.detection.template.name  # type: ignore[union-attr]
    counted = api.post("/token-count", json={"text": instruct["prompt"]}).json()["count"]
    assert instruct["prompt_tokens"] == counted
    assert instruct["dropped_messages"] == 0

    barnacle = smol_service.characters.load("Captain Barnacle")  # type: ignore[union-attr]
    for mode in ("chat", "chat-instruct"):
        settings = chat_settings_for(barnacle, mode=mode)  # type: ignore[arg-type]
        page = next_reply_prompt(smol_service, CONVERSATION, settings, params_for(barnacle, params))
        rendered = _prompt(api, mode=mode, character="Captain Barnacle")
        assert rendered["prompt"] == page, mode
        assert "Captain Barnacle" in page

    chat = _prompt(api, mode="chat", character="Captain Barnacle")
    assert chat["template"] is None and chat["stop_strings"] == [f"\n{barnacle.user_name}:"]
    renamed = _prompt(api, mode="chat", character="Captain Barnacle", user_name="Ann")
    assert renamed["stop_strings"] == ["\nAnn:"] and "Ann:" in renamed["prompt"]


@pytest.mark.slow
def test_chat_prompt_options(api: httpx.Client) -> None:
    chatml = _prompt(api, instruction_template="Alpaca")
    assert chatml["template"] == "Alpaca" and "### Instruction:" in chatml["prompt"]
    tight = _prompt(api, truncation_length=40, max_new_tokens=8)
    assert tight["dropped_messages"] > 0 and "Name three colours." in tight["prompt"]
    opened = api.post(
        "/chat-prompt",
        json={"messages": [*CONVERSATION, {"role": "assistant", "content": "Red,"}], "continue_last": True},
    ).json()
    assert opened["prompt"].endswith("Red,")
    parts = _prompt(api, messages=[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}])
    assert "Hi there" in parts["prompt"]


@pytest.mark.slow
def test_chat_prompt_errors_are_readable(api: httpx.Client) -> None:
    cases = [
        ({"instruction_template": "No Such Template"}, 400, "No Such Template"),
        ({"character": "Nobody Here"}, 404, "Nobody Here"),
        ({"temprature": 0.5}, 400, "temperature"),
        ({"temperature": -3}, 400, "temperature"),
        ({"preset": "Nope"}, 400, "Nope"),
    ]
    for fields, status, mentioned in cases:
        response = api.post("/chat-prompt", json={"messages": CONVERSATION, **fields})
        assert response.status_code == status, (fields, response.text)
        assert mentioned in error_message(response), fields
    assert api.post("/chat-prompt", json={"messages": CONVERSATION, "mode": "poetry"}).status_code == 422
    bad_role = [{"role": "wizard", "content": "hi"}]
    assert api.post("/chat-prompt", json={"messages": bad_role}).status_code == 422


# -- model, lists, stop -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_info_and_lists(api: httpx.Client) -> None:
    info = api.get("/model").json()
    assert info["loaded"] is True
    assert info["name"] == DEFAULT_MODEL_FILE and info["loader"] == "llama.cpp"
    assert info["context_length"] == 2048 and info["settings"]["n_ctx"] == 2048
    assert info["template"] and info["can_tokenize"] is True and "temperature" in info["honoured_params"]

    presets = {p["name"]: p for p in api.get("/presets").json()["presets"]}
    assert "Default" in presets and presets["Deterministic"]["settings"]
    templates = api.get("/templates").json()
    assert "ChatML" in templates["templates"] and templates["detected"] == info["template"]
    characters = [c["name"] for c in api.get("/characters").json()["characters"]]
    assert characters[0] == "Assistant" and "Captain Barnacle" in characters


@pytest.mark.slow
def test_unload_then_load_again(api: httpx.Client, server: Server) -> None:
    unloaded = api.post("/model/unload")
    assert unloaded.status_code == 200 and unloaded.json() == {"unloaded": DEFAULT_MODEL_FILE}
    info = api.get("/model").json()
    assert info["loaded"] is False and info["name"] is None and info["context_length"] is None
    assert httpx.get(f"{server.url}health").json()["model"] is None
    for path, body in (("/tokenize", {"text": "hi"}), ("/chat-prompt", {"messages": CONVERSATION})):
        response = api.post(path, json=body)
        assert response.status_code == 409 and "No model is loaded" in error_message(response)

    missing = api.post("/model/load", json={"model": "no-such-model.gguf"})
    assert missing.status_code == 404, missing.text
    bad_settings = api.post("/model/load", json={"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": "lots"}})
    assert bad_settings.status_code == 400 and "n_ctx" in error_message(bad_settings)
    assert api.post("/model/load", json={}).status_code == 422

    loaded = api.post("/model/load", json={"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 1024}})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loaded"] is True and loaded.json()["context_length"] == 1024
    assert "Loaded" in loaded.json()["message"]
    assert api.post("/token-count", json={"text": "hi"}).json()["count"] > 0
    restored = api.post("/model/load", json={"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 2048}})
    assert restored.status_code == 200


@pytest.mark.slow
def test_stop_with_nothing_running(api: httpx.Client) -> None:
    assert api.post("/stop").json() == {"cancelled": 0}
    assert api.post("/stop", json={"id": "chatcmpl-unknown"}).json() == {"cancelled": 0}


@pytest.mark.slow
def test_stop_cancels_an_api_generation_by_id_and_all(api: httpx.Client, server: Server) -> None:
    """A streaming completion stops early when /stop names its id (or names none), and the engine is free."""
    import openai

    client = openai.OpenAI(api_key="unused", base_url=f"{server.url}v1", max_retries=0)
    for by_id in (True, False):
        stream = client.completions.create(
            model=DEFAULT_MODEL_FILE,
            prompt="Once upon a time",
            max_tokens=1500,
            stream=True,
            extra_body={"ban_eos_token": True},
        )
        texts, stopped = [], None
        for chunk in stream:
            texts.append(chunk.choices[0].text if chunk.choices else "")
            if stopped is None:
                stopped = api.post("/stop", json={"id": chunk.id} if by_id else None).json()["cancelled"]
        assert stopped == 1
        assert len("".join(texts)) < 1500  # 1500 tokens would be thousands of characters
    assert api.post("/stop").json() == {"cancelled": 0}  # finished requests are forgotten
    quick = client.completions.create(model=DEFAULT_MODEL_FILE, prompt="Hi", max_tokens=3)
    assert quick.usage is not None and quick.usage.completion_tokens <= 3


class _Job:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_api_jobs_cancel_one_request_or_all() -> None:
    jobs = ApiJobs()
    first, second, third = _Job(), _Job(), _Job()
    jobs.add("a", first)
    jobs.add("b", second)
    jobs.add("b", third)
    assert jobs.cancel("b") == 2 and second.cancelled and third.cancelled and not first.cancelled
    assert jobs.ids() == ["a"]
    jobs.discard("a", first)
    assert jobs.cancel() == 0 and not first.cancelled
    jobs.add("c", first)
    assert jobs.cancel() == 1 and first.cancelled and jobs.ids() == []
