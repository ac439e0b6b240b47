"""Load: a bounded mix of OpenAI and Ollama requests against a real `webui serve` with a small --max-queue.

Streaming and non-streaming requests, clients that cancel mid-stream and clients that vanish (TCP reset) run
together for ``PALABRE_LOAD_SECONDS`` (default 30). The only refusal allowed is 429 with Retry-After; after the
load settles the server holds no more threads or file descriptors than after the warm-up, and its memory is flat.
The measured figures are printed (``pytest -s``) for the README's Security section.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fakes import ScriptedLoader, ScriptedModel
from tests.support.servers import Server
from webui.cli import build_parser, config_from_args
from webui.core.engine import Engine, QueueFull
from webui.core.params import GenerationParams
from webui.core.registry import LoaderRegistry
from webui.provision import DEFAULT_MODEL_FILE

LOAD_SECONDS = float(os.environ.get("PALABRE_LOAD_SECONDS", "30"))
CLIENTS = int(os.environ.get("PALABRE_LOAD_CLIENTS", "6"))
MAX_QUEUE = 3
MESSAGES = [{"role": "user", "content": "Name three colours."}]
OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]

# -- the engine's bound, at its seam ---------------------------------------------------------------------------


@pytest.fixture
def bounded_engine(tmp_path: Path) -> Iterator[Engine]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_text("Hel|lo")
    engine = Engine(LoaderRegistry({"scripted": ScriptedLoader}), models, max_waiting=2)
    engine.load("a.gguf", "scripted")
    yield engine
    engine.close()


def test_a_full_queue_refuses_with_a_retry_time_and_a_cancel_frees_a_place(bounded_engine: Engine) -> None:
    model = bounded_engine.require_model().model
    assert isinstance(model, ScriptedModel)
    model.gate = threading.Event()  # the running generation waits until released
    one = GenerationParams(max_new_tokens=2)
    running = bounded_engine.submit("a", one)
    deadline = time.monotonic() + 10
    while bounded_engine.queue_snapshot().running is None and time.monotonic() < deadline:
        time.sleep(0.01)
    waiting = [bounded_engine.submit("b", one), bounded_engine.submit("c", one)]
    with pytest.raises(QueueFull) as refused:
        bounded_engine.submit("d", one)
    assert "2 requests are already waiting" in str(refused.value)
    assert refused.value.retry_after_s >= 1
    waiting[0].cancel()  # a withdrawn request leaves its place at once
    waiting.append(bounded_engine.submit("d", one))
    model.gate.set()
    assert running.text() == "Hello"
    assert [job.text() for job in waiting[1:]] == ["Hello", "Hello"]


def test_max_queue_is_a_serve_option_with_a_sensible_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert config_from_args(parser.parse_args(["serve"])).max_queue == 16
    assert config_from_args(parser.parse_args(["serve", "--max-queue", "3"])).max_queue == 3
    for bad in ("0", "-2", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--max-queue", bad])
        assert "--max-queue" in capsys.readouterr().err


# -- the load test ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def _refused(tally: Tally, status: int, headers: Mapping[str, str], body: str) -> float:
    """Checks a refusal: only 429 with a whole-second Retry-After and the protocol's error shape is allowed.

    Returns how long to wait before the next request.
    """
    if status != 429:
        tally.error(f"HTTP {status}: {body[:300]}")
        return 0.5
    retry = headers.get("retry-after", "")
    if not retry.isdigit() or int(retry) < 1:
        tally.error(f"429 without a usable Retry-After ({retry!r})")
        return 0.5
    error = json.loads(body)["error"]
    openai_shape = isinstance(error, dict) and error.get("code") == "rate_limit_exceeded"
    if not (openai_shape or isinstance(error, str)) or "busy" not in str(error):
        tally.error(f"429 with an unclear body: {body[:300]}")
    tally.count("429")
    return min(float(retry), 3.0)


def openai_call(url: str, tally: Tally, kind: str) -> float:
    """A non-streaming or streaming chat completion; some streams are cancelled by the client after a chunk."""
    client = openai.OpenAI(base_url=f"{url}v1", api_key="unused", max_retries=0, timeout=120)
    try:
        if kind == "plain":
            reply = client.chat.completions.create(model="default", messages=OPENAI_MESSAGES, max_tokens=12)
            if reply.choices[0].finish_reason not in ("stop", "length"):
                tally.error(f"finish_reason {reply.choices[0].finish_reason!r}")
        else:
            stream = client.chat.completions.create(
                model="default",
                messages=OPENAI_MESSAGES,
                max_tokens=24,
                stream=True,
            )
            for number, _chunk in enumerate(stream):
                if kind == "cancel" and number == 1:
                    break
            stream.close()
        tally.count(f"openai {kind}")
    except openai.APIStatusError as exc:
        return _refused(tally, exc.status_code, exc.response.headers, exc.response.text)
    except openai.APIError as exc:
        tally.error(f"openai {kind}: {exc!r}")
    finally:
        client.close()
    return 0.0


def ollama_call(url: str, tally: Tally, kind: str) -> float:
    """Ollama's /api/generate or /api/chat, NDJSON-streamed or not; some readers hang up after a line."""
    with httpx.Client(base_url=url, timeout=120) as client:
        if kind == "generate":
            body = {"model": "default", "prompt": "Hi", "stream": False, "options": {"num_predict": 12}}
            response = client.post("/api/generate", json=body)
            if response.status_code != 200:
                return _refused(tally, response.status_code, response.headers, response.text)
            if not response.json().get("done"):
                tally.error(f"ollama generate not done: {response.text[:200]}")
        else:
            body = {"model": "default", "messages": MESSAGES, "options": {"num_predict": 24}}
            with client.stream("POST", "/api/chat", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    return _refused(tally, response.status_code, response.headers, response.text)
                for number, line in enumerate(response.iter_lines()):
                    if "error" in json.loads(line):
                        tally.error(f"ollama stream error: {line[:200]}")
                    if kind == "hang up" and number == 1:
                        break  # leaving the block closes the connection mid-stream
    tally.count(f"ollama {kind}")
    return 0.0


def vanishing_call(url: str, tally: Tally, kind: str) -> float:
    """A client that sends a streaming request and resets the connection once the first bytes arrive."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    body = json.dumps({"model": "default", "prompt": "Once", "max_tokens": 48, "stream": True}).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(head + body)
        first = sock.recv(4096)
        # SO_LINGER 0: close() sends a TCP reset, as a killed client or a dropped network does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    status = first.split(b" ", 2)[1] if first.startswith(b"HTTP/1.1 ") else b"?"
    if status == b"429":
        tally.count("429")
        return 1.0
    if status != b"200":
        tally.error(f"reset client got {first[:200]!r}")
    tally.count(kind)
    return 0.0


# Every kind of request, each client going round them from its own starting point, so each kind is tried
# about equally often whatever the machine's speed.
CALLS: list[tuple[Callable[[str, Tally, str], float], str]] = [
    (openai_call, "plain"),
    (ollama_call, "hang up"),
    (openai_call, "stream"),
    (vanishing_call, "reset"),
    (ollama_call, "generate"),
    (openai_call, "cancel"),
    (ollama_call, "chat stream"),
]


def run_clients(url: str, tally: Tally, seconds: float, seed: int) -> None:
    """``CLIENTS`` threads, each sending every kind of request in turn until ``seconds`` have passed."""
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        turn = seed * CLIENTS + number
        while time.monotonic() < stop_at:
            try:
                call, kind = CALLS[turn % len(CALLS)]
                turn += 1
                wait = call(url, tally, kind)
            except Exception as exc:  # a crash of the client itself is a failure too
                tally.error(f"client {number}: {exc!r}")
                wait = 0.5
            time.sleep(wait)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 300)


@dataclass(frozen=True)
class Footprint:
    threads: int
    fds: int
    rss_kib: int


def footprint(pid: int) -> Footprint:
    proc = Path(f"/proc/{pid}")
    status = (proc / "status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Footprint(len(list((proc / "task").iterdir())), len(list((proc / "fd").iterdir())), rss)


def settle(url: str) -> None:
    """Until the engine is idle with nothing queued, then a pause for closing connections and threads."""
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            queue = client.get(f"{url}v1/internal/queue").json()
            if queue["running"] is None and not queue["queued"]:
                break
            time.sleep(0.2)
    # anyio retires idle worker threads after 10 s: wait past that so both samples see a trimmed pool.
    time.sleep(11)


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("load"),
        model=default_model_path,
        # One slot, so that the mixed load fills the bounded queue behind it.
        extra_args=["--max-queue", str(MAX_QUEUE), "--setting", "parallel=1"],
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_mixed_load_gets_only_429s_and_leaks_no_threads_fds_or_memory(loaded_server: Server) -> None:
    url = loaded_server.url
    assert loaded_server.process is not None
    pid = loaded_server.process.pid
    warm_up = Tally()
    run_clients(url, warm_up, max(10.0, LOAD_SECONDS / 4), seed=1)
    settle(url)
    before = footprint(pid)

    tally = Tally()
    started = time.monotonic()
    run_clients(url, tally, LOAD_SECONDS, seed=2)
    took = time.monotonic() - started
    settle(url)
    after = footprint(pid)

    served = sum(n for kind, n in tally.outcomes.items() if kind != "429")
    print(
        f"\nload: {took:.0f} s, {CLIENTS} clients, --max-queue {MAX_QUEUE}: {served} requests served "
        f"({dict(tally.outcomes)}), {tally.outcomes['429']} x 429, {len(tally.errors)} errors; "
        f"threads {before.threads} -> {after.threads}, fds {before.fds} -> {after.fds}, "
        f"RSS {before.rss_kib // 1024} -> {after.rss_kib // 1024} MiB"
    )
    assert warm_up.errors == [] and tally.errors == [], tally.errors[:10]
    assert served >= CLIENTS  # the load really ran
    assert tally.outcomes["429"] > 0, "the queue bound was never reached: the test did not test it"
    for kind in ("openai stream", "openai cancel", "ollama hang up", "reset"):
        assert tally.outcomes[kind] > 0, f"no {kind!r} request completed"
    # A leak grows with the requests served (hundreds); a few pool threads or sockets may come and go.
    assert after.threads <= before.threads + 4, (before, after)
    assert after.fds <= before.fds + 8, (before, after)
    assert after.rss_kib <= before.rss_kib * 1.5, (before, after)
    # And the server still answers normally.
    with httpx.Client(timeout=120) as client:
        reply = client.post(
            f"{url}v1/chat/completions",
            json={"model": DEFAULT_MODEL_FILE, "messages": MESSAGES, "max_tokens": 4},
        )
    assert reply.status_code == 200, reply.text
    log = loaded_server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
