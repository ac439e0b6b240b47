"""What client libraries and tools met when pointed at a real `webui serve` (found by exploratory QA with the
openai and ollama libraries, httpx and curl): each test is one bug that was fixed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    """`webui serve --model /path/to/model.gguf`: the model is loaded by path, not from the models folder."""
    server = Server(tmp_path_factory.mktemp("api-clients-qa"), model=default_model_path)
    (server.config.models_dir / default_model_path.name).unlink()
    server.extra_args = ["--model", str(default_model_path)]  # the last --model wins
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ollama_client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url.rstrip("/"))


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def test_endpoints_palabre_does_not_serve_say_so_in_the_clients_own_error(
    openai_client: openai.OpenAI, ollama_client: ollama.Client
) -> None:
    # Before: FastAPI's {"detail": "Not Found"}, which the openai library showed as a bare "Error code: 404".
    # Embeddings are served now (tests/test_api_embeddings.py): an unknown model is a 404 in each shape.
    with pytest.raises(openai.NotFoundError) as embeddings:  # a 4xx: the client does not retry it
        openai_client.embeddings.create(model="no-such-model", input="hello")
    assert "The model 'no-such-model' does not exist" in embeddings.value.message

    with pytest.raises(ollama.ResponseError) as embed:
        ollama_client.embed(model="no-such-model", input="hello")
    assert embed.value.status_code == 404 and "does not exist" in embed.value.error
    with pytest.raises(ollama.ResponseError) as pull:
        ollama_client.pull("llama3.2")
    assert pull.value.status_code == 404 and "webui models download" in pull.value.error
    with pytest.raises(ollama.ResponseError) as delete:
        ollama_client.delete(DEFAULT_MODEL_FILE)
    assert "user_data/models" in delete.value.error


def test_a_wrong_method_is_a_405_naming_the_right_one(http: httpx.Client) -> None:
    chat = http.get("/v1/chat/completions")
    assert chat.status_code == 405 and chat.headers["allow"] == "POST"
    assert chat.json()["error"]["message"] == "GET is not allowed on /v1/chat/completions: use POST."
    ollama_chat = http.get("/api/chat")
    assert ollama_chat.status_code == 405
    assert ollama_chat.json() == {"error": "GET is not allowed on /api/chat: use POST."}
    unknown = http.post("/v1/no-such-thing", json={})
    assert unknown.status_code == 404 and "POST /v1/no-such-thing" in unknown.json()["error"]["message"]
    # Ollama's server answers HEAD on these; clients probe them to see whether the server is up.
    for path in ("/api/tags", "/api/version", "/v1/models"):
        assert http.head(path).status_code == 200, path
    assert http.get("/api/version").json()["version"]  # the GET routes are unchanged


def test_token_ids_outside_the_vocabulary_are_the_clients_error(openai_client: openai.OpenAI) -> None:
    # Before: 500 "Internal error", which the openai library retries as a server failure.
    for prompt in ([999_999_999], [[1, 2], [-5]]):
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.completions.create(model=DEFAULT_MODEL_FILE, prompt=prompt, max_tokens=2)
        assert "not in the model's vocabulary" in refused.value.message
        assert refused.value.param == "prompt"
    fine = openai_client.completions.create(model=DEFAULT_MODEL_FILE, prompt=[504, 3458], max_tokens=2)
    assert fine.choices[0].finish_reason == "length"  # the server goes on answering


def test_null_means_not_given_as_in_openai_and_ollama(http: httpx.Client) -> None:
    # OpenAI documents n, stream and echo as nullable; Ollama's Go server reads null as unset. Before: 400.
    chat = http.post(
        "/v1/chat/completions",
        json={
            "model": DEFAULT_MODEL_FILE,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2,
            "n": None,
            "stream": None,
            "mode": None,
            "top_k": None,  # Palabre's own sampler fields too
            "min_p": None,
        },
    )
    assert chat.status_code == 200, chat.text
    assert len(chat.json()["choices"]) == 1
    completion = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "echo": None, "n": None})
    assert completion.status_code == 200, completion.text
    assert not completion.json()["choices"][0]["text"].startswith("Hi")  # no echo

    ollama_chat = http.post(
        "/api/chat",
        json={
            "model": DEFAULT_MODEL_FILE,
            "messages": [{"role": "user", "content": None}, {"role": "user", "content": "Hi"}],
            "stream": None,
            "options": {"num_predict": 2},
        },
    )
    assert ollama_chat.status_code == 200, ollama_chat.text
    lines = [json.loads(line) for line in ollama_chat.text.splitlines()]
    assert len(lines) >= 2 and lines[-1]["done"] is True  # null stream = Ollama's default, streamed
    generate = http.post(
        "/api/generate",
        json={
            "model": DEFAULT_MODEL_FILE,
            "prompt": "1, 2, 3,",
            "raw": None,
            "stream": False,
            "options": {"num_predict": 2},
        },
    )
    assert generate.status_code == 200 and generate.json()["done"] is True, generate.text


def test_an_unknown_role_is_named_without_blaming_tool_calls(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.chat(model=DEFAULT_MODEL_FILE, messages=[{"role": "bot", "content": "Hi"}])
    assert refused.value.status_code == 400
    assert (
        refused.value.error
        == "Messages with role 'bot' are not supported; use system, developer, user, assistant, tool."
    )


def unload_with_keep_alive_zero(ollama_client: ollama.Client) -> None:
    """One reply with keep_alive 0, then wait for the idle watcher to unload the model after it."""
    ollama_client.chat(
        model=DEFAULT_MODEL_FILE,
        messages=[{"role": "user", "content": "Hi"}],
        options={"num_predict": 1},
        keep_alive=0,
    )
    deadline = time.monotonic() + 60
    while ollama_client.ps().models and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ollama_client.ps().models == []


def test_a_model_loaded_by_path_comes_back_after_keep_alive_unloads_it(
    ollama_client: ollama.Client, openai_client: openai.OpenAI, http: httpx.Client
) -> None:
    # Before: once unloaded (keep_alive 0, or --idle-unload), a model given to `serve --model` by path was
    # missing from /api/tags and /v1/models and every request for it was "does not exist" until a restart.
    unload_with_keep_alive_zero(ollama_client)
    assert [model.model for model in ollama_client.list().models] == [DEFAULT_MODEL_FILE]
    listed = http.get("/v1/models").json()["data"]
    assert [(model["id"], model["loaded"]) for model in listed] == [(DEFAULT_MODEL_FILE, False)]
    again = ollama_client.chat(
        model=DEFAULT_MODEL_FILE, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2}
    )
    assert again.message.content and again.load_duration and again.load_duration > 0  # loaded again
    assert [model.model for model in ollama_client.ps().models] == [DEFAULT_MODEL_FILE]


def test_the_readmes_default_model_comes_back_after_an_idle_unload(
    ollama_client: ollama.Client, openai_client: openai.OpenAI
) -> None:
    # README: model="default" means the loaded model, and "the next message ... loads it again" after an
    # idle unload. Before: 400 "No model is loaded" for "default" until someone named the model.
    unload_with_keep_alive_zero(ollama_client)
    reply = openai_client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.model == DEFAULT_MODEL_FILE and reply.choices[0].message.content
    # keep_alive is per request: the earlier 0 does not unload the model after this reply too.
    time.sleep(1.5)  # the idle watcher would have unloaded it within this
    assert [model.model for model in ollama_client.ps().models] == [DEFAULT_MODEL_FILE]
