"""A web page in the user's browser must not drive or read Palabre (issue 13), on the default setup.

The real server runs as everybody runs it: loopback, no keys. Attacks come two ways: requests crafted as a
browser would send them (httpx with the headers a browser adds), and a real Chromium page served from another
origin (another port, and a ``*.localhost`` name that browsers send to loopback). After each, the server is
asked (as a client without Origin) whether anything happened: the model is still loaded with its settings,
nothing is generating, the running generation still runs, no file was stored, nothing was read.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.support.page import send_and_watch, start_new_chat
from tests.support.servers import Server, free_port, open_page
from webui.config import PROJECT_ROOT
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = [pytest.mark.slow]

LONG = {"model": DEFAULT_MODEL_FILE, "prompt": "Once upon a time", "max_tokens": 1500, "stream": True}
CHAT = {"model": DEFAULT_MODEL_FILE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 400}
OLLAMA_UNLOAD = {
    "model": DEFAULT_MODEL_FILE,
    "messages": [{"role": "user", "content": "Hi"}],
    "keep_alive": 0,
}
LOAD = {"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 512}}
# Every state-changing route, with the body an attacker would send.
ATTACKS: list[tuple[str, dict[str, object] | None]] = [
    ("v1/chat/completions", CHAT),
    ("v1/completions", {**LONG, "stream": False}),
    ("api/chat", OLLAMA_UNLOAD),
    ("api/generate", {"model": DEFAULT_MODEL_FILE, "prompt": "", "keep_alive": 0}),
    ("v1/internal/model/load", LOAD),
    ("v1/internal/model/unload", None),
    ("v1/internal/stop", None),
    ("v1/internal/chat-prompt", {"messages": [{"role": "user", "content": "x"}]}),
]
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("web"), default_model_path).running() as running:
        yield running


def state(server: Server) -> dict[str, object]:
    """What a legitimate client sees: the loaded model, its context, and what the engine is doing."""
    model = httpx.get(f"{server.url}v1/internal/model").json()
    queue = httpx.get(f"{server.url}v1/internal/queue").json()
    settings = model.get("settings") or {}
    return {"model": model.get("name"), "n_ctx": settings.get("n_ctx"), "activity": queue["activity"]}


def uploaded_files(server: Server) -> list[Path]:
    temp = Path(server.env["GRADIO_TEMP_DIR"])
    return [p for p in temp.rglob("*") if p.is_file()] if temp.exists() else []


EXPECTED = {"model": DEFAULT_MODEL_FILE, "n_ctx": 2048, "activity": "idle"}


# -- crafted requests -----------------------------------------------------------------------------------------


def test_simple_cross_site_posts_are_refused_on_every_route(server: Server) -> None:
    origin = "http://127.0.0.1:1"  # another port is another origin
    for path, body in ATTACKS:
        data = json.dumps(body) if body is not None else None
        for content_type in SIMPLE_TYPES:
            headers = {"Origin": origin, "Content-Type": content_type} if data else {"Origin": origin}
            response = httpx.post(f"{server.url}{path}", content=data, headers=headers)
            assert response.status_code == 403, (path, content_type, response.text)
            assert "access-control-allow-origin" not in response.headers
            assert origin in response.text and "--cors-origin" in response.text
    # A browser that hides the origin ("Origin: null": sandboxed frames, file pages) is foreign too.
    assert httpx.post(f"{server.url}v1/internal/model/unload", headers={"Origin": "null"}).status_code == 403
    # Bodiless no-cors POSTs from a page that sends no Origin still carry Sec-Fetch-Site.
    marks = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert httpx.post(f"{server.url}v1/internal/model/unload", headers=marks).status_code == 403
    assert state(server) == EXPECTED


def test_json_endpoints_refuse_other_content_types_even_without_origin(server: Server) -> None:
    body = json.dumps({**CHAT, "max_tokens": 1})
    for content_type in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
        response = httpx.post(
            f"{server.url}v1/chat/completions", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["error"]["message"]
    response = httpx.post(f"{server.url}api/chat", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    # A browser's form post, marked as one, is refused even with the form type curl also uses.
    form = {"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(f"{server.url}api/chat", content=body, headers=form).status_code == 415
    assert state(server) == EXPECTED


def test_clients_without_origin_keep_working_including_ollamas_curl_examples(server: Server) -> None:
    answer = httpx.post(f"{server.url}v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=60)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["role"] == "assistant"
    # `curl http://localhost:11434/api/generate -d '{...}'` as in Ollama's README: form type, no browser marks.
    body = json.dumps(
        {"model": DEFAULT_MODEL_FILE, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    )
    curl = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "curl/8.5.0"}
    answer = httpx.post(f"{server.url}api/generate", content=body, headers=curl, timeout=60)
    assert answer.status_code == 200 and answer.json()["done"] is True
    # The page's own origin (same name and port) passes, as from the page itself.
    own = {"Origin": server.url.rstrip("/")}
    assert httpx.get(f"{server.url}v1/models", headers=own).status_code == 200
    for name in ("localhost", "127.0.0.1", "[::1]"):
        host = {"Host": f"{name}:{server.port}"}
        assert httpx.get(server.url, headers=host).status_code == 200, name
        assert httpx.get(f"{server.url}v1/models", headers=host).status_code == 200, name


def test_foreign_host_names_are_refused_everywhere(server: Server) -> None:
    for name in ("evil.example", "x.localhost", "localhost.evil.example"):
        for path in ("", "config", "gradio_api/info", "v1/models", "api/tags", "v1/internal/model"):
            response = httpx.get(f"{server.url}{path}", headers={"Host": f"{name}:{server.port}"})
            assert response.status_code == 403, (name, path)
            assert "--allowed-host" in response.text
        response = httpx.post(
            f"{server.url}v1/internal/model/unload",
            headers={"Host": f"{name}:{server.port}", "Origin": f"http://{name}:{server.port}"},
        )
        assert response.status_code == 403
    # Gradio reflects an Origin with credentials for localhost-like hosts: it must never be reached so.
    response = httpx.get(
        f"{server.url}config", headers={"Host": f"x.localhost:{server.port}", "Origin": "http://evil.example"}
    )
    assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    assert state(server) == EXPECTED


def test_foreign_origins_cannot_read_the_page_or_the_api(server: Server) -> None:
    origin = {"Origin": "http://evil.example"}
    for path in ("config", "gradio_api/info", "v1/models", "api/tags", "v1/internal/queue"):
        response = httpx.get(f"{server.url}{path}", headers=origin)
        assert response.status_code == 403, path
        assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{server.url}v1/chat/completions",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    # <img>/<script> loads send no Origin but say cross-site: only a top-level navigation passes.
    no_cors = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}
    assert httpx.get(f"{server.url}config", headers=no_cors).status_code == 403
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    page = httpx.get(server.url, headers=link)
    assert page.status_code == 200 and page.headers["x-frame-options"] == "SAMEORIGIN"
    framed = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
    assert httpx.get(server.url, headers=framed).status_code == 403


def test_a_foreign_stop_leaves_the_running_generation_running(server: Server) -> None:
    with httpx.stream("POST", f"{server.url}v1/completions", json=LONG, timeout=120) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            assert httpx.post(f"{server.url}v1/internal/stop", headers=headers).status_code == 403
        assert httpx.get(f"{server.url}v1/internal/queue").json()["activity"] == "generating"
        received = [line for _, line in zip(range(20), lines, strict=False) if line.startswith("data:")]
        assert len(received) >= 5 and "[DONE]" not in received[-1]  # it kept streaming
        assert httpx.post(f"{server.url}v1/internal/stop").json()["cancelled"] == 1  # its own client may


def test_uploads_from_other_origins_are_refused_and_nothing_is_stored(server: Server) -> None:
    before = uploaded_files(server)
    files = {"files": ("card.json", b'{"name": "x"}', "application/json")}
    for headers in ({"Origin": "http://evil.example"}, {"Host": f"x.localhost:{server.port}"}):
        response = httpx.post(f"{server.url}gradio_api/upload", files=files, headers=headers)
        assert response.status_code == 403
    assert uploaded_files(server) == before


# -- a real page on another origin ----------------------------------------------------------------------------

ATTACK_PAGE = """<!doctype html><html><body><script>
const target = TARGET, rebound = REBOUND;
const results = {};
async function attempt(name, fn) {
  try { const r = await fn(); results[name] = r === undefined ? 'sent' : r; }
  catch (e) { results[name] = 'error: ' + e.message; }
}
async function run() {
  const attacks = ATTACKS;
  for (const [path, body] of attacks) {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
      await attempt(`post ${path} ${type}`, () => fetch(target + '/' + path, {method: 'POST', mode: 'no-cors',
        headers: {'Content-Type': type}, body: body === null ? undefined : JSON.stringify(body)}).then(() => undefined));
    }
    await attempt(`rebound ${path}`, () => fetch(rebound + '/' + path, {method: 'POST', credentials: 'include',
        headers: {'Content-Type': 'application/json'}, body: body === null ? undefined : JSON.stringify(body)})
      .then(r => r.text()));
  }
  const form = new FormData();
  form.append('files', new Blob(['{"name": "planted"}'], {type: 'application/json'}), 'planted.json');
  await attempt('upload', () => fetch(target + '/gradio_api/upload', {method: 'POST', mode: 'no-cors', body: form})
    .then(() => undefined));
  await attempt('rebound upload', () => fetch(rebound + '/gradio_api/upload', {method: 'POST', body: form,
    credentials: 'include'}).then(r => r.text()));
  for (const path of ['config', 'gradio_api/info', 'v1/models', 'api/tags', 'v1/internal/model']) {
    await attempt(`read ${path}`, () => fetch(target + '/' + path).then(r => r.text()));
    await attempt(`read rebound ${path}`, () => fetch(rebound + '/' + path, {credentials: 'include'})
      .then(r => r.status + ' ' + r.text()));
  }
  // A form posted in a hidden frame: the classic cross-site request, no script involved.
  const frame = document.createElement('iframe'); frame.name = 'sink'; document.body.appendChild(frame);
  const f = document.createElement('form'); f.method = 'POST'; f.enctype = 'text/plain'; f.target = 'sink';
  f.action = target + '/api/chat';
  const field = document.createElement('input'); field.name = '{"model": "x", "keep_alive": 0, "pad": "';
  field.value = '"}'; f.appendChild(field); document.body.appendChild(f); f.submit();
  await new Promise(r => setTimeout(r, 1500));
  window.done = true;
}
window.results = results; run();
</script></body></html>"""


@pytest.fixture(scope="module")
def attacker_site(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[int]:
    """A static site on another port, answering to any name (127.0.0.1 and evil.localhost alike)."""
    root = tmp_path_factory.mktemp("attacker")
    page = (
        ATTACK_PAGE.replace("TARGET", json.dumps(server.url.rstrip("/")))
        .replace("REBOUND", json.dumps(f"http://x.localhost:{server.port}"))
        .replace("ATTACKS", json.dumps(ATTACKS))
    )
    (root / "attack.html").write_text(page)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", port), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield port
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.browser
@pytest.mark.parametrize("attacker_name", ["127.0.0.1", "evil.localhost"])
def test_a_page_on_another_origin_can_neither_drive_nor_read_palabre(
    browser: Browser, server: Server, attacker_site: int, attacker_name: str
) -> None:
    before = uploaded_files(server)
    with open_page(browser, f"http://{attacker_name}:{attacker_site}/attack.html") as page:
        page.wait_for_function("window.done === true", timeout=60_000)
        results: dict[str, str] = page.evaluate("window.results")
    assert results, "the attack page did not run"
    # Reads fail in the page itself: no answer is readable across origins.
    reads = {name: value for name, value in results.items() if name.startswith(("read", "rebound"))}
    assert reads and all(value.startswith("error:") for value in reads.values()), reads
    # And nothing happened on the server.
    assert state(server) == EXPECTED
    assert uploaded_files(server) == before
    # The rebinding name itself, opened as a page, is refused before Gradio sees it.
    with open_page(browser, f"http://{attacker_name}:{attacker_site}/attack.html") as page:
        response = page.goto(f"http://x.localhost:{server.port}/")
        assert response is not None and response.status == 403


@pytest.mark.browser
@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_the_page_still_chats_from_loopback_names(browser: Browser, server: Server, name: str) -> None:
    with open_page(browser, f"http://{name}:{server.port}/") as page:
        page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")
        start_new_chat(page)
        _, reply = send_and_watch(page, "Say hello.")
    assert reply  # the page's own requests (Gradio's queue, its event stream) all passed the policy
    assert state(server) == EXPECTED


@pytest.mark.browser
def test_the_page_chats_over_ipv6_loopback(
    browser: Browser, tmp_path: Path, default_model_path: Path
) -> None:
    server = Server(tmp_path, default_model_path, extra_args=["--host", "::1"])
    server.url = f"http://[::1]:{server.port}/"
    with server.running(), open_page(browser, server.url) as page:
        page.wait_for_function("() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')")
        _, reply = send_and_watch(page, "Say hello.")
        assert reply
        assert httpx.get(f"{server.url}v1/models", headers={"Origin": "http://[::1]:1"}).status_code == 403


def test_admin_keys_without_a_page_password_refuse_to_start(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "webui", "serve", "--no-model", "--admin-key", "a-key"]
    command += ["--user-data-dir", str(tmp_path / "user_data"), "--port", str(free_port())]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--page-auth" in result.stderr and "--open-page" in result.stderr and "a-key" not in result.stderr


def test_uploads_are_limited_per_window_and_deleted_when_the_server_stops(
    tmp_path: Path, default_model_path: Path
) -> None:
    server = Server(tmp_path, default_model_path, extra_args=["--max-upload-mb", "0.5"])
    with server.running():
        statuses = []
        for index in range(5):
            files = {"files": (f"card{index}.json", b"x" * 450_000, "application/json")}
            response = httpx.post(f"{server.url}gradio_api/upload", files=files)
            statuses.append(response.status_code)
        # 4 x 0.5 MB per 10 minutes: the fifth file of 450 kB no longer fits.
        assert statuses == [200, 200, 200, 200, 429], statuses
        assert "per 10 minutes" in response.text and "Try again in" in response.text
        assert len(uploaded_files(server)) == 4
        too_big = {"files": ("big.json", b"x" * 700_000, "application/json")}
        response = httpx.post(f"{server.url}gradio_api/upload", files=too_big)
        assert response.status_code == 413 and "0.5 MB" in response.text
    assert uploaded_files(server) == []  # nothing is left once the server has stopped
    # Told that the page may stay open, it starts (and the API still needs the admin key to load).
    with Server(tmp_path, extra_args=["--admin-key", "a-key", "--open-page"]).running() as server:
        assert httpx.post(f"{server.url}v1/internal/model/unload").status_code == 403
