"""Log-probabilities from the llama.cpp loader, through the real `webui serve` on the default model and the
official ``openai`` client, equal to a log-softmax computed with numpy from llama-cpp-python's own logits.

The reference evaluates the prompt in one batch and then each generated token alone, as generation does
(llama.cpp's batched and single-token kernels differ in the last digits). Greedy requests (temperature 0)
let it follow the same tokens: at each step it takes the most likely token, as the server's greedy sampler
does, and checks the reported token, its logprob and the top alternatives against that step's logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

STORY = "Once upon a time, in a small village by the sea,"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# Greedy, and nothing between the logits and the choice but the argmax.
GREEDY: dict[str, Any] = {"temperature": 0, "repetition_penalty": 1.0, "dry_multiplier": 0.0}
TOLERANCE = 1e-3
N_CTX = 2048


def log_softmax(logits: Any) -> np.ndarray:
    values = np.asarray(logits, dtype=np.float64)
    top = values.max()
    return values - (top + np.log(np.exp(values - top).sum()))


class Reference:
    """The default model in llama-cpp-python alone, with logits for every position."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        # Flash attention as the loader uses it by default (auto: on for this CPU): the attention kernels
        # round differently, so the reference must compute what the loader computes.
        self.llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=N_CTX, flash_attn=True, verbose=False)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt as the loader sends it (BOS where the model wants one, special tokens read)."""
        return list(self.llm.tokenize(prompt.encode(), add_bos=True, special=True))

    def piece(self, token: int) -> bytes:
        return bytes(self.llm.detokenize([token], special=True))

    def prompt_rows(self, ids: Sequence[int]) -> list[np.ndarray]:
        """The log-softmax at every prompt position (the prompt evaluated in one batch)."""
        self.llm.reset()
        self.llm.eval(list(ids))
        return [log_softmax(self.llm.scores[index]) for index in range(len(ids))]

    def greedy(self, prompt_ids: Sequence[int], steps: int) -> list[tuple[int, np.ndarray]]:
        """(chosen token, its step's log-softmax) for ``steps`` greedy steps after the prompt."""
        self.llm.reset()
        self.llm.eval(list(prompt_ids))
        out = []
        for _ in range(steps):
            row = log_softmax(self.llm.scores[self.llm.n_tokens - 1])
            token = int(row.argmax())
            out.append((token, row))
            self.llm.eval([token])
        return out


def check_tokens(
    reference: Reference, prompt_ids: list[int], entries: Sequence[dict[str, Any]], top: int
) -> None:
    """Each reported ``{token, logprob, bytes, top_logprobs}`` against the reference's greedy steps."""
    assert entries
    for (token, row), entry in zip(reference.greedy(prompt_ids, len(entries)), entries, strict=True):
        assert bytes(entry["bytes"]) == reference.piece(token)
        assert abs(entry["logprob"] - row[token]) < TOLERANCE
        best = np.argsort(-row, kind="stable")[:top]
        tops = entry["top_logprobs"]
        assert [bytes(t["bytes"]) for t in tops] == [reference.piece(int(t)) for t in best]
        assert all(abs(t["logprob"] - row[int(b)]) < TOLERANCE for t, b in zip(tops, best, strict=True))


@pytest.fixture(scope="module")
def reference(default_model_path: Path) -> Reference:
    return Reference(default_model_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("logprobs-llama"), model=default_model_path)
    server.start()
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


def test_chat_logprobs_equal_llama_cpps_own_streamed_or_not(
    client: openai.OpenAI, server: Server, reference: Reference
) -> None:
    prompt_ids = reference.prompt_ids(chat_prompt(server))
    whole = client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
        messages=MESSAGES,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
        extra_body=GREEDY,
    )
    choice = whole.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = [entry.model_dump() for entry in choice.logprobs.content]
    check_tokens(reference, prompt_ids, entries, 3)
    assert whole.usage is not None and len(entries) == whole.usage.completion_tokens

    streamed: list[dict[str, Any]] = []
    text = ""
    for chunk in client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
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
    check_tokens(reference, prompt_ids, streamed, 3)


