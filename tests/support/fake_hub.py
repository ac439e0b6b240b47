"""A local stand-in for the Hugging Face Hub's HTTP API (the parts huggingface_hub calls to list and download).

It serves, from memory, a few repositories of small files:
- ``GET /api/models/{repo}/tree/{revision}`` (the listing, with sizes, git oids and LFS sha256),
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{revision}`` (model info with siblings),
- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` with the headers huggingface_hub expects (X-Repo-Commit,
  ETag, X-Linked-Etag, X-Linked-Size, Content-Length, Accept-Ranges) and ``Range`` -> 206,
- the Hub's errors (404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound).

Test knobs: ``throttle`` (bytes per second), ``die_after`` (close the connection after that many body bytes of a
GET, once), ``corrupt`` (file paths served with flipped bytes while the listing keeps the true sha256), and
``served`` (body bytes sent per file path) so a test can tell a resumed download from a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024  # files this big or bigger are "LFS" files (the Hub's limit is 10 MB; ours is small)
SEND_BLOCK = 16 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class FakeRepo:
    """One model repository: its files and branches (branch name -> {path: bytes})."""

    repo_id: str
    branches: dict[str, dict[str, bytes]]
    private_token: str | None = None  # when set, only requests with this bearer token see the repo

    def commit(self, branch: str) -> str:
        return hashlib.sha1(f"{self.repo_id}@{branch}".encode()).hexdigest()

    def resolve(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision in self.branches:
            return self.commit(revision), self.branches[revision]
        for branch, files in self.branches.items():
            if self.commit(branch) == revision:
                return revision, files
        return None


def tree_entry(path: str, data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
    if len(data) >= LFS_THRESHOLD:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


@dataclass
class FakeHub:
    """The server's state; the handler reads it (guarded by ``lock``)."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    throttle: int | None = None
    die_after: int | None = None
    corrupt: set[str] = field(default_factory=set)
    served: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def add_repo(self, repo_id: str, files: dict[str, bytes], **branches: dict[str, bytes]) -> FakeRepo:
        repo = FakeRepo(repo_id, {"main": files, **branches})
        self.repos[repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bytes_served(self, path: str) -> int:
        with self.lock:
            return self.served.get(path, 0)


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rest>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)(?:/(?P<what>tree|revision)/(?P<rest>.*))?$")


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read hub.requests instead
            return

        # -- helpers ---------------------------------------------------------------------------------------

        def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, repo_id: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return None
            if repo.private_token and self.headers.get("authorization") != f"Bearer {repo.private_token}":
                return None
            return repo

        def _lookup(self, repo_id: str, revision: str) -> tuple[FakeRepo, str, dict[str, bytes]] | None:
            repo = self._repo(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            resolved = repo.resolve(revision)
            if resolved is None:
                self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return None
            return repo, resolved[0], resolved[1]

        # -- API -----------------------------------------------------------------------------------------

        def _api(self, path: str) -> None:
            match = _API.match(path)
            if not match:
                self._error(404, None, "Not found")
                return
            what, rest = match["what"], unquote(match["rest"] or "")
            revision = rest.split("/")[0] if what == "tree" and rest else (rest or "main")
            if what == "tree" and rest.startswith("refs/"):
                revision = "/".join(rest.split("/")[:3])
            found = self._lookup(match["repo"], revision)
            if found is None:
                return
            repo, commit, files = found
            if what == "tree":
                entries = [tree_entry(p, d) for p, d in sorted(files.items())]
                folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
                self._json([{"type": "directory", "path": d, "oid": "0" * 40} for d in folders] + entries)
                return
            siblings = []
            for p, d in sorted(files.items()):
                entry = {"rfilename": p, "size": len(d), "blobId": git_blob_id(d)}
                if len(d) >= LFS_THRESHOLD:
                    entry["lfs"] = {
                        "sha256": hashlib.sha256(d).hexdigest(),
                        "size": len(d),
                        "pointerSize": 134,
                    }
                siblings.append(entry)
            self._json(
                {
                    "_id": repo.repo_id,
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": commit,
                    "private": repo.private_token is not None,
                    "siblings": siblings,
                    "tags": [],
                    "downloads": 0,
                    "likes": 0,
                }
            )

        # -- files ---------------------------------------------------------------------------------------

        def _resolve(self, path: str) -> None:
            match = _RESOLVE.match(path)
            if not match:
                self._error(404, None, "Not found")
                return
            rest = unquote(match["rest"])
            revision, _, filename = rest.partition("/")
            if revision == "refs" and filename.count("/") >= 2:
                kind, number, filename = filename.split("/", 2)
                revision = f"refs/{kind}/{number}"
            found = self._lookup(match["repo"], revision)
            if found is None:
                return
            _repo, commit, files = found
            if filename not in files:
                self._error(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
                return
            data = files[filename]
            entry = tree_entry(filename, data)
            etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
            with hub.lock:
                corrupt = filename in hub.corrupt
            if corrupt:
                data = bytes(b ^ 0xFF for b in data)
            start, end, status = 0, len(data), 200
            wanted = self.headers.get("Range")
            if wanted and self.command == "GET":
                range_match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
                if range_match:
                    start = int(range_match[1])
                    end = min(int(range_match[2]) + 1, len(data)) if range_match[2] else len(data)
                    if start >= len(data):
                        self._error(416, None, "Range Not Satisfiable")
                        return
                    status = 206
            self.send_response(status)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{entry["oid"]}"')
            if "lfs" in entry:
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            self._send_body(filename, data[start:end])

        def _send_body(self, filename: str, body: bytes) -> None:
            with hub.lock:
                limit, hub.die_after = hub.die_after, None  # dies once, then serves normally
                throttle = hub.throttle
            sent = 0
            began = time.monotonic()
            while sent < len(body):
                block = body[sent : sent + SEND_BLOCK]
                if limit is not None and sent + len(block) > limit:
                    block = block[: max(limit - sent, 0)]
                try:
                    self.wfile.write(block)
                    self.wfile.flush()
                except OSError:
                    return
                sent += len(block)
                with hub.lock:
                    hub.served[filename] = hub.served.get(filename, 0) + len(block)
                if limit is not None and sent >= limit:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if throttle:
                    ahead = sent / throttle - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

        def _route(self) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/api/"):
                self._api(path)
            else:
                self._resolve(path)

        def do_GET(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route()

    return Handler


def gguf_like(quant: str, size: int) -> bytes:
    """Bytes that start like a GGUF file (magic + version) and are unique per quantization."""
    seed = hashlib.sha256(quant.encode()).digest()
    body = (seed * (size // len(seed) + 1))[: size - 8]
    return b"GGUF" + (3).to_bytes(4, "little") + body


def standard_hub() -> FakeHub:
    """A hub with a GGUF repository (several quantizations, one split in three) and a Transformers repository."""
    hub = FakeHub()
    gguf = {
        "README.md": b"# Tiny GGUF\n",
        "tiny-model-Q4_K_M.gguf": gguf_like("Q4_K_M", 300_000),
        "tiny-model-Q8_0.gguf": gguf_like("Q8_0", 500_000),
        "tiny-model-IQ4_XS.gguf": gguf_like("IQ4_XS", 250_000),
        "tiny-model-F16-00001-of-00003.gguf": gguf_like("F16a", 200_000),
        "tiny-model-F16-00002-of-00003.gguf": gguf_like("F16b", 200_000),
        "tiny-model-F16-00003-of-00003.gguf": gguf_like("F16c", 100_000),
    }
    hub.add_repo("palabre-test/tiny-GGUF", gguf, dev={"tiny-model-Q4_K_M.gguf": gguf_like("dev", 10_000)})
    transformers = {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "config.json": json.dumps(
            {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 2048}
        ).encode(),
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "model.safetensors": bytes(range(256)) * 1000,
        "onnx/model.onnx": b"x" * 2000,
    }
    hub.add_repo("palabre-test/tiny-transformers", transformers)
    return hub
