"""Log-probabilities from the Transformers loader, through the real `webui serve` and the official clients
(openai, ollama), compared with a log-softmax of the tiny model's own logits computed with transformers alone.

Greedy requests (temperature 0) let the reference follow the same tokens: at each step it takes the most
likely token, as the server's greedy sampler does, and checks the reported token, its logprob and the top
alternatives against the logits of that step.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.support.servers import Server

pytestmark = pytest.mark.slow

MODEL = "tiny-llama"
STORY = "Once upon a time, the robot"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# Greedy, and nothing between the logits and the choice but the argmax.
GREEDY: dict[str, Any] = {"temperature": 0, "repetition_penalty": 1.0, "dry_multiplier": 0.0}
TOLERANCE = 1e-4


class Reference:
    """The tiny model in plain transformers: token ids of a prompt, and log-softmax rows of a sequence."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt as the loader sends it: BOS first (once), then the text's tokens."""
        ids = [int(t) for t in self.tokenizer.encode(prompt, add_special_tokens=False)]
        bos = int(self.tokenizer.bos_token_id)
        return ids if ids and ids[0] == bos else [bos, *ids]

    def rows(self, ids: Sequence[int]) -> Any:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([list(ids)])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def token_bytes(self, token_id: int) -> bytes:
        from tokenizers import decoders

        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        return str(decoders.ByteLevel().decode([piece])).encode("utf-8", errors="surrogateescape")

    def greedy(self, prompt_ids: list[int], steps: int) -> list[tuple[int, Any]]:
        """(chosen token, its step's log-softmax row) for ``steps`` greedy steps after the prompt."""
        ids = list(prompt_ids)
        out = []
        for _ in range(steps):
            row = self.rows(ids)[-1]
            token = int(row.argmax())
            out.append((token, row))
            ids.append(token)
        return out


def check_tokens(reference: Reference, prompt_ids: list[int], entries: Sequence[Any], top: int) -> None:
    """Each reported ``{token, logprob, bytes, top_logprobs}`` against the reference's greedy steps."""
    assert entries
    for (token, row), entry in zip(reference.greedy(prompt_ids, len(entries)), entries, strict=True):
        assert bytes(entry["bytes"]) == reference.token_bytes(token)
        assert entry["token"] == reference.token_bytes(token).decode("utf-8", errors="replace")
        assert abs(entry["logprob"] - float(row[token])) < TOLERANCE
        values, indices = row.topk(top)
        tops = entry["top_logprobs"]
        assert [bytes(t["bytes"]) for t in tops] == [reference.token_bytes(int(i)) for i in indices]
        assert all(abs(t["logprob"] - float(v)) < TOLERANCE for t, v in zip(tops, values, strict=True))


@pytest.fixture(scope="module")
def reference(tiny_llama_dir: Path) -> Reference:
    return Reference(tiny_llama_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("logprobs-transformers")
    server = Server(root)
    shutil.copytree(tiny_llama_dir, server.config.models_dir / MODEL)
    server.start()
    # The first request naming the model loads it (by the Transformers loader: a model folder).
    body = {"model": MODEL, "prompt": "a", "max_tokens": 1}
    httpx.post(f"{server.url}v1/completions", json=body, timeout=300).raise_for_status()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)


def chat_prompt(server: Server) -> str:
    """The prompt the server renders for MESSAGES (its own endpoint says)."""
    response = httpx.post(f"{server.url}v1/internal/chat-prompt", json={"messages": MESSAGES}, timeout=60)
    response.raise_for_status()
    return str(response.json()["prompt"])


