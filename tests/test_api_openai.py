"""The OpenAI-compatible API through clients no one here wrote (openai, langchain-openai) against a real
`webui serve` with the default model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_file(gemma_model_path: Path) -> Path:
    return gemma_model_path


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path, gemma_file: Path
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-openai")
    server = Server(root, model=default_model_path)
    (server.config.models_dir / gemma_file.name).symlink_to(gemma_file)  # a second model to switch to
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(default_model_path: Path) -> Any:
    """The model's own tokenizer, loaded apart from the server, to check the usage counts."""
    import llama_cpp

    return llama_cpp.Llama(str(default_model_path), vocab_only=True, verbose=False)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.tokenize(text.encode(), add_bos=True, special=True))


def test_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert DEFAULT_MODEL_FILE in ids
    assert client.models.retrieve(DEFAULT_MODEL_FILE).id == DEFAULT_MODEL_FILE


def test_completion_counts_the_tokens_it_read_and_wrote(client: openai.OpenAI, tokenizer: Any) -> None:
    prompt = "The capital of France is"
    result = client.completions.create(
        model=DEFAULT_MODEL_FILE,
        prompt=prompt,
        max_tokens=5,
        temperature=0,
        extra_body={"ban_eos_token": True},
    )
    assert result.choices[0].text.strip()
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert result.usage.prompt_tokens == count_tokens(tokenizer, prompt)
    assert result.usage.completion_tokens == 5
    assert result.usage.total_tokens == result.usage.prompt_tokens + 5


def test_chat_streamed_and_not_gives_the_same_greedy_reply(
    client: openai.OpenAI, server: Server, tokenizer: Any
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Name three colours."}]
    settings: dict[str, Any] = {"max_tokens": 8, "temperature": 0, "extra_body": {"ban_eos_token": True}}
    whole = client.chat.completions.create(model=DEFAULT_MODEL_FILE, messages=messages, **settings)
    reply = whole.choices[0].message.content or ""
    assert reply and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 8
    # The prompt the server built (the same one /v1/internal/chat-prompt renders), counted by the tokenizer.
    rendered = httpx.post(f"{server.url}v1/internal/chat-prompt", json={"messages": messages}).json()[
        "prompt"
    ]
    assert whole.usage.prompt_tokens == count_tokens(tokenizer, rendered)

    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **settings,
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2  # streamed as it was generated, not in one piece
    assert "".join(deltas) == reply
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, 8)


def test_a_second_chat_turn_reports_the_history_it_took_from_the_cache(client: openai.OpenAI) -> None:
    """usage.prompt_tokens_details.cached_tokens, as OpenAI's own API reports it: the first turn's prompt (its
    first token excepted at most) is not evaluated again for the second; a new chat reuses nothing."""
    settings: dict[str, Any] = {"max_tokens": 6, "temperature": 0}
    messages: list[Any] = [
        {"role": "user", "content": "Tell me about lighthouses and the people who keep them."}
    ]
    first = client.chat.completions.create(model=DEFAULT_MODEL_FILE, messages=messages, **settings)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And the storms?"},
    ]
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **settings,
    )
    second = list(stream)[-1].usage
    assert first.usage is not None and second is not None
    assert second.prompt_tokens_details is not None
    cached = second.prompt_tokens_details.cached_tokens or 0
    assert first.usage.prompt_tokens - 1 <= cached < second.prompt_tokens
    fresh = client.completions.create(model=DEFAULT_MODEL_FILE, prompt="Zebra stripes are", **settings)
    assert fresh.usage is not None and fresh.usage.prompt_tokens_details is not None
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0


def test_sampler_fields_by_name_and_several_choices(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Say a word."}],
        max_tokens=3,
        n=2,
        seed=7,
        extra_body={"min_p": 0.2, "top_k": 10, "repetition_penalty": 1.1, "ban_eos_token": True},
    )
    assert [choice.index for choice in result.choices] == [0, 1]
    assert all(choice.message.content for choice in result.choices)
    assert result.usage is not None and result.usage.completion_tokens == 6


def test_json_schema_replies_follow_the_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    result = client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
        messages=[{"role": "user", "content": "Pick a colour. Answer in JSON."}],
        max_tokens=30,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
    )
    assert result.choices[0].finish_reason == "stop"
    assert json.loads(result.choices[0].message.content or "")["colour"] in ("red", "green", "blue")


def test_errors_reach_the_client_as_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="top_k"):
        client.completions.create(model=DEFAULT_MODEL_FILE, prompt="x", extra_body={"top_k": -5})
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(
            model=DEFAULT_MODEL_FILE, messages=[{"role": "user", "content": "x"}], top_logprobs=50
        )


def test_langchain_chat_openai_invokes_and_streams(server: Server) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{server.url}v1",
        api_key="x",
        model=DEFAULT_MODEL_FILE,
        max_tokens=6,
        temperature=0,  # type: ignore[arg-type]
    )
    answer = chat.invoke("Hello!")
    assert isinstance(answer.content, str) and answer.content
    pieces = [chunk.content for chunk in chat.stream("Hello!") if chunk.content]
    assert len(pieces) >= 2
    assert "".join(str(p) for p in pieces) == answer.content


def test_a_client_that_disconnects_mid_stream_frees_the_engine(server: Server, client: openai.OpenAI) -> None:
    body = {
        "model": DEFAULT_MODEL_FILE,
        "prompt": "Once upon a time",
        "max_tokens": 1500,
        "stream": True,
        "ban_eos_token": True,
    }
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{server.url}v1/completions", json=body) as reply,
    ):
        started = time.monotonic()
        events = 0
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                events += 1
            if events == 20:
                break
        rate = events / (time.monotonic() - started)  # tokens per second on this machine, now
    # The abandoned generation had ~1480 tokens to go; had it kept the engine, the next request would wait
    # for all of them.
    begun = time.monotonic()
    result = client.completions.create(model=DEFAULT_MODEL_FILE, prompt="Hi", max_tokens=2)
    waited = time.monotonic() - begun
    assert result.choices[0].text is not None
    assert waited < (1480 / rate) / 4


def test_a_request_naming_another_model_loads_it(
    client: openai.OpenAI, server: Server, gemma_file: Path
) -> None:
    # Last in this module: it leaves the Gemma model loaded, beside the page's model (both fit the budget).
    result = client.completions.create(model=gemma_file.stem, prompt="Once upon a time", max_tokens=3)
    assert result.model == gemma_file.name
    assert result.choices[0].text
    health = httpx.get(f"{server.url}health").json()
    assert health["model"] == DEFAULT_MODEL_FILE  # the page keeps its model
    loaded = [model.id for model in client.models.list() if getattr(model, "loaded", False)]
    assert sorted(loaded) == sorted([gemma_file.name, DEFAULT_MODEL_FILE])


def test_eight_concurrent_streams_get_their_own_unmixed_text(client: openai.OpenAI, server: Server) -> None:
    import asyncio

    prompts = ["Count: one, two,", "Colours: red, green,", "Days: Monday, Tuesday,", "Fruit: apple, pear,"]
    settings: dict[str, Any] = {"max_tokens": 5, "temperature": 0, "extra_body": {"ban_eos_token": True}}
    expected = {
        p: client.completions.create(model=DEFAULT_MODEL_FILE, prompt=p, **settings).choices[0].text
        for p in prompts
    }

    async def one(aclient: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await aclient.completions.create(
            model=DEFAULT_MODEL_FILE, prompt=prompt, stream=True, **settings
        )
        return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    async def everyone() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, p) for p in prompts * 2))

    assert asyncio.run(everyone()) == [expected[p] for p in prompts * 2]