def test_completion_logprobs_equal_llama_cpps_own_streamed_or_not(
    client: openai.OpenAI, reference: Reference
) -> None:
    whole = client.completions.create(
        model=DEFAULT_MODEL_FILE, prompt=STORY, max_tokens=12, logprobs=2, extra_body=GREEDY
    )
    choice = whole.choices[0]
    assert choice.logprobs is not None
    logprobs = choice.logprobs
    assert logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs and logprobs.text_offset
    steps = reference.greedy(reference.prompt_ids(STORY), len(logprobs.tokens))
    for index, (token, row) in enumerate(steps):
        assert logprobs.tokens[index] == reference.piece(token).decode("utf-8", errors="replace")
        assert abs(logprobs.token_logprobs[index] - row[token]) < TOLERANCE  # type: ignore[operator]
        tops = logprobs.top_logprobs[index]
        best = [reference.piece(int(t)).decode("utf-8", errors="replace") for t in np.argsort(-row)[:2]]
        assert set(best) <= set(tops) and logprobs.tokens[index] in tops
        assert all(
            abs(tops[b] - row[int(t)]) < TOLERANCE for b, t in zip(best, np.argsort(-row)[:2], strict=True)
        )

    tokens: list[str] = []
    values: list[float | None] = []
    text = ""
    for chunk in client.completions.create(
        model=DEFAULT_MODEL_FILE, prompt=STORY, max_tokens=12, logprobs=2, stream=True, extra_body=GREEDY
    ):
        for streamed in chunk.choices:
            text += streamed.text
            if streamed.logprobs is not None:
                tokens += streamed.logprobs.tokens or []
                values += streamed.logprobs.token_logprobs or []
    assert text == choice.text
    assert tokens == logprobs.tokens
    assert values == pytest.approx(logprobs.token_logprobs, abs=TOLERANCE)


def test_echo_scores_the_prompt_as_evaluation_harnesses_ask(
    client: openai.OpenAI, reference: Reference
) -> None:
    """``echo`` with ``max_tokens: 0`` and ``logprobs: 0`` (lm-evaluation-harness's loglikelihood): the
    prompt's own logprobs, the first token's null, nothing generated."""
    scored = client.completions.create(
        model=DEFAULT_MODEL_FILE, prompt=STORY, max_tokens=0, echo=True, logprobs=0
    )
    choice = scored.choices[0]
    assert choice.text == STORY
    assert scored.usage is not None and scored.usage.completion_tokens == 0
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    ids = reference.prompt_ids(STORY)
    rows = reference.prompt_rows(ids)
    values = choice.logprobs.token_logprobs
    assert len(values) == len(ids) and values[0] is None
    for position in range(1, len(ids)):
        assert abs(values[position] - rows[position - 1][ids[position]]) < TOLERANCE  # type: ignore[operator]

    # Streamed, with generation after the echo: the prompt's tokens first, then the generated ones.
    streamed: list[float | None] = []
    text = ""
    for chunk in client.completions.create(
        model=DEFAULT_MODEL_FILE,
        prompt=STORY,
        max_tokens=4,
        echo=True,
        logprobs=1,
        stream=True,
        extra_body=GREEDY,
    ):
        for part in chunk.choices:
            text += part.text
            if part.logprobs is not None:
                streamed += part.logprobs.token_logprobs or []
    assert text.startswith(STORY) and len(text) > len(STORY)
    assert streamed[: len(ids)] == pytest.approx(values, abs=TOLERANCE)
    generated = reference.greedy(ids, len(streamed) - len(ids))
    assert len(generated) == 4
    assert streamed[len(ids) :] == pytest.approx([row[token] for token, row in generated], abs=TOLERANCE)


def test_token_id_prompts_are_scored_as_sent(client: openai.OpenAI, reference: Reference) -> None:
    """lm-evaluation-harness sends token ids, ``max_tokens: 1``, ``echo`` and ``logprobs``, and reads the
    logprobs from its context's length on: the echoed tokens are exactly the ids sent, then the generated one."""
    ids = list(reference.llm.tokenize(STORY.encode(), add_bos=False, special=True))
    choice = client.completions.create(
        model=DEFAULT_MODEL_FILE, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
    ).choices[0]
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    values = choice.logprobs.token_logprobs
    assert len(values) == len(ids) + 1 and values[0] is None
    rows = reference.prompt_rows(ids)
    for position in range(1, len(ids)):
        assert abs(values[position] - rows[position - 1][ids[position]]) < TOLERANCE  # type: ignore[operator]
