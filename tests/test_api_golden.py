"""Golden answers of the HTTP API: the exact responses of representative OpenAI, Ollama and internal requests.

Recorded once (``PALABRE_GOLDEN_RECORD=1``) on the default model with greedy settings, before the API was
reshaped (issue 14), and compared on every run since: status, the headers that matter, JSON bodies, and the
SSE / NDJSON event sequences, with ids, timestamps, durations and speeds normalised. A refactor that changes
anything a client sees fails here, naming the request and the first difference.

What the model computes (reply texts, log-probabilities, generated token counts) is compared exactly only on a
machine whose llama.cpp computes what the recording machine's did: llama.cpp is built for the CPU it runs on, and
its kernels for one CPU round differently from another's (the recorded first-token log-probability -0.6411 was
-0.553 on an AVX2-only AMD machine, raw llama-cpp-python agreeing with Palabre on each), which also flips greedy
near ties. Raw llama-cpp-python, not Palabre, tells which case holds; elsewhere the model's output is masked on
both sides and everything the API itself shapes is still compared exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest

from tests.support.servers import Server
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = [pytest.mark.slow]

GOLDEN = Path(__file__).parent / "data" / "golden" / "api.json"
RECORD = os.environ.get("PALABRE_GOLDEN_RECORD") == "1"
M = DEFAULT_MODEL_FILE
HI = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "seed": 1}
OLLAMA_GREEDY = {"temperature": 0, "seed": 1, "num_predict": 8}
HEADERS_KEPT = ("content-type", "x-palabre-warnings", "retry-after", "allow", "www-authenticate")

# (name, method, path, JSON body or None, extra headers)
REQUESTS: list[tuple[str, str, str, Any, dict[str, str]]] = [
    # OpenAI
    ("openai models", "GET", "v1/models", None, {}),
    ("openai model", "GET", f"v1/models/{M}", None, {}),
    ("openai unknown model card", "GET", "v1/models/nope.gguf", None, {}),
    (
        "openai chat",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "max_tokens": 8, **GREEDY},
        {},
    ),
    (
        "openai chat stream",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "max_tokens": 6, "stream": True, **GREEDY},
        {},
    ),
    (
        "openai chat stream usage",
        "POST",
        "v1/chat/completions",
        {
            "model": M,
            "messages": HI,
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
            **GREEDY,
        },
        {},
    ),
    (
        "openai chat stop",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "max_tokens": 16, "stop": ["."], **GREEDY},
        {},
    ),
    (
        "openai chat n=2",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "max_tokens": 4, "n": 2, **GREEDY},
        {},
    ),
    (
        "openai chat json schema",
        "POST",
        "v1/chat/completions",
        {
            "model": M,
            "messages": [{"role": "user", "content": "Give me a city as JSON."}],
            "max_tokens": 24,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            },
            **GREEDY,
        },
        {},
    ),
    (
        "openai chat system and history",
        "POST",
        "v1/chat/completions",
        {
            "model": M,
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "Capital of Italy?"}]},
            ],
            "max_tokens": 6,
            **GREEDY,
        },
        {},
    ),
    (
        "openai chat logprobs",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "max_tokens": 3, "logprobs": True, "top_logprobs": 2, **GREEDY},
        {},
    ),
    ("openai chat no messages", "POST", "v1/chat/completions", {"model": M, "messages": []}, {}),
    (
        "openai chat bad role",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": [{"role": "x", "content": "a"}]},
        {},
    ),
    (
        "openai chat bad temperature",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "temperature": -3},
        {},
    ),
    ("openai chat unknown model", "POST", "v1/chat/completions", {"model": "nope.gguf", "messages": HI}, {}),
    (
        "openai chat not json",
        "POST",
        "v1/chat/completions",
        "{not json",
        {"content-type": "application/json"},
    ),
    (
        "openai completion",
        "POST",
        "v1/completions",
        {"model": M, "prompt": "The capital of France is", "max_tokens": 8, **GREEDY},
        {},
    ),
    (
        "openai completion stream",
        "POST",
        "v1/completions",
        {"model": M, "prompt": "Once upon a time", "max_tokens": 6, "stream": True, **GREEDY},
        {},
    ),
    (
        "openai completion echo",
        "POST",
        "v1/completions",
        {"model": M, "prompt": "One, two,", "max_tokens": 4, "echo": True, **GREEDY},
        {},
    ),
    (
        "openai completion two prompts",
        "POST",
        "v1/completions",
        {"model": M, "prompt": ["Red, green,", "Monday, Tuesday,"], "max_tokens": 3, **GREEDY},
        {},
    ),
    ("openai completion no prompt", "POST", "v1/completions", {"model": M}, {}),
    ("openai wrong method", "GET", "v1/chat/completions", None, {}),
    ("openai unknown path", "POST", "v1/nothing-here", {}, {}),
    # Ollama
    ("ollama version", "GET", "api/version", None, {}),
    ("ollama tags", "GET", "api/tags", None, {}),
    ("ollama ps", "GET", "api/ps", None, {}),
    ("ollama show", "POST", "api/show", {"model": M}, {}),
    ("ollama show unknown", "POST", "api/show", {"model": "nope"}, {}),
    (
        "ollama generate",
        "POST",
        "api/generate",
        {"model": M, "prompt": "Why is the sky blue?", "stream": False, "options": OLLAMA_GREEDY},
        {},
    ),
    (
        "ollama generate stream",
        "POST",
        "api/generate",
        {"model": M, "prompt": "Say hi.", "options": {**OLLAMA_GREEDY, "num_predict": 5}},
        {},
    ),
    (
        "ollama generate raw",
        "POST",
        "api/generate",
        {"model": M, "prompt": "1, 2, 3,", "raw": True, "stream": False, "options": OLLAMA_GREEDY},
        {},
    ),
    (
        "ollama generate json",
        "POST",
        "api/generate",
        {
            "model": M,
            "prompt": "A color as JSON.",
            "format": "json",
            "stream": False,
            "options": {**OLLAMA_GREEDY, "num_predict": 16},
        },
        {},
    ),
    ("ollama generate load", "POST", "api/generate", {"model": M}, {}),
    (
        "ollama chat",
        "POST",
        "api/chat",
        {"model": M, "messages": HI, "stream": False, "options": OLLAMA_GREEDY},
        {},
    ),
    (
        "ollama chat stream",
        "POST",
        "api/chat",
        {"model": M, "messages": HI, "options": {**OLLAMA_GREEDY, "num_predict": 5}},
        {},
    ),
    (
        "ollama chat tools",
        "POST",
        "api/chat",
        {"model": M, "messages": HI, "tools": [{"type": "function"}]},
        {},
    ),
    (
        "ollama chat bad keep_alive",
        "POST",
        "api/chat",
        {"model": M, "messages": HI, "keep_alive": "soon"},
        {},
    ),
    ("ollama chat unknown model", "POST", "api/chat", {"model": "nope", "messages": HI, "stream": False}, {}),
    ("ollama unknown path", "POST", "api/pull", {"model": M}, {}),
    # Internal
    ("internal model", "GET", "v1/internal/model", None, {}),
    ("internal tokenize", "POST", "v1/internal/tokenize", {"text": "Hello world"}, {}),
    ("internal detokenize", "POST", "v1/internal/detokenize", {"tokens": [19556, 905]}, {}),
    ("internal detokenize bad ids", "POST", "v1/internal/detokenize", {"tokens": [-5, 10**9]}, {}),
    ("internal token count", "POST", "v1/internal/token-count", {"text": "Hello world"}, {}),
    (
        "internal chat prompt",
        "POST",
        "v1/internal/chat-prompt",
        {"messages": [{"role": "system", "content": "Be brief."}, *HI], "mode": "instruct"},
        {},
    ),
    (
        "openai chat bad template",
        "POST",
        "v1/chat/completions",
        {"model": M, "messages": HI, "mode": "instruct", "instruction_template_str": "{% for %}"},
        {},
    ),
    (
        "openai chat own template",
        "POST",
        "v1/chat/completions",
        {
            "model": M,
            "messages": HI,
            "mode": "instruct",
            "instruction_template_str": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endfor %}<|im_start|>assistant\n",
            "max_tokens": 6,
            **GREEDY,
        },
        {},
    ),
    ("internal presets", "GET", "v1/internal/presets", None, {}),
    ("internal templates", "GET", "v1/internal/templates", None, {}),
    ("internal characters", "GET", "v1/internal/characters", None, {}),
    ("internal queue", "GET", "v1/internal/queue", None, {}),
    ("internal stop", "POST", "v1/internal/stop", {}, {}),
    ("internal load unknown", "POST", "v1/internal/model/load", {"model": "nope.gguf"}, {}),
    ("health", "GET", "health", None, {}),
]

_VOLATILE_KEYS = {
    "created",
    "created_at",
    "modified_at",
    "expires_at",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
    "load_seconds",
    "waited_s",
    "system_fingerprint",
    "digest",  # of the file's path, size and time: differs per folder
    "memory_budget_bytes",  # this machine's available memory
}
_ID = re.compile(r"\b(chatcmpl|cmpl|ollama|req|job)-[0-9a-zA-Z]+")
_USER_DATA = re.compile(r"\S*/golden\d*/user_data")  # the test's temporary folder


def normalise(value: Any, key: str = "") -> Any:
    """The value with what differs between runs (ids, times, durations, speeds) replaced by placeholders."""
    if key in _VOLATILE_KEYS and value is not None:
        return f"<{key}>"
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(item, key) for item in value]
    if isinstance(value, str):
        return _USER_DATA.sub("<user_data>", _ID.sub(r"\1-<id>", value))
    if isinstance(value, float) and ("per_second" in key or key.endswith("_s") or "speed" in key):
        return f"<{key}>"
    if isinstance(value, float):
        return round(value, 4)  # log-probabilities: the last digits follow the CPU's rounding
    return value


# Where a generating request's answer holds what the model computed (texts, tokens, log-probabilities, counts).
_MODEL_KEYS = {
    "content",
    "text",
    "response",
    "thinking",
    "reasoning_content",
    "output_text",
    "arguments",
    "token",
    "logprob",
    "bytes",
    "context",
    "completion_tokens",
    "output_tokens",
    "total_tokens",
    "eval_count",
}
_GENERATION_PATHS = ("v1/chat/completions", "v1/completions", "api/chat", "api/generate")
# The recording's probe: "openai chat logprobs" asks for the first reply token of this prompt (HI, as ChatML).
_PROBE = "openai chat logprobs"
_PROBE_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def mask_model_output(value: Any, key: str = "") -> Any:
    """``value`` with every leaf the model computed replaced by a placeholder; the structure around it kept."""
    if isinstance(value, dict):
        return {k: mask_model_output(v, k) for k, v in value.items()}
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return [mask_model_output(item, key) for item in value]
    if key in _MODEL_KEYS and value is not None:
        return "<model>"
    return value


def parse_body(response: httpx.Response) -> Any:
    """JSON, the SSE events, the NDJSON lines, or the text."""
    content_type = response.headers.get("content-type", "")
    text = response.text
    if "text/event-stream" in content_type:
        events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
        return {"sse": [event if event == "[DONE]" else json.loads(event) for event in events]}
    if "ndjson" in content_type:
        return {"ndjson": [json.loads(line) for line in text.splitlines() if line.strip()]}
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


def answer(server: Server, method: str, path: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    if isinstance(body, str):
        content: str | None = body
    else:
        content = json.dumps(body) if body is not None else None
    sent = {"content-type": "application/json", **headers} if content is not None else headers
    response = httpx.request(method, f"{server.url}{path}", content=content, headers=sent, timeout=120)
    kept = {name: response.headers[name] for name in HEADERS_KEPT if name in response.headers}
    return {"status": response.status_code, "headers": kept, "body": normalise(parse_body(response))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    # Every token streamed on its own: the recorded events must not depend on this machine's timing.
    every_token = ["--setting", "stream_interval=0"]
    root = tmp_path_factory.mktemp("golden")
    with Server(root, default_model_path, extra_args=every_token).running() as running:
        yield running


def raw_first_token_logprobs(model: Path, candidates: list[bytes]) -> list[float]:
    """Raw llama-cpp-python's log-probabilities of ``candidates`` (one token each) as the probe's first reply
    token, with the server's defaults for the model: flash attention on (automatic, with parallel slots)."""
    llm = llama_cpp.Llama(str(model), n_ctx=512, flash_attn=True, logits_all=True, verbose=False)
    try:
        tokens = llm.tokenize(_PROBE_PROMPT.encode(), add_bos=False, special=True)
        llm.eval(tokens)
        logits = [float(x) for x in llm.scores[len(tokens) - 1]]
        ids = [llm.tokenize(candidate, add_bos=False, special=True) for candidate in candidates]
    finally:
        llm.close()
    top = max(logits)
    log_total = top + math.log(sum(math.exp(x - top) for x in logits))
    return [logits[id_[0]] - log_total if len(id_) == 1 else math.nan for id_ in ids]


