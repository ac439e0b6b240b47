"""GET /v1/internal/queue against a real `webui serve` with the default model: a client sees its position."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Server
from tests.support.waiting import eventually
from webui.provision import DEFAULT_MODEL_FILE

LONG = {"model": DEFAULT_MODEL_FILE, "prompt": "Once upon a time", "max_tokens": 1500, "stream": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    # One slot, so that a second request waits in the queue (with automatic slots it would run at once).
    running = Server(
        tmp_path_factory.mktemp("queue"), model=default_model_path, extra_args=["--setting", "parallel=1"]
    )
    running.start()
    yield running
    running.stop()


def stream_completion(url: str, seen: list[str], done: threading.Event) -> None:
    """Stream a long completion, noting each SSE data line, until the server ends it."""
    try:
        with httpx.Client(timeout=300) as client:
            body = {**LONG, "ban_eos_token": True}
            with client.stream("POST", f"{url}v1/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        seen.append(line)
    finally:
        done.set()


@pytest.mark.slow
def test_a_queued_client_sees_its_position_and_leaves_the_queue_when_stopped(server: Server) -> None:
    api = httpx.Client(base_url=f"{server.url}v1/internal", timeout=60)
    assert api.get("/queue").json()["running"] is None

    first_seen: list[str] = []
    first_done = threading.Event()
    threading.Thread(target=stream_completion, args=(server.url, first_seen, first_done), daemon=True).start()
    eventually(lambda: first_seen, "the first client got a token")
    first_id = json.loads(first_seen[0][len("data: ") :])["id"]

    second_seen: list[str] = []
    second_done = threading.Event()
    threading.Thread(
        target=stream_completion, args=(server.url, second_seen, second_done), daemon=True
    ).start()
    queue = eventually(lambda: (q := api.get("/queue").json())["queued"] and q, "the second request queued")

    assert queue["activity"] == "generating"
    assert queue["model"] == DEFAULT_MODEL_FILE
    assert queue["running"]["request_id"] == first_id
    assert (queue["running"]["source"], queue["running"]["position"]) == ("api", 0)
    [waiting] = queue["queued"]
    assert (waiting["source"], waiting["position"], waiting["state"]) == ("api", 1, "queued")
    assert waiting["request_id"].startswith("cmpl-") and waiting["request_id"] != first_id

    # Stopping the queued request takes it out of the queue at once; the running one goes on.
    assert api.post("/stop", json={"id": waiting["request_id"]}).json() == {"cancelled": 1}
    after = api.get("/queue").json()
    assert after["queued"] == []
    assert after["running"]["request_id"] == first_id
    assert second_done.wait(timeout=60)
    assert not first_done.is_set()

    assert api.post("/stop", json={"id": first_id}).json() == {"cancelled": 1}
    assert first_done.wait(timeout=60)
    eventually(lambda: api.get("/queue").json()["running"] is None, "the engine is free")
    api.close()
