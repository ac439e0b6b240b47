"""Exposure: what a network client can reach and learn.

Loopback by default (the real listening socket is checked), keys compared in constant time, no secret in any
log or file even when a hostile remote engine or Hub echoes the key back, uploads limited in size,
trust_remote_code off by default and never turned on by a client. The non-loopback refusal and the key checks
themselves are in test_api_auth.py.
"""

from __future__ import annotations

import ast
import hmac
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Server, free_port
from webui.api import auth
from webui.api.auth import AccessPolicy
from webui.cli import build_parser, config_from_args
from webui.config import PROJECT_ROOT, AppConfig
from webui.core.registry import LoaderRegistry
from webui.provision import DEFAULT_MODEL_FILE
from webui.server import MAX_UPLOAD_BYTES

API_KEY = "sk-palabre-api-5d1e7f"
ADMIN_KEY = "sk-palabre-admin-0c9a44"
PAGE_PASSWORD = "page-pass-31b8e2"
REMOTE_KEY = "sk-remote-engine-8f2b61"
HF_TOKEN = "hf_tokenSecret6c0d9a7e"
SECRETS = (API_KEY, ADMIN_KEY, PAGE_PASSWORD, REMOTE_KEY, HF_TOKEN)


# -- loopback by default ---------------------------------------------------------------------------------------


def listening_addresses(pid: int) -> set[str]:
    """The local addresses (hex, as /proc/net shows them) of the sockets ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1])
    return found


@pytest.mark.slow
def test_serve_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    assert AppConfig().host == "127.0.0.1"
    assert config_from_args(build_parser().parse_args(["serve"])).host == "127.0.0.1"
    server = Server(tmp_path)
    server.start()
    try:
        assert server.process is not None
        addresses = listening_addresses(server.process.pid)
    finally:
        server.stop()
    assert addresses == {f"0100007F:{server.port:04X}"}  # 127.0.0.1:port and nothing else


# -- keys in constant time -------------------------------------------------------------------------------------


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    config = AppConfig(api_keys=("k1", "k2"), admin_keys=("a1",), page_auth=("u", "p"))
    policy = AccessPolicy.from_config(config)
    for key, valid in (("k1", True), ("a1", True), ("wrong", False), ("k1-longer", False)):
        calls.clear()
        assert policy.is_api_key(key) is valid
        assert len(calls) == 3, "every configured key is compared, without stopping at a match"
        assert all(len(a) == len(b) == 32 for a, b in calls), "digests: the key's length does not leak"
    calls.clear()
    assert policy.is_admin("a1") and not policy.is_admin("k1")
    assert len(calls) == 2
    calls.clear()
    assert policy.page_allowed("Basic dTpw")  # u:p
    assert not policy.page_allowed("Basic dTpx")
    assert len(calls) == 2


SECRET_WORDS = ("key", "password", "secret", "token", "digest", "credential")


def test_no_secret_is_compared_with_equals_anywhere_in_the_server() -> None:
    """An ``==`` on a key, password or token leaks through timing; only hmac.compare_digest may compare them."""

    def secret_name(node: ast.expr) -> str | None:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        lowered = name.lower()
        if any(word in lowered for word in SECRET_WORDS) and not lowered.endswith(
            ("_name", "tokens", "keys")
        ):
            return name
        return None

    found = []
    api_files = sorted((PROJECT_ROOT / "webui" / "api").glob("*.py"))
    for path in [*api_files, PROJECT_ROOT / "loaders" / "remote.py"]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare) or not any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                continue
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) for side in sides):
                continue  # against a literal (e.g. a scheme name or None): nothing secret on both sides
            names = [name for side in sides if (name := secret_name(side))]
            if names:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


# -- no secrets in logs ----------------------------------------------------------------------------------------


class EchoingRemote(BaseHTTPRequestHandler):
    """A hostile remote engine / Hub: refuses every request and echoes the credentials it was sent."""

    def _refuse(self) -> None:
        presented = self.headers.get("Authorization", "") + " " + self.headers.get("x-api-key", "")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {presented}", "type": "auth"}})
        data = body.encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _refuse

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def echoing_remote() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), EchoingRemote)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def secrets_in(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def user_files_text(root: Path) -> str:
    """Every file written under ``root`` (the server's user_data, its temp files and its log)."""
    return "\n".join(
        p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".gguf"
    )


@pytest.mark.slow
def test_no_secret_reaches_a_log_a_file_or_an_error_message(
    tmp_path: Path, default_model_path: Path, echoing_remote: str
) -> None:
    server = Server(
        tmp_path,
        default_model_path,
        extra_args=["--api-key", API_KEY, "--admin-key", ADMIN_KEY, "--page-auth", f"alice:{PAGE_PASSWORD}"],
        extra_env={"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": echoing_remote, "OPENAI_API_KEY": REMOTE_KEY},
    )
    server.start()
    answers: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            key = {"Authorization": f"Bearer {API_KEY}"}
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            requests: list[Callable[[], httpx.Response]] = [
                lambda: client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}x"}),
                lambda: client.get("/api/tags", headers={"x-api-key": ADMIN_KEY[:-1]}),
                lambda: client.get("/", auth=("alice", PAGE_PASSWORD + "!")),
                lambda: client.post(
                    "/v1/chat/completions", headers=key, json={"model": "nope", "messages": []}
                ),
                lambda: client.post("/v1/completions", headers=key, content=b"{not json"),
                lambda: client.post(
                    "/v1/chat/completions",
                    headers=key,
                    json={
                        "model": DEFAULT_MODEL_FILE,
                        "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 4,
                    },
                ),
                # The remote engine refuses the key and echoes it back: the echo must not reach the client.
                lambda: client.post(
                    "/v1/internal/model/load",
                    headers=admin,
                    json={
                        "model": "remote-model",
                        "loader": "remote",
                        "settings": {"base_url": f"{echoing_remote}/v1", "api_key": REMOTE_KEY},
                    },
                ),
                lambda: client.post(
                    "/v1/internal/model/load",
                    headers=admin,
                    json={
                        "model": "remote-model",
                        "loader": "remote",
                        "settings": {"base_url": f"{echoing_remote}/v1"},
                    },
                ),
                lambda: client.get("/v1/internal/model", headers=key),
            ]
            for request in requests:
                response = request()
                answers.append(f"{response.status_code} {response.text}")
    finally:
        server.stop()
    assert any(answer.startswith("401") for answer in answers)
    assert any(answer.startswith("200") and "chat.completion" in answer for answer in answers)
    assert any("refused the API key" in answer for answer in answers), "\n".join(
        answers
    )  # echoed, not relayed
    assert secrets_in("\n".join(answers)) == [], answers
    assert secrets_in(server.log.read_text(errors="replace")) == []
    assert secrets_in(user_files_text(tmp_path)) == []