def test_chat_logprobs_are_the_models_own_streamed_or_not(
    client: openai.OpenAI, server: Server, reference: Reference
) -> None:
    prompt_ids = reference.prompt_ids(chat_prompt(server))
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, logprobs=True, top_logprobs=3, extra_body=GREEDY
    )
    choice = whole.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = [entry.model_dump() for entry in choice.logprobs.content]
    check_tokens(reference, prompt_ids, entries, 3)
    assert whole.usage is not None and len(entries) == whole.usage.completion_tokens

    streamed: list[dict[str, Any]] = []
    text = ""
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
        stream=True,
        extra_body=GREEDY,
    ):
        for streamed_choice in chunk.choices:
            text += streamed_choice.delta.content or ""
            if streamed_choice.logprobs is not None and streamed_choice.logprobs.content:
                streamed += [entry.model_dump() for entry in streamed_choice.logprobs.content]
    assert text == choice.message.content
    # The same tokens (a reused cache may move the last digits of a logprob).
    check_tokens(reference, prompt_ids, streamed, 3)
    assert [entry["token"] for entry in streamed] == [entry["token"] for entry in entries]

    # The client's stream helper puts the chunks' logprobs together again.
    with client.chat.completions.stream(
        model=MODEL, messages=MESSAGES, max_tokens=12, logprobs=True, top_logprobs=3, extra_body=GREEDY
    ) as helper:
        final = helper.get_final_completion()
    assembled = final.choices[0].logprobs
    assert assembled is not None and assembled.content is not None
    assert [entry.token for entry in assembled.content] == [entry["token"] for entry in entries]


def test_chat_without_logprobs_has_none(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, extra_body=GREEDY)
    assert whole.choices[0].logprobs is None


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI, reference: Reference) -> None:
    whole = client.completions.create(model=MODEL, prompt=STORY, max_tokens=10, logprobs=2, extra_body=GREEDY)
    choice = whole.choices[0]
    assert choice.logprobs is not None
    logprobs = choice.logprobs
    assert logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs and logprobs.text_offset
    steps = reference.greedy(reference.prompt_ids(STORY), len(logprobs.tokens))
    for index, (token, row) in enumerate(steps):
        assert logprobs.tokens[index] == reference.token_bytes(token).decode("utf-8", errors="replace")
        assert abs(logprobs.token_logprobs[index] - float(row[token])) < TOLERANCE  # type: ignore[operator]
        tops = logprobs.top_logprobs[index]
        assert logprobs.tokens[index] in tops and len(tops) <= 3  # the 2 most likely, and the chosen one
        assert choice.text[logprobs.text_offset[index] :].startswith(logprobs.tokens[index])
    assert "".join(logprobs.tokens) == choice.text

    tokens: list[str] = []
    offsets: list[int] = []
    text = ""
    for chunk in client.completions.create(
        model=MODEL, prompt=STORY, max_tokens=10, logprobs=2, stream=True, extra_body=GREEDY
    ):
        for streamed in chunk.choices:
            text += streamed.text
            if streamed.logprobs is not None:
                tokens += streamed.logprobs.tokens or []
                offsets += streamed.logprobs.text_offset or []
    assert text == choice.text
    assert tokens == logprobs.tokens and offsets == logprobs.text_offset


def test_echo_with_max_tokens_0_scores_the_prompt(client: openai.OpenAI, reference: Reference) -> None:
    """What evaluation harnesses send to score a text: the prompt's own logprobs, nothing generated."""
    scored = client.completions.create(model=MODEL, prompt=STORY, max_tokens=0, echo=True, logprobs=0)
    choice = scored.choices[0]
    assert choice.text == STORY
    assert scored.usage is not None and scored.usage.completion_tokens == 0
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    ids = reference.prompt_ids(STORY)
    rows = reference.rows(ids)
    values = choice.logprobs.token_logprobs
    assert len(values) == len(ids) and values[0] is None
    for position in range(1, len(ids)):
        assert abs(values[position] - float(rows[position - 1, ids[position]])) < TOLERANCE  # type: ignore[operator]
    offsets = choice.logprobs.text_offset or []
    assert offsets == sorted(offsets) and offsets[-1] < len(STORY)

    # With generation: the prompt's tokens first, then the generated ones, whose offsets follow the prompt.
    both = client.completions.create(
        model=MODEL, prompt=STORY, max_tokens=3, echo=True, logprobs=1, extra_body=GREEDY
    ).choices[0]
    assert both.text.startswith(STORY) and len(both.text) > len(STORY)
    assert both.logprobs is not None and both.logprobs.token_logprobs is not None
    assert both.logprobs.token_logprobs[: len(ids)] == pytest.approx(values, abs=TOLERANCE)
    assert len(both.logprobs.token_logprobs) == len(ids) + 3
    assert (both.logprobs.text_offset or [])[len(ids)] == len(STORY)


