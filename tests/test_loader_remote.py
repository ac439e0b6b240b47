"""The remote loader against a real OpenAI-compatible server (llama.cpp's, started here), plus unit tests of
the request mapping and server probing at the httpx seam."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loaders.remote import HONOURED, RemoteSettings, request_fields
from loaders.remote_server import (
    Describer,
    approximate_detokenize,
    approximate_tokenize,
    normalise_base_url,
    probe,
)
from tests.support.config import make_config
from tests.support.openai_server import OpenAIServer
from tests.support.servers import free_port
from webui.config import PROJECT_ROOT
from webui.core.engine import EngineError
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service

ALIAS = "smollm2"
PROMPT = "The three primary colors are"
# Greedy, with the penalties llama-cpp-python's server would otherwise apply (repeat_penalty 1.1) turned off.
GREEDY = GenerationParams(temperature=0.0, seed=7, max_new_tokens=24)
SERVER_GREEDY = {"temperature": 0.0, "seed": 7, "extra_body": {"repeat_penalty": 1.0}}


# -- unit tests: mapping and probing ------------------------------------------------------------------------


def test_base_url_is_accepted_with_or_without_v1() -> None:
    assert normalise_base_url("http://host:8000") == "http://host:8000/v1"
    assert normalise_base_url("http://host:8000/v1/") == "http://host:8000/v1"
    assert normalise_base_url("host:8000") == "http://host:8000/v1"
    assert normalise_base_url("https://proxy.example/openai/v2") == "https://proxy.example/openai/v2"
    with pytest.raises(ValueError, match="not an http"):
        normalise_base_url("ftp://host")


def test_api_key_is_never_shown_back(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RemoteSettings(base_url="http://h:1", api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in str(settings.model_dump(mode="json"))
    # The masked value a saved settings file or the page shows back means "no key": the environment's applies.
    masked = RemoteSettings.model_validate(settings.model_dump(mode="json"))
    assert masked.api_key.get_secret_value() == ""
    with pytest.raises(ValueError, match="extra"):
        RemoteSettings.model_validate({"base_url": "http://h:1", "n_ctx": 5})


def test_params_map_onto_the_request() -> None:
    params = GenerationParams(
        temperature=0.3,
        top_p=0.9,
        top_k=20,
        min_p=0.1,
        seed=5,
        stop=["END"],
        presence_penalty=0.5,
        logit_bias={42: -100.0},
        repetition_penalty=1.2,
        dry_multiplier=0.8,
        ban_eos_token=True,
    )
    standard, extra = request_fields(params, send_extras=True)
    assert standard == {
        "temperature": 0.3,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.0,
        "seed": 5,
        "stop": ["END"],
        "logit_bias": {"42": -100.0},
    }
    assert extra["top_k"] == 20 and extra["min_p"] == 0.1
    assert extra["repetition_penalty"] == extra["repeat_penalty"] == 1.2
    assert extra["dry_multiplier"] == 0.8 and extra["ignore_eos"] is True
    assert "mirostat" not in extra and "grammar" not in extra  # off samplers are not sent
    assert request_fields(params, send_extras=False)[1] == {}
    assert "seed" not in request_fields(GenerationParams(seed=-1), send_extras=True)[0]
    assert "temperature" in HONOURED and "add_bos_token" not in HONOURED


def test_approximate_tokens_round_trip_and_over_count() -> None:
    text = "Grüße, 世界! A plain English sentence of some length."
    tokens = approximate_tokenize(text)
    assert approximate_detokenize(tokens) == text
    assert len(tokens) >= len(text.encode()) // 4  # never fewer than a real tokenizer would give


def _mock_client(routes: dict[tuple[str, str], httpx.Response]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        return routes.get(
            (request.method, request.url.path), httpx.Response(404, json={"detail": "Not Found"})
        )

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_probe_reads_vllm_context_and_tokenizer() -> None:
    http = _mock_client(
        {
            ("GET", "/v1/models"): httpx.Response(
                200, json={"data": [{"id": "qwen", "max_model_len": 32768}]}
            ),
            ("POST", "/tokenize"): httpx.Response(
                200, json={"tokens": [1], "count": 1, "max_model_len": 32768}
            ),
        }
    )
    settings = RemoteSettings(base_url="http://vllm:8000")
    facts = probe(http, settings, "", Describer(settings.base_url, "", 5))
    assert (facts.model, facts.context_length, facts.route and facts.route.name) == ("qwen", 32768, "vLLM")
    assert probe(http, settings, "", Describer(settings.base_url, "", 5), hint="other").model == "qwen"


def test_probe_reads_llama_cpp_props() -> None:
    http = _mock_client(
        {
            ("GET", "/v1/models"): httpx.Response(200, json={"data": [{"id": "m.gguf"}]}),
            ("GET", "/props"): httpx.Response(
                200,
                json={
                    "default_generation_settings": {"n_ctx": 8192},
                    "chat_template": "{{ x }}",
                    "bos_token": "<s>",
                },
            ),
            ("POST", "/tokenize"): httpx.Response(200, json={"tokens": [1, 2]}),
        }
    )
    settings = RemoteSettings(base_url="http://llama:8080/v1")
    facts = probe(http, settings, "m.gguf", Describer(settings.base_url, "", 5))
    assert facts.context_length == 8192 and facts.chat_template == "{{ x }}" and facts.bos_token == "<s>"
    assert facts.route is not None and facts.route.name == "llama.cpp"


def test_probe_without_tokenizer_falls_back_and_names_missing_models() -> None:
    http = _mock_client(
        {("GET", "/v1/models"): httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]})}
    )
    settings = RemoteSettings(base_url="http://tgi:80")
    describe = Describer(settings.base_url, "", 5)
    facts = probe(http, settings, "", describe, hint="b")
    assert facts.route is None and facts.context_length == 4096 and facts.model == "b"
    with pytest.raises(Exception, match=r"has no model 'c'\. It serves: a, b"):
        probe(http, settings, "c", describe)


def test_error_messages_name_the_server_never_the_key() -> None:
    describe = Describer("http://user:pw@host:9/v1", "sk-XYZ", 5)
    error = describe.status(401, "Incorrect API key provided: sk-XYZ", "m")
    assert "http://host:9/v1" in str(error) and "sk-XYZ" not in str(error) and "pw" not in str(error)
    assert "sk-XYZ" not in str(describe.status(500, "bad key sk-XYZ", "m"))


# -- the real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    log = tmp_path_factory.mktemp("openai-server") / "server.log"
    running = OpenAIServer(default_model_path, log, alias=ALIAS).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A Service with an empty models folder: the remote model is not a file."""
    from webui.app import build_service

    built = build_service(make_config(tmp_path_factory.mktemp("remote") / "user_data"))
    yield built
    built.close()