def recorded_kernels(model: Path, recorded: dict[str, Any]) -> bool:
    """Whether this machine's llama.cpp computes the recording machine's numbers: raw llama-cpp-python's top two
    log-probabilities for the probe's first reply token against the recorded ones (to 1e-3)."""
    first = recorded[_PROBE]["body"]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    here = raw_first_token_logprobs(model, [bytes(item["bytes"]) for item in first])
    return all(abs(value - item["logprob"]) <= 1e-3 for value, item in zip(here, first, strict=True))


def test_the_api_answers_exactly_as_recorded(server: Server, default_model_path: Path) -> None:
    assert len(REQUESTS) >= 30 and len({name for name, *_ in REQUESTS}) == len(REQUESTS)
    answers = {
        name: answer(server, method, path, body, headers) for name, method, path, body, headers in REQUESTS
    }
    if RECORD:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(answers, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(recorded) == sorted(answers), "the golden file lists other requests: record it again"
    now = answers
    if not recorded_kernels(default_model_path, recorded):
        generating = {name for name, _, path, *_ in REQUESTS if path in _GENERATION_PATHS}
        print(
            f"Another CPU's llama.cpp kernels: the model's output in {len(generating)} answers is not compared."
        )
        recorded = {k: mask_model_output(v) if k in generating else v for k, v in recorded.items()}
        now = {k: mask_model_output(v) if k in generating else v for k, v in answers.items()}
    differences = [name for name in now if now[name] != recorded[name]]
    details = [
        f"{name}:\n  recorded {json.dumps(recorded[name])[:1500]}\n  now      {json.dumps(now[name])[:1500]}"
        for name in differences[:3]
    ]
    assert not differences, f"{len(differences)} answers changed: {differences}\n" + "\n".join(details)
    # The answers are real: a greedy reply from the model, a streamed one in several events, errors in shape.
    chat = answers["openai chat"]["body"]["choices"][0]["message"]["content"]
    assert answers["openai chat"]["status"] == 200 and chat.strip()
    assert len(answers["openai chat stream"]["body"]["sse"]) >= 4
    assert answers["openai chat unknown model"]["status"] == 404
    assert answers["ollama chat stream"]["body"]["ndjson"][-1]["done"] is True


def test_masking_the_models_output_keeps_what_the_api_shapes() -> None:
    answer = {
        "body": {
            "choices": [
                {
                    "message": {"role": "assistant", "content": "Paris"},
                    "finish_reason": "length",
                    "logprobs": {
                        "content": [{"token": "Paris", "logprob": -0.5, "bytes": [80], "top_logprobs": []}]
                    },
                }
            ],
            "usage": {"prompt_tokens": 16, "completion_tokens": 3, "total_tokens": 19},
        }
    }
    masked = mask_model_output(answer)
    choice = masked["body"]["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "<model>"}
    assert choice["logprobs"]["content"][0] == {
        "token": "<model>",
        "logprob": "<model>",
        "bytes": "<model>",
        "top_logprobs": [],
    }
    assert masked["body"]["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": "<model>",
        "total_tokens": "<model>",
    }
    # Another reply compares equal; another finish reason, prompt count, role or field name does not.
    other = json.loads(json.dumps(answer).replace("Paris", "Rome").replace("-0.5", "-0.7"))
    assert mask_model_output(other) == masked
    source = json.dumps(answer)
    for old, new in [
        ('"finish_reason": "length"', '"finish_reason": "stop"'),
        ('"prompt_tokens": 16', '"prompt_tokens": 17'),
        ('"role": "assistant"', '"role": "user"'),
        ('"content": "Paris"', '"text": "Paris"'),
    ]:
        assert mask_model_output(json.loads(source.replace(old, new))) != masked, new


def test_the_probe_recognises_the_machine_that_computes_the_recorded_numbers(
    default_model_path: Path,
) -> None:
    recorded = json.loads(GOLDEN.read_text())
    probe = recorded[_PROBE]["body"]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    here = raw_first_token_logprobs(default_model_path, [bytes(item["bytes"]) for item in probe])
    for item, value in zip(probe, here, strict=True):
        item["logprob"] = round(value, 4)  # as this machine would have recorded them
    assert recorded_kernels(default_model_path, recorded)
    probe[0]["logprob"] -= 0.01
    assert not recorded_kernels(default_model_path, recorded)