def test_a_stop_string_cuts_the_tokens_after_it(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt=STORY, max_tokens=16, logprobs=0, extra_body=GREEDY)
    choice = free.choices[0]
    assert choice.logprobs is not None and choice.logprobs.tokens and choice.logprobs.text_offset
    tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
    middle = len(tokens) // 2
    stop = tokens[middle].strip() or tokens[middle]
    where = choice.text.find(stop)
    cut = client.completions.create(
        model=MODEL, prompt=STORY, max_tokens=16, logprobs=0, stop=[stop], extra_body=GREEDY
    ).choices[0]
    assert cut.text == choice.text[:where]
    assert cut.logprobs is not None
    assert cut.logprobs.tokens == [
        token for token, offset in zip(tokens, offsets, strict=True) if offset < where
    ]


def test_ollama_chat_and_generate_report_logprobs(server: Server, reference: Reference) -> None:
    client = ollama.Client(host=server.url.rstrip("/"))
    options = {"temperature": 0, "repeat_penalty": 1.0}
    chat = client.chat(
        model=MODEL, messages=MESSAGES, options=options | {"num_predict": 8}, logprobs=True, top_logprobs=2
    )
    assert chat.logprobs
    entries = [entry.model_dump() for entry in chat.logprobs]
    for entry in entries:
        entry["bytes"] = list(entry["token"].encode())  # the client's model keeps no bytes
        entry["top_logprobs"] = [t | {"bytes": list(t["token"].encode())} for t in entry["top_logprobs"]]
    check_tokens(reference, reference.prompt_ids(chat_prompt(server)), entries, 2)

    streamed = []
    for part in client.generate(
        model=MODEL, prompt=STORY, raw=True, options=options | {"num_predict": 8}, logprobs=True, stream=True
    ):
        streamed += [entry.model_dump() for entry in part.logprobs or ()]
    whole = client.generate(
        model=MODEL, prompt=STORY, raw=True, options=options | {"num_predict": 8}, logprobs=True
    )
    assert [e["token"] for e in streamed] == [e.token for e in whole.logprobs or ()]
    steps = reference.greedy(reference.prompt_ids(STORY), len(streamed))
    for (token, row), entry in zip(steps, streamed, strict=True):
        assert abs(entry["logprob"] - float(row[token])) < TOLERANCE
        assert not entry["top_logprobs"]

    plain = client.generate(model=MODEL, prompt=STORY, raw=True, options=options | {"num_predict": 4})
    assert plain.logprobs is None


def test_bad_logprob_requests_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=STORY, max_tokens=2, logprobs=6)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, top_logprobs=2)


def test_responses_include_the_output_text_logprobs(
    client: openai.OpenAI, server: Server, reference: Reference
) -> None:
    prompt_ids = reference.prompt_ids(chat_prompt(server))
    whole = client.responses.create(
        model=MODEL,
        input=MESSAGES[0]["content"],
        max_output_tokens=12,
        top_logprobs=2,
        include=["message.output_text.logprobs"],
        extra_body=GREEDY,
    )
    (part,) = [content for item in whole.output if item.type == "message" for content in item.content]
    assert part.type == "output_text" and part.logprobs
    entries = [entry.model_dump() for entry in part.logprobs]
    check_tokens(reference, prompt_ids, entries, 2)

    streamed: list[dict[str, Any]] = []
    done: list[Any] = []
    with client.responses.stream(
        model=MODEL,
        input=MESSAGES[0]["content"],
        max_output_tokens=12,
        top_logprobs=2,
        include=["message.output_text.logprobs"],
        extra_body=GREEDY,
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                streamed += [entry.model_dump() for entry in event.logprobs]
            elif event.type == "response.output_text.done":
                done = list(event.logprobs)
    assert [e["token"] for e in streamed] == [e["token"] for e in entries] == [e.token for e in done]

    plain = client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, extra_body=GREEDY)
    assert all(not c.logprobs for item in plain.output if item.type == "message" for c in item.content)