def _load(service: Service, server: OpenAIServer, **settings: Any) -> None:
    root = server.base_url.removesuffix("/v1")  # the /v1 is added by the loader
    service.load_model("", "remote", {"base_url": root, **settings})


def _server_completion(server: OpenAIServer, prompt: str, max_tokens: int, **extra: Any) -> str:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    answer = client.completions.create(
        model=ALIAS, prompt=prompt, max_tokens=max_tokens, **SERVER_GREEDY, **extra
    )
    return answer.choices[0].text


@pytest.mark.slow
def test_completion_streams_the_servers_greedy_answer(server: OpenAIServer, service: Service) -> None:
    _load(service, server)
    state = service.engine.require_model()
    assert (state.entry.name, state.entry.kind, state.loader) == (ALIAS, "remote", "remote")
    assert state.capabilities.can_tokenize and not state.capabilities.needs_files
    assert ALIAS in [entry.name for entry in service.models()]

    job = service.stream_completion(PROMPT, GREEDY)
    chunks = [chunk for chunk in job if chunk.text]
    assert len(chunks) > 3  # it streamed, token by token
    assert "".join(c.text for c in chunks) == _server_completion(server, PROMPT, GREEDY.max_new_tokens)
    assert job.stats is not None and job.stats.new_tokens == GREEDY.max_new_tokens
    assert job.stats.prompt_tokens == len(service.engine.state.model.tokenize(PROMPT))  # type: ignore[union-attr]
    assert job.finish_reason == "length"


@pytest.mark.slow
def test_stop_strings_end_the_reply_before_them(server: OpenAIServer, service: Service) -> None:
    _load(service, server)
    full = _server_completion(server, PROMPT, GREEDY.max_new_tokens)
    words = full.split()
    assert len(words) > 3
    stop = " " + words[2]
    text = service.stream_completion(PROMPT, GREEDY.overlay({"stop": [stop]})).text()
    assert text == full[: full.index(stop)]


@pytest.mark.slow
def test_cancel_stops_mid_stream_and_the_server_stays_usable(server: OpenAIServer, service: Service) -> None:
    _load(service, server)
    job = service.stream_completion(
        "Once upon a time, in a faraway kingdom,", GREEDY.overlay({"max_new_tokens": 400})
    )
    received = 0
    for chunk in job:
        received += bool(chunk.text)
        if received == 3:
            job.cancel()
    assert job.finish_reason == "cancelled"
    assert job.stats is not None and job.stats.new_tokens < 50
    assert service.stream_completion(PROMPT, GREEDY.overlay({"max_new_tokens": 4})).text()


