"""Consistent privileges with an admin key: no request of a non-admin key loads, unloads or switches the model,
and a non-admin key stops and sees the request ids of only its own generations. Against a real `webui serve`,
through the official `ollama` and `openai` clients where they apply."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.support.servers import Server
from tests.support.waiting import eventually
from webui.api.auth import client_id
from webui.api.errors import ApiError
from webui.api.internal_serving import queue_view
from webui.api.jobs import ApiJobs, Caller
from webui.api.ollama_protocol import KEEP_ALIVE_NEEDS_ADMIN, allowed_keep_alive
from webui.core.engine import QueuedJob, QueueSnapshot
from webui.provision import DEFAULT_MODEL_FILE

KEY_A = "client-a-key-5e1c"
KEY_B = "client-b-key-0d7a"
ADMIN_KEY = "admin-key-c4f2"
OTHER_MODEL = "other-model.gguf"  # listed next to the default model: what a switch would load
LONG = {"model": DEFAULT_MODEL_FILE, "prompt": "Once upon a time", "max_tokens": 1500, "stream": True}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    args = ["--api-key", KEY_A, "--api-key", KEY_B, "--admin-key", ADMIN_KEY, "--page-auth", "u:p"]
    args += ["--setting", "parallel=1"]  # one slot: a second request waits, and its key sees it waiting
    running = Server(tmp_path_factory.mktemp("privileges"), model=default_model_path, extra_args=args)
    (running.config.models_dir / OTHER_MODEL).symlink_to(default_model_path)
    with running.running():
        yield running


def loaded(server: Server) -> str | None:
    """The model /health reports (public: no key needed)."""
    model: str | None = httpx.get(f"{server.url}health").json()["model"]
    return model


def assert_still_loaded(server: Server) -> None:
    """The default model is loaded now and a moment later (an idle unload would have happened by then)."""
    assert loaded(server) == DEFAULT_MODEL_FILE
    time.sleep(0.5)
    assert loaded(server) == DEFAULT_MODEL_FILE
    running = httpx.get(f"{server.url}api/ps", headers=bearer(KEY_A)).json()["models"]
    assert [model["name"] for model in running] == [DEFAULT_MODEL_FILE]


def ollama_client(server: Server, key: str) -> ollama.Client:
    return ollama.Client(host=server.url.rstrip("/"), headers=bearer(key))


def openai_client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}v1", max_retries=0)


# -- keep_alive ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_non_admin_keep_alive_is_refused_before_anything_starts(server: Server) -> None:
    client = ollama_client(server, KEY_A)
    hi = [{"role": "user", "content": "Hi"}]
    short = {"num_predict": 3}
    attempts: list[Callable[[], Any]] = [
        lambda: client.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", keep_alive=0, options=short),
        lambda: client.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", keep_alive="1s", options=short),
        lambda: list(client.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", keep_alive=0, stream=True)),
        lambda: client.chat(model=DEFAULT_MODEL_FILE, messages=hi, keep_alive=0, options=short),
        lambda: client.chat(model="default", messages=hi, keep_alive="0s", options=short),
        # The empty request, Ollama's way to load or (keep_alive 0) unload a model.
        lambda: client.generate(model=DEFAULT_MODEL_FILE, keep_alive=0),
        lambda: client.chat(model=DEFAULT_MODEL_FILE, messages=[], keep_alive=0),
        # Keeping the model longer is everybody's business too (it holds the memory against --idle-unload).
        lambda: client.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", keep_alive=-1, options=short),
        lambda: client.chat(model=DEFAULT_MODEL_FILE, messages=hi, keep_alive="5m", options=short),
    ]
    for attempt in attempts:
        with pytest.raises(ollama.ResponseError) as refused:
            attempt()
        assert refused.value.status_code == 403
        assert refused.value.error == KEEP_ALIVE_NEEDS_ADMIN
    # Any header the key comes in, any spelling of the value; the answer is Ollama's error shape.
    for headers in (bearer(KEY_B), {"x-api-key": KEY_B}):
        for keep_alive in (0, "0", "0m", "1ms", None):
            body = {"model": DEFAULT_MODEL_FILE, "prompt": "", "keep_alive": keep_alive, "stream": False}
            answer = httpx.post(f"{server.url}api/generate", json=body, headers=headers, timeout=60)
            if keep_alive is None:  # no keep_alive: the load request for the loaded model is fine
                assert answer.status_code == 200 and answer.json()["done_reason"] == "load", answer.text
            else:
                assert answer.status_code == 403 and answer.json() == {"error": KEEP_ALIVE_NEEDS_ADMIN}
    assert_still_loaded(server)
    # Without keep_alive the same key is served as usual.
    reply = client.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", options=short)
    assert reply.done and reply.eval_count
    assert_still_loaded(server)


@pytest.mark.slow
def test_keep_alive_in_an_openai_request_is_not_an_unload(server: Server) -> None:
    """OpenAI's protocol has no keep_alive: the field is ignored like any other unknown one."""
    client = openai_client(server, KEY_A)
    chat = client.chat.completions.create(
        model=DEFAULT_MODEL_FILE,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        extra_body={"keep_alive": 0},
    )
    assert chat.choices[0].message.content is not None
    completion = client.completions.create(
        model=DEFAULT_MODEL_FILE, prompt="Hi", max_tokens=3, extra_body={"keep_alive": "0s"}
    )
    assert completion.choices[0].text is not None
    assert_still_loaded(server)