def test_the_loader_reports_raw_logprobs_under_any_sampler(
    tiny_llama_dir: Path, reference: Reference
) -> None:
    """Sampling with a temperature, top-k and penalties changes which token is chosen, never the reported
    logprobs: they are the log-softmax of the raw logits at each position of the sequence generated."""
    from loaders.transformers import TransformersLoader, TransformersSettings
    from webui.core.loader import CancelToken
    from webui.core.params import GenerationParams

    model = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    try:
        params = GenerationParams(
            temperature=1.5,
            top_k=5,
            repetition_penalty=1.3,
            seed=7,
            max_new_tokens=12,
            logprobs=4,
            prompt_logprobs=True,
            ban_eos_token=True,
        )
        chunks = list(model.stream(STORY, params, CancelToken()))
    finally:
        model.unload()
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    assert len(entries) == sum(chunk.tokens for chunk in chunks) == 12
    assert chunks[0].prompt_logprobs and all(not chunk.prompt_logprobs for chunk in chunks[1:])
    ids = reference.prompt_ids(STORY)
    rows = reference.rows(ids + [entry.token_id for entry in entries])
    for step, entry in enumerate(entries):
        row = rows[len(ids) - 1 + step]
        assert abs(entry.logprob - float(row[entry.token_id])) < TOLERANCE
        assert entry.token_bytes == reference.token_bytes(entry.token_id)
        values, indices = row.topk(4)
        assert [top.token_id for top in entry.top] == indices.tolist()
        assert [top.logprob for top in entry.top] == pytest.approx(values.tolist(), abs=TOLERANCE)
    prompt = chunks[0].prompt_logprobs
    assert len(prompt) == len(ids) and prompt[0] is None
    for position in range(1, len(ids)):
        scored = prompt[position]
        assert scored is not None and scored.token_id == ids[position]
        assert abs(scored.logprob - float(rows[position - 1, ids[position]])) < TOLERANCE


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_quantized_checkpoints_report_logprobs_too(
    method: str, tiny_gptq_dir: Path, tiny_awq_dir: Path
) -> None:
    """The GPTQ and AWQ loaders share the Transformers model's path: greedy picks the most likely token, and
    every counted token and every prompt token has its entry."""
    from loaders.awq import AwqLoader, AwqSettings
    from loaders.gptq import GptqLoader, GptqSettings
    from webui.core.loader import CancelToken
    from webui.core.params import GenerationParams

    if method == "gptq":
        model = GptqLoader().load(tiny_gptq_dir, GptqSettings())
    else:
        model = AwqLoader().load(tiny_awq_dir, AwqSettings())
    try:
        assert model.capabilities.streams_logprobs
        params = GenerationParams(temperature=0, max_new_tokens=8, logprobs=3, prompt_logprobs=True)
        chunks = list(model.stream(STORY, params, CancelToken()))
        prompt_tokens = len(model.tokenize(STORY, add_bos=True))
    finally:
        model.unload()
    entries = [entry for chunk in chunks for entry in chunk.logprobs]
    assert entries and len(entries) == sum(chunk.tokens for chunk in chunks)
    for entry in entries:
        assert entry.top[0].token_id == entry.token_id and entry.logprob == entry.top[0].logprob
        assert [top.logprob for top in entry.top] == sorted((top.logprob for top in entry.top), reverse=True)
        assert entry.logprob <= 0
    assert len(chunks[0].prompt_logprobs) == prompt_tokens


def test_token_id_prompts_are_scored_as_sent(client: openai.OpenAI, reference: Reference) -> None:
    """lm-evaluation-harness sends token ids and reads the logprobs from its context's length on: the echoed
    tokens are exactly the ids sent (no BOS put before them), then the one generated token."""
    ids = [int(t) for t in reference.tokenizer.encode(STORY, add_special_tokens=False)]
    choice = client.completions.create(
        model=MODEL, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
    ).choices[0]
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    values = choice.logprobs.token_logprobs
    assert len(values) == len(ids) + 1 and values[0] is None
    rows = reference.rows(ids)
    for position in range(1, len(ids)):
        assert abs(values[position] - float(rows[position - 1, ids[position]])) < TOLERANCE  # type: ignore[operator]
    assert choice.text.startswith(STORY)
