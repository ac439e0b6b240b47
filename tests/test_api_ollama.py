"""The Ollama-compatible API through the official `ollama` client against a real `webui serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("api-ollama"), model=default_model_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url.rstrip("/"))


def test_list_version_and_running_models(client: ollama.Client) -> None:
    names = [model.model for model in client.list().models]
    assert names == [DEFAULT_MODEL_FILE]
    details = client.list().models[0].details
    assert details is not None and details.format == "gguf" and details.quantization_level == "Q4_1"
    running = client.ps().models
    assert [model.model for model in running] == [DEFAULT_MODEL_FILE]
    assert running[0].context_length == 2048


def test_chat_streams_and_ends_with_counts(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model=DEFAULT_MODEL_FILE,
            messages=[{"role": "user", "content": "Name a fruit."}],
            stream=True,
            options={"num_predict": 6, "temperature": 0, "ban_eos_token": True},
        )
    )
    texts = [part.message.content for part in parts if not part.done and part.message.content]
    assert len(texts) >= 2
    final = parts[-1]
    assert final.done and final.done_reason == "length"
    assert final.eval_count == 6
    assert final.prompt_eval_count and final.prompt_eval_count > 0
    assert final.total_duration and final.eval_duration and final.total_duration >= final.eval_duration


def test_generate_with_and_without_the_template(client: ollama.Client) -> None:
    templated = client.generate(
        model=f"{Path(DEFAULT_MODEL_FILE).stem}:latest",  # an Ollama-style tag on the file stem
        prompt="Why is the sky blue?",
        system="Answer in one sentence.",
        options={"num_predict": 5, "ban_eos_token": True},
    )
    assert templated.response and templated.done_reason == "length" and templated.eval_count == 5
    raw = client.generate(
        model=DEFAULT_MODEL_FILE,
        prompt="The capital of France is",
        raw=True,
        options={"num_predict": 3, "temperature": 0, "ban_eos_token": True},
    )
    # Raw: the prompt goes to the model as is, so it is shorter than the templated one.
    assert raw.prompt_eval_count is not None and templated.prompt_eval_count is not None
    assert raw.prompt_eval_count < templated.prompt_eval_count
    assert raw.eval_count == 3


def test_json_format_gives_json(client: ollama.Client) -> None:
    result = client.generate(
        model=DEFAULT_MODEL_FILE,
        prompt="Describe a cat as JSON with a name.",
        format={
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}},
            "required": ["name"],
        },
        options={"num_predict": 40},
    )
    assert isinstance(json.loads(result.response)["name"], str)


def test_show_describes_the_model(client: ollama.Client) -> None:
    shown = client.show(DEFAULT_MODEL_FILE)
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.template and "<|im_start|>" in shown.template  # the chat template from the GGUF metadata
    assert shown.parameters and "temperature" in shown.parameters
    assert shown.modelfile and "FROM " in shown.modelfile
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"


def test_errors_are_ollama_response_errors(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError, match="temprature"):
        client.generate(model=DEFAULT_MODEL_FILE, prompt="x", options={"temprature": 0.1})  # type: ignore[dict-item]


def test_langchain_chat_ollama_invokes_and_streams(server: Server, client: ollama.Client) -> None:
    """LangChain's Ollama class, as tools written for Ollama use it, gets the same greedy reply as the client."""
    from langchain_ollama import ChatOllama

    options = {"temperature": 0, "num_predict": 16}
    question = [{"role": "user", "content": "Name a colour."}]
    expected = client.chat(model=DEFAULT_MODEL_FILE, messages=question, options=options).message.content
    chat = ChatOllama(
        base_url=server.url.rstrip("/"), model=DEFAULT_MODEL_FILE, temperature=0, num_predict=16
    )
    assert chat.invoke("Name a colour.").content == expected
    pieces = [chunk.content for chunk in chat.stream("Name a colour.")]
    assert len([p for p in pieces if p]) >= 2, "the reply did not stream"
    assert "".join(str(p) for p in pieces) == expected