# -- switching the model ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_non_admin_key_cannot_switch_the_model_by_any_name(server: Server) -> None:
    oai = openai_client(server, KEY_A)
    oll = ollama_client(server, KEY_A)
    hi = [{"role": "user", "content": "Hi"}]
    for name in (OTHER_MODEL, "other-model", "other-model:latest", "OTHER-MODEL.GGUF"):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            oai.chat.completions.create(model=name, messages=hi, max_tokens=3)  # type: ignore[arg-type]
        assert refused.value.code == "admin_required" and "admin key" in refused.value.message
        with pytest.raises(openai.PermissionDeniedError):
            oai.completions.create(model=name, prompt="Hi", max_tokens=3)
        for attempt in (
            partial(oll.generate, model=name, prompt="Hi", options={"num_predict": 3}),
            partial(oll.chat, model=name, messages=hi, options={"num_predict": 3}),
            partial(oll.generate, model=name),  # the empty request: "load this model"
            partial(oll.chat, model=name, messages=[]),
        ):
            with pytest.raises(ollama.ResponseError) as denied:
                attempt()
            assert denied.value.status_code == 403 and "admin key" in denied.value.error
    # Names that are no listed model are a 404, whatever they point at.
    for name in ("../other-model.gguf", str(server.config.models_dir / OTHER_MODEL), "nothing-here"):
        with pytest.raises(openai.NotFoundError):
            oai.chat.completions.create(model=name, messages=hi, max_tokens=3)  # type: ignore[arg-type]
    assert_still_loaded(server)