@pytest.mark.slow
def test_a_hub_token_never_reaches_the_terminal(tmp_path: Path, echoing_remote: str) -> None:
    env = {
        "HF_TOKEN": HF_TOKEN,
        "HF_ENDPOINT": echoing_remote,
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    for command in (["models", "files", "org/private-model"], ["models", "download", "org/private-model"]):
        result = subprocess.run(
            [sys.executable, "-m", "webui", *command, "--user-data-dir", str(tmp_path / "user_data")],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "token" in result.stderr.lower()  # the refusal is explained ...
        assert secrets_in(result.stdout + result.stderr) == []  # ... without the token


# -- uploads, trust_remote_code --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("exposure"))
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_too_large_upload_is_refused_with_a_clear_message(plain_server: Server) -> None:
    url = f"{plain_server.url}gradio_api/upload"
    small = httpx.post(url, files={"files": ("card.json", b'{"name": "x"}', "application/json")}, timeout=60)
    assert small.status_code == 200, small.text
    big = httpx.post(
        url, files={"files": ("big.json", b"x" * (MAX_UPLOAD_BYTES + 1), "application/json")}, timeout=120
    )
    assert big.status_code == 413, big.text
    assert "maximum allowed size" in big.text and str(MAX_UPLOAD_BYTES) in big.text  # the limit is named
    uploads = plain_server.config.user_data_dir.parent / "gradio-tmp"
    assert not any(p.stat().st_size > MAX_UPLOAD_BYTES for p in uploads.rglob("*") if p.is_file())


@pytest.mark.slow
def test_serve_max_upload_mb_sets_the_page_upload_limit(tmp_path: Path) -> None:
    server = Server(tmp_path, extra_args=["--max-upload-mb", "0.5"])
    server.start()
    try:
        url = f"{server.url}gradio_api/upload"
        under = httpx.post(url, files={"files": ("a.json", b"x" * 400_000, "application/json")}, timeout=60)
        assert under.status_code == 200, under.text
        over = httpx.post(url, files={"files": ("b.json", b"x" * 600_000, "application/json")}, timeout=60)
        assert over.status_code == 413, over.text
        assert str(512 * 1024) in over.text  # the limit is named, in bytes
    finally:
        server.stop()


@pytest.mark.parametrize("value", ["0", "-3", "lots", "inf"])
def test_a_bad_max_upload_mb_is_refused_by_the_cli(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--max-upload-mb", value])
    assert exit_info.value.code == 2
    assert "--max-upload-mb" in capsys.readouterr().err


def test_trust_remote_code_is_off_by_default_for_every_loader() -> None:
    registry = LoaderRegistry.from_entry_points()
    having = []
    for name in registry.names():
        fields = registry.get(name).settings_model.model_fields
        if "trust_remote_code" in fields:
            having.append(name)
            assert fields["trust_remote_code"].default is False, name
    assert "transformers" in having


@pytest.mark.slow
def test_a_client_cannot_turn_trust_remote_code_on(plain_server: Server) -> None:
    for value in (True, "true", 1, "yes", "on", "t", 1.0):
        response = httpx.post(
            f"{plain_server.url}v1/internal/model/load",
            json={"model": "any", "loader": "transformers", "settings": {"trust_remote_code": value}},
            timeout=60,
        )
        assert response.status_code == 403, response.text
        assert "trust_remote_code" in response.json()["error"]["message"]