@pytest.mark.slow
def test_tokenize_round_trips_through_the_servers_tokenizer(
    server: OpenAIServer, service: Service, default_model_path: Path
) -> None:
    import llama_cpp

    _load(service, server)
    model = service.engine.require_model().model
    text = "Hello world, how are you today?"
    tokens = model.tokenize(text)
    vocab = llama_cpp.Llama(str(default_model_path), vocab_only=True, verbose=False)
    assert tokens == vocab.tokenize(text.encode(), add_bos=False, special=True)  # the model's own ids
    assert model.detokenize(tokens) == text
    assert service.engine.count_tokens(text) == len(tokens)


@pytest.mark.slow
def test_chat_endpoint_sends_the_conversation(server: OpenAIServer, service: Service) -> None:
    import openai

    _load(service, server, endpoint="chat")
    history = [ChatMessage("user", "What is the capital of France?")]
    settings = ChatSettings(mode="instruct", system_message="Answer in one sentence.")
    stream = service.stream_chat_reply(history, settings, GREEDY)
    assert stream.prompt.messages == (ChatMessage("system", "Answer in one sentence."), history[0])
    reply = "".join(chunk.text for chunk in stream)
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    expected = client.chat.completions.create(
        model=ALIAS,
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": history[0].content},
        ],
        max_tokens=GREEDY.max_new_tokens,
        **SERVER_GREEDY,
    )
    assert reply and reply == (expected.choices[0].message.content or "").strip()
    # Raw text (Default / Notebook) still goes through the completions endpoint.
    assert service.stream_completion(PROMPT, GREEDY).text() == _server_completion(server, PROMPT, 24)


@pytest.mark.slow
def test_chat_mode_maps_the_character_to_roles(server: OpenAIServer, service: Service) -> None:
    _load(service, server, endpoint="chat")
    history = [
        ChatMessage("user", "Hi!"),
        ChatMessage("assistant", "Hello."),
        ChatMessage("user", "Who are you?"),
    ]
    settings = ChatSettings(
        mode="chat", character_name="Ada", context="{{char}} is a pirate talking to {{user}}."
    )
    stream = service.stream_chat_reply(history, settings, GREEDY.overlay({"max_new_tokens": 8}))
    assert stream.prompt.messages == (ChatMessage("system", "Ada is a pirate talking to You."), *history)
    assert "".join(chunk.text for chunk in stream)
    with pytest.raises(EngineError, match="Impersonate"):
        service.stream_chat_reply(history, settings, GREEDY, impersonate=True)


@pytest.mark.slow
def test_clear_errors_for_a_closed_port_and_a_wrong_model(server: OpenAIServer, service: Service) -> None:
    _load(service, server)
    port = free_port()
    with pytest.raises(EngineError, match=rf"Cannot reach the server at http://127\.0\.0\.1:{port}/v1"):
        service.load_model("", "remote", {"base_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(EngineError, match=rf"has no model 'nope'\. It serves: {ALIAS}"):
        service.load_model("", "remote", {"base_url": server.base_url, "model": "nope"})
    # A name the server does not serve (e.g. a file picked in the page's list) picks its first model.
    service.load_model("SmolLM2-135M-Instruct.Q4_1.gguf", "remote", {"base_url": server.base_url})
    assert service.engine.require_model().entry.name == ALIAS  # the loaded model stays loaded


@pytest.mark.slow
def test_api_key_is_sent_and_a_wrong_one_is_named_but_not_shown(
    default_model_path: Path, tmp_path: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarded = OpenAIServer(default_model_path, tmp_path / "log", alias=ALIAS, api_key="right-key").start()
    try:
        with pytest.raises(EngineError, match="refused the API key") as caught:
            service.load_model("", "remote", {"base_url": guarded.base_url, "api_key": "wrong-key"})
        assert "wrong-key" not in str(caught.value)
        monkeypatch.setenv("OPENAI_API_KEY", "right-key")
        service.load_model("", "remote", {"base_url": guarded.base_url})
        assert service.stream_completion(PROMPT, GREEDY.overlay({"max_new_tokens": 4})).text()
    finally:
        guarded.stop()


@pytest.mark.slow
def test_cli_generate_streams_from_the_server(server: OpenAIServer, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "webui",
        "generate",
        "--loader",
        "remote",
        "--model",
        ALIAS,
        "--setting",
        f"base_url={server.base_url}",
        "--prompt",
        PROMPT,
        "--stream",
        "--temperature",
        "0",
        "--seed",
        "7",
        "--max-new-tokens",
        "24",
        "--user-data-dir",
        str(tmp_path / "user_data"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == _server_completion(server, PROMPT, 24)

    # Without --model: the first model the server lists (no model file is looked for).
    no_model = [arg for arg in command if arg not in ("--model", ALIAS, "--stream")]
    done = subprocess.run(no_model, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == _server_completion(server, PROMPT, 24)