@pytest.mark.slow
def test_the_internal_load_and_unload_need_the_admin_key(server: Server) -> None:
    url = f"{server.url}v1/internal/model"
    attempts = [
        ("/load", {"model": OTHER_MODEL}),
        ("/load", {"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 512}}),
        ("/unload", None),
    ]
    for key in (KEY_A, KEY_B):
        for path, body in attempts:
            refused = httpx.post(url + path, json=body, headers=bearer(key), timeout=60)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "admin_key_required"
    assert_still_loaded(server)
    assert httpx.get(url, headers=bearer(KEY_A)).json()["settings"]["n_ctx"] == 2048


@pytest.mark.slow
def test_ollamas_model_management_is_not_served_to_anyone(server: Server) -> None:
    client = ollama_client(server, KEY_A)
    for attempt in (
        lambda: client.delete(DEFAULT_MODEL_FILE),
        lambda: client.copy(DEFAULT_MODEL_FILE, "copy"),
        lambda: client.pull(DEFAULT_MODEL_FILE),
        lambda: client.create(model="mine", from_=OTHER_MODEL),
    ):
        with pytest.raises(ollama.ResponseError) as refused:
            attempt()
        assert refused.value.status_code == 404 and "does not manage models" in refused.value.error
    assert_still_loaded(server)


# -- stop and the queue: each key its own -------------------------------------------------------------------


def stream(
    server: Server, key: str, path: str, body: dict[str, Any], seen: list[str], done: threading.Event
) -> None:
    """Stream a long generation with ``key``, noting each line, until the server ends it."""
    try:
        with (
            httpx.Client(timeout=300, headers=bearer(key)) as client,
            client.stream("POST", f"{server.url}{path}", json=body) as response,
        ):
            for line in response.iter_lines():
                if line:
                    seen.append(line)
    finally:
        done.set()


def start_stream(
    server: Server, key: str, path: str, body: dict[str, Any]
) -> tuple[list[str], threading.Event]:
    seen: list[str] = []
    done = threading.Event()
    threading.Thread(target=stream, args=(server, key, path, body, seen, done), daemon=True).start()
    return seen, done


def internal(key: str, server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}v1/internal", headers=bearer(key), timeout=60)


@pytest.mark.slow
def test_each_key_stops_and_sees_only_its_own_generations(server: Server) -> None:
    a, b, admin = internal(KEY_A, server), internal(KEY_B, server), internal(ADMIN_KEY, server)
    a_seen, a_done = start_stream(server, KEY_A, "v1/completions", {**LONG, "ban_eos_token": True})
    eventually(lambda: a_seen, "A's generation runs")
    a_id = json.loads(a_seen[0][len("data: ") :])["id"]

    # B can neither stop A's generation by its id nor with a stop-everything.
    assert b.post("/stop", json={"id": a_id}).json() == {"cancelled": 0}
    assert b.post("/stop").json() == {"cancelled": 0}
    count = len(a_seen)
    eventually(lambda: len(a_seen) > count + 2, "A's generation goes on")
    assert not a_done.is_set()

    # Everybody sees the running job; only its owner (and an admin) its request id.
    running = b.get("/queue").json()["running"]
    assert (running["source"], running["state"], running["position"]) == ("api", "running", 0)
    assert running["request_id"] is None and running["mine"] is False
    own = a.get("/queue").json()["running"]
    assert (own["id"], own["request_id"], own["mine"]) == (running["id"], a_id, True)
    assert admin.get("/queue").json()["running"]["request_id"] == a_id

    # B's own generation (through Ollama's API) waits behind A's: B sees it as its own, A does not.
    ollama_body = {
        "model": DEFAULT_MODEL_FILE,
        "prompt": "Once upon a time",
        "options": {"num_predict": 1500},
    }
    _, b_done = start_stream(server, KEY_B, "api/generate", ollama_body)
    b_view = eventually(lambda: (q := b.get("/queue").json())["queued"] and q, "B's request waits")
    [waiting] = b_view["queued"]
    assert waiting["mine"] is True and waiting["request_id"].startswith("ollama-")
    assert b_view["running"]["request_id"] is None
    [hidden] = a.get("/queue").json()["queued"]
    assert hidden["request_id"] is None and hidden["mine"] is False and hidden["position"] == 1

    # B's stop-everything cancels B's own request only.
    assert b.post("/stop").json() == {"cancelled": 1}
    assert b_done.wait(timeout=60)
    assert not a_done.is_set() and a.get("/queue").json()["running"]["request_id"] == a_id

    # A stops its own.
    assert a.post("/stop", json={"id": a_id}).json() == {"cancelled": 1}
    assert a_done.wait(timeout=60)
    eventually(lambda: a.get("/queue").json()["running"] is None, "the engine is free")

    # An admin stops anyone's.
    again_seen, again_done = start_stream(server, KEY_A, "v1/completions", {**LONG, "ban_eos_token": True})
    eventually(lambda: again_seen, "A's second generation runs")
    assert admin.post("/stop").json() == {"cancelled": 1}
    assert again_done.wait(timeout=60)
    for client in (a, b, admin):
        client.close()
    assert_still_loaded(server)


# -- what an admin key still does (last: it unloads and reloads the model) -----------------------------------


@pytest.mark.slow
def test_the_admin_key_unloads_and_only_the_idle_unloaded_model_comes_back_for_others(server: Server) -> None:
    admin = ollama_client(server, ADMIN_KEY)
    user = ollama_client(server, KEY_A)
    hi = [{"role": "user", "content": "Hi"}]
    try:
        # keep_alive 0 on an admin's request: unloaded once the reply is done, as Ollama does (an idle unload).
        admin.generate(model=DEFAULT_MODEL_FILE, prompt="Hi", keep_alive=0, options={"num_predict": 3})
        eventually(lambda: loaded(server) is None, "the admin's keep_alive 0 unloads the model")
        with pytest.raises(ollama.ResponseError) as refused:
            user.chat(model=OTHER_MODEL, messages=hi, options={"num_predict": 3})
        assert refused.value.status_code == 403 and loaded(server) is None
        # The model the admin chose comes back for anyone who uses it, "default" included.
        reply = openai_client(server, KEY_A).chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert reply.model == DEFAULT_MODEL_FILE and loaded(server) == DEFAULT_MODEL_FILE

        # The admin's empty request with keep_alive 0 unloads at once; that is no idle unload: nothing comes
        # back without the admin key.
        unloaded = admin.generate(model=DEFAULT_MODEL_FILE, keep_alive=0)
        assert unloaded.done_reason == "unload" and loaded(server) is None
        with pytest.raises(ollama.ResponseError) as denied:
            user.generate(model=DEFAULT_MODEL_FILE)
        assert denied.value.status_code == 403 and "admin key" in denied.value.error
        assert loaded(server) is None
    finally:
        restore = {"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 2048}}
        url = f"{server.url}v1/internal/model/load"
        assert httpx.post(url, json=restore, headers=bearer(ADMIN_KEY), timeout=120).status_code == 200
    assert_still_loaded(server)


# -- units --------------------------------------------------------------------------------------------------


class FakeJob:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_a_caller_stops_its_own_jobs_and_an_admin_anyones() -> None:
    jobs = ApiJobs()
    a_job, b_job, anonymous_job = FakeJob(), FakeJob(), FakeJob()
    jobs.add("id-a", a_job, owner="a")
    jobs.add("id-b", b_job, owner="b")
    jobs.add("id-none", anonymous_job, owner=None)
    b = Caller("b", admin=False)
    assert jobs.cancel("id-a", b) == 0 and not a_job.cancelled  # someone else's: as an unknown id
    assert jobs.cancel("no-such-id", b) == 0
    assert jobs.cancel(None, b) == 1 and b_job.cancelled
    assert not jobs.belongs_to("id-b", b)  # stopped requests are forgotten
    assert jobs.cancel(None, Caller(None, admin=False)) == 1 and anonymous_job.cancelled
    assert jobs.cancel(None, Caller("someone", admin=True)) == 1 and a_job.cancelled
    assert jobs.ids() == []


def test_without_keys_every_caller_is_one_admin() -> None:
    """No auth middleware or no key configured: today's behaviour, every caller sees and stops everything."""
    caller = Caller.of(object())
    assert caller == Caller(None, admin=True) and caller.owns(None) and caller.may_stop("anyone")
    jobs = ApiJobs()
    jobs.add("id-1", FakeJob())
    jobs.add("id-2", FakeJob(), owner="a")
    assert jobs.cancel(None, caller) == 2


def test_the_queue_view_hides_other_clients_request_ids() -> None:
    jobs = ApiJobs()
    jobs.add("cmpl-a", FakeJob(), owner="a")
    jobs.add("cmpl-b", FakeJob(), owner="b")
    snapshot = QueueSnapshot(
        activity="generating",
        running=QueuedJob("1", "api", "cmpl-a", 0, "running", 3.0),
        queued=(
            QueuedJob("2", "page", None, 1, "queued", 1.0),
            QueuedJob("3", "api", "cmpl-b", 2, "queued", 0.5),
        ),
    )
    seen_by_b = queue_view(snapshot, "m.gguf", jobs, Caller("b", admin=False))
    assert seen_by_b.running is not None
    assert (seen_by_b.running.request_id, seen_by_b.running.mine, seen_by_b.running.waited_s) == (
        None,
        False,
        3.0,
    )
    page, own = seen_by_b.queued
    assert (page.source, page.request_id, page.mine) == ("page", None, False)
    assert (own.request_id, own.mine, own.position) == ("cmpl-b", True, 2)
    seen_by_admin = queue_view(snapshot, "m.gguf", jobs, Caller("x", admin=True))
    assert seen_by_admin.running is not None and seen_by_admin.running.request_id == "cmpl-a"
    assert [entry.request_id for entry in seen_by_admin.queued] == [None, "cmpl-b"]
    assert not any(entry.mine for entry in [seen_by_admin.running, *seen_by_admin.queued])


def test_keep_alive_needs_an_admin_and_the_client_id_hides_the_key() -> None:
    for value in (0, "0s", "1s", -1, "5m", "nonsense"):
        with pytest.raises(ApiError) as refused:
            allowed_keep_alive(value, admin=False)
        assert refused.value.status == 403 and refused.value.message == KEEP_ALIVE_NEEDS_ADMIN
    assert allowed_keep_alive(None, admin=False) is None
    assert allowed_keep_alive("1m", admin=True) == 60.0
    ident = client_id(KEY_A)
    assert ident is not None and len(ident) == 16 and KEY_A not in ident and ident != client_id(KEY_B)
    assert client_id(None) is None
