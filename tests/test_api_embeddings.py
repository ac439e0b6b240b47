"""Embeddings through a real `webui serve` with the clients people use: the `openai` client (base64 by
default, and float), the `ollama` client's embed, LangChain's OpenAIEmbeddings, Ollama's older /api/embeddings,
and the default SmolLM2 GGUF as an embedding model through llama.cpp."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.support.embedding_models import MINILM_DIMENSIONS, MINILM_NAME, minilm_folder, reference_embeddings
from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "Quarterly revenue grew by four percent.", "Où est la gare ?"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return minilm_folder()


@pytest.fixture(scope="module")
def reference(minilm: Path) -> list[list[float]]:
    return reference_embeddings(minilm, TEXTS)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path, minilm: Path
) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("api-embeddings"),
        model=default_model_path,
        extra_args=["--embedding-model", MINILM_NAME],
    )
    (server.config.models_dir / MINILM_NAME).symlink_to(minilm, target_is_directory=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def distance(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def test_openai_client_default_base64_and_float_equal_the_model(
    client: openai.OpenAI, reference: list[list[float]]
) -> None:
    default = client.embeddings.create(model=MINILM_NAME, input=TEXTS)  # the client asks for base64
    floats = client.embeddings.create(model=MINILM_NAME, input=TEXTS, encoding_format="float")
    for result in (default, floats):
        assert result.model == MINILM_NAME
        assert [item.index for item in result.data] == [0, 1, 2]
        assert all(len(item.embedding) == MINILM_DIMENSIONS for item in result.data)
        for item, want in zip(result.data, reference, strict=True):
            assert distance(item.embedding, want) < 1e-5
        assert result.usage.prompt_tokens == result.usage.total_tokens > 3 * len(TEXTS)
    one = client.embeddings.create(model=MINILM_NAME, input=TEXTS[0])
    assert len(one.data) == 1 and distance(one.data[0].embedding, reference[0]) < 1e-5


def test_base64_is_little_endian_float32_on_the_wire(
    http: httpx.Client, reference: list[list[float]]
) -> None:
    body = http.post("/v1/embeddings", json={"input": TEXTS[1], "encoding_format": "base64"}).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert len(raw) == 4 * MINILM_DIMENSIONS
    assert distance(list(struct.unpack(f"<{MINILM_DIMENSIONS}f", raw)), reference[1]) < 1e-5
    assert body["model"] == MINILM_NAME  # no model named: the --embedding-model one


def test_ollama_embed_gives_unit_vectors_equal_to_the_model(
    server: Server, reference: list[list[float]]
) -> None:
    client = ollama.Client(host=server.url.rstrip("/"))
    result = client.embed(model=f"{MINILM_NAME}:latest", input=TEXTS)
    assert len(result.embeddings) == len(TEXTS)
    for got, want in zip(result.embeddings, reference, strict=True):
        assert len(got) == MINILM_DIMENSIONS and abs(norm(list(got)) - 1) < 1e-5
        assert distance(list(got), want) < 1e-5
    assert result.prompt_eval_count and result.prompt_eval_count > 3 * len(TEXTS)
    assert result.total_duration and result.total_duration > 0
    long = "word " * 600
    cut = client.embed(model=MINILM_NAME, input=long)  # truncate defaults to true: cut to the context
    assert cut.prompt_eval_count == 256
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model=MINILM_NAME, input=long, truncate=False)
    assert refused.value.status_code == 400 and "more than the 256" in refused.value.error
    short = client.embed(model=MINILM_NAME, input=TEXTS[0], dimensions=64).embeddings[0]
    assert len(short) == 64 and abs(norm(list(short)) - 1) < 1e-5


def test_keep_alive_zero_unloads_the_embedding_model(http: httpx.Client) -> None:
    first = http.post("/api/embed", json={"model": MINILM_NAME, "input": "x", "keep_alive": 0}).json()
    assert len(first["embeddings"][0]) == MINILM_DIMENSIONS
    again = http.post("/api/embed", json={"model": MINILM_NAME, "input": "x"}).json()
    assert again["load_duration"] > 0  # it was unloaded: this request loaded it again
    assert http.post("/api/embed", json={"model": MINILM_NAME, "input": "x"}).json()["load_duration"] == 0
    bad = http.post("/api/embed", json={"model": MINILM_NAME, "input": "x", "keep_alive": "soon"})
    assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]


def test_the_older_api_embeddings(http: httpx.Client, reference: list[list[float]]) -> None:
    body = http.post("/api/embeddings", json={"model": MINILM_NAME, "prompt": TEXTS[2]}).json()
    assert distance(body["embedding"], reference[2]) < 1e-5
    assert http.post("/api/embeddings", json={"model": MINILM_NAME, "prompt": ""}).json() == {"embedding": []}


def test_langchain_openai_embeddings(server: Server, reference: list[list[float]]) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MINILM_NAME,
        base_url=f"{server.url}v1",
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents(TEXTS[:2])
    for got, want in zip(documents, reference[:2], strict=True):
        assert distance(got, want) < 1e-5
    assert distance(embeddings.embed_query(TEXTS[2]), reference[2]) < 1e-5


def test_bad_requests_are_400_with_clear_messages(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError) as dimensions:
        client.embeddings.create(model=MINILM_NAME, input="x", dimensions=128)
    assert "384-dimensional" in dimensions.value.message
    assert client.embeddings.create(model=MINILM_NAME, input="x", dimensions=384).data
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        client.embeddings.create(model=MINILM_NAME, input=[])
    with pytest.raises(openai.BadRequestError, match="Token ids must be between"):
        client.embeddings.create(model=MINILM_NAME, input=[[5, 10**9]])
    with pytest.raises(openai.NotFoundError, match="'nope' does not exist"):
        client.embeddings.create(model="nope", input="x")
    mixed = http.post("/v1/embeddings", json={"model": MINILM_NAME, "input": ["a", 3]})
    assert mixed.status_code == 400 and mixed.json()["error"]["message"]
    missing = http.post("/api/embed", json={"input": "x"})
    assert missing.status_code == 400 and "model" in missing.json()["error"]
    # An embedding model asked to chat: a 400 that says where it belongs, not a failed load.
    with pytest.raises(openai.BadRequestError, match="is an embedding model"):
        client.chat.completions.create(model=MINILM_NAME, messages=[{"role": "user", "content": "hi"}])


def test_token_ids_embed_like_their_text(client: openai.OpenAI, minilm: Path) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(minilm))(TEXTS[0], add_special_tokens=False)["input_ids"]
    by_ids = client.embeddings.create(model=MINILM_NAME, input=[ids], encoding_format="float").data[0]
    by_text = client.embeddings.create(model=MINILM_NAME, input=TEXTS[0], encoding_format="float").data[0]
    assert distance(by_ids.embedding, by_text.embedding) < 1e-6


def test_a_gguf_chat_model_embeds_with_its_hidden_size(client: openai.OpenAI, server: Server) -> None:
    result = client.embeddings.create(model=DEFAULT_MODEL_FILE, input=["hello world", "good night"])
    assert result.model == DEFAULT_MODEL_FILE
    assert [len(item.embedding) for item in result.data] == [576, 576]  # SmolLM2-135M's hidden size
    assert all(abs(norm(item.embedding) - 1) < 1e-5 for item in result.data)
    embed = ollama.Client(host=server.url.rstrip("/")).embed(model=DEFAULT_MODEL_FILE, input="hello world")
    assert distance(list(embed.embeddings[0]), result.data[0].embedding) < 1e-5
    # The chat model is still there beside it.
    reply = client.completions.create(model=DEFAULT_MODEL_FILE, prompt="Hello", max_tokens=2)
    assert reply.choices[0].text is not None


def test_loading_another_embedding_model_needs_an_admin_key(
    tmp_path: Path, default_model_path: Path, minilm: Path
) -> None:
    user, admin = "user-key-embeddings", "admin-key-embeddings"
    server = Server(
        tmp_path,
        extra_args=["--api-key", user, "--admin-key", admin, "--open-page", "--embedding-model", MINILM_NAME],
    )
    (server.config.models_dir / MINILM_NAME).symlink_to(minilm, target_is_directory=True)
    (server.config.models_dir / DEFAULT_MODEL_FILE).symlink_to(default_model_path)
    with server.running():
        as_user = openai.OpenAI(base_url=f"{server.url}v1", api_key=user, max_retries=0)
        assert len(as_user.embeddings.create(model=MINILM_NAME, input="x").data[0].embedding) == 384
        assert as_user.embeddings.create(model="default", input="x").model == MINILM_NAME
        with pytest.raises(openai.PermissionDeniedError, match="needs an admin key"):
            as_user.embeddings.create(model=DEFAULT_MODEL_FILE, input="x")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}v1", api_key="wrong", max_retries=0).embeddings.create(
                model=MINILM_NAME, input="x"
            )
        as_admin = openai.OpenAI(base_url=f"{server.url}v1", api_key=admin, max_retries=0)
        assert len(as_admin.embeddings.create(model=DEFAULT_MODEL_FILE, input="x").data[0].embedding) == 576
        # Now loaded, the GGUF serves the user too; the default model loads again for anyone.
        assert as_user.embeddings.create(model=DEFAULT_MODEL_FILE, input="y").model == DEFAULT_MODEL_FILE
        assert as_user.embeddings.create(model=MINILM_NAME, input="y").model == MINILM_NAME
