"""The page's built-in tools with hostile arguments (tool arguments are model output): the calculator never
evaluates code, the file tool never leaves its folders, the fetch tool refuses private addresses (also after
DNS and on redirects), results are capped, and a failing tool is a result the model reads."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import hostile_files as hostile
from webui.core.agent import Toolbox, ToolError, available_tools_for_api, cap_text, run_tool
from webui.core.agent.calculator import Calculator, calculate
from webui.core.agent.clock import CurrentTime
from webui.core.agent.files import ReadFile
from webui.core.agent.web import FetchPage, is_public

CANARY = "CANARY-outside-the-allowed-folder"

# -- calculator ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", "14"),
        ("(1 + 2) ** 3", "27"),
        ("7 / 2", "3.5"),
        ("sqrt(16) + abs(-2)", "6"),
        ("2^10", "1024"),
    ],
)
def test_calculator_computes(expression: str, value: str) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd').read()",
        "9 ** 9 ** 9",
        "10 ** 100000",
        "factorial(100000)",
        "1 / 0",
        "lambda: 1",
        "'a' * 10",
        "x",
        "1 +",
        "1" * 600,
    ],
)
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression: str) -> None:
    with pytest.raises(ToolError):
        calculate(expression)


def test_a_tool_error_is_a_result_the_model_reads() -> None:
    result, failed = run_tool(Calculator(), '{"expression": "1/0"}')
    assert failed and result.startswith("Error:") and "zero" in result
    result, failed = run_tool(Calculator(), "not json")
    assert failed and "JSON" in result
    result, failed = run_tool(Calculator(), "[1, 2]")
    assert failed and "object" in result


def test_current_time_reads_the_clock() -> None:
    tool = CurrentTime(lambda: datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert tool.run({}).startswith("Wednesday 2026-03-04 05:06:07")


def test_results_are_capped() -> None:
    assert cap_text("x" * 50, 10).startswith("x" * 10 + "\n[… cut")
    assert cap_text("short", 10) == "short"


# -- read_file ----------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    (allowed / "notes").mkdir(parents=True)
    (allowed / "notes" / "todo.txt").write_text("buy milk\n")
    (tmp_path / "escaped").write_text(CANARY)
    (tmp_path / "secret.txt").write_text(CANARY)
    return allowed, tmp_path


def test_read_file_reads_inside_the_allowed_folder(folders: tuple[Path, Path]) -> None:
    allowed, _ = folders
    tool = ReadFile([allowed])
    assert tool.run({"path": "notes/todo.txt"}) == "buy milk\n"
    assert tool.run({"path": str(allowed / "notes" / "todo.txt")}) == "buy milk\n"
    assert "todo.txt" in tool.run({"path": "notes"})


@pytest.mark.parametrize("name", [*hostile.TRAVERSAL_NAMES, "../secret.txt", "notes/../../secret.txt"])
def test_read_file_never_leaves_its_folders(folders: tuple[Path, Path], name: str) -> None:
    allowed, _outside = folders
    result, _ = run_tool(ReadFile([allowed]), {"path": name})
    assert CANARY not in result


def test_read_file_does_not_follow_symlinks_out(folders: tuple[Path, Path]) -> None:
    allowed, outside = folders
    (allowed / "link.txt").symlink_to(outside / "secret.txt")
    (allowed / "linkdir").symlink_to(outside)
    tool = ReadFile([allowed])
    for path in ("link.txt", "linkdir/secret.txt", "linkdir", str(allowed / "link.txt")):
        result, failed = run_tool(tool, {"path": path})
        assert failed and CANARY not in result and "outside the allowed folders" in result


def test_read_file_caps_size_and_refuses_binary(folders: tuple[Path, Path]) -> None:
    allowed, _ = folders
    (allowed / "big.txt").write_text("y" * 5000)
    (allowed / "blob.bin").write_bytes(b"\x00\x01\x02")
    tool = ReadFile([allowed], limit=1000)
    text = tool.run({"path": "big.txt"})
    assert text.startswith("y" * 1000) and "cut" in text and "y" * 1001 not in text
    with pytest.raises(ToolError, match="not a text file"):
        tool.run({"path": "blob.bin"})


def test_read_file_without_folders_reads_nothing() -> None:
    result, failed = run_tool(ReadFile([]), {"path": "/etc/hostname"})
    assert failed and "No folder is allowed" in result


# -- fetch_page ---------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list[str]
    routes: dict[str, tuple[int, dict[str, str], bytes]]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"no"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_site() -> Iterator[tuple[int, list[str], dict[str, tuple[int, dict[str, str], bytes]]]]:
    """A loopback HTTP server standing in for both a public site and a private service."""
    hits: list[str] = []
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    handler = type("Handler", (_Handler,), {"hits": hits, "routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits, routes
    finally:
        server.shutdown()
        server.server_close()


PUBLIC_IP = "93.184.216.34"  # a public address the test's "network" maps to the local server


def _public_fetcher(port: int, **kwargs: Any) -> FetchPage:
    """A fetcher whose DNS says public.test is a public address, and whose network reaches the local server
    for that address only (the vetting is the real one)."""

    def resolver(host: str, _: int) -> list[str]:
        return {
            "public.test": [PUBLIC_IP],
            "sneaky.test": ["127.0.0.1"],
            "meta.test": ["169.254.169.254"],
        }.get(host, ["127.0.0.1"] if host == "localhost" else [])

    def connector(address: tuple[str, int], timeout: float) -> socket.socket:
        host = "127.0.0.1" if address[0] == PUBLIC_IP else address[0]
        return socket.create_connection((host, port), timeout=timeout)

    return FetchPage(resolver=resolver, connector=connector, **kwargs)


def test_fetch_reads_a_public_page_as_text(local_site: Any) -> None:
    port, hits, routes = local_site
    page = b"<html><head><title>Hi</title><script>evil()</script></head><body><p>Hello <b>world</b></p></body></html>"
    routes["/page"] = (200, {"Content-Type": "text/html; charset=utf-8"}, page)
    text = _public_fetcher(port).run({"url": f"http://public.test:{port}/page"})
    assert "# Hi" in text and "Hello world" in text and "evil" not in text
    assert hits == ["/page"]


def test_fetch_caps_the_body_and_refuses_binary(local_site: Any) -> None:
    port, _, routes = local_site
    routes["/big"] = (200, {"Content-Type": "text/plain"}, b"z" * 50_000)
    routes["/img"] = (200, {"Content-Type": "image/png"}, b"\x89PNG")
    text = _public_fetcher(port, body_limit=1000).run({"url": f"http://public.test:{port}/big"})
    assert text.startswith("z" * 1000) and "z" * 1001 not in text and "cut" in text
    with pytest.raises(ToolError, match="not text"):
        _public_fetcher(port).run({"url": f"http://public.test:{port}/img"})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://sneaky.test:{port}/secret",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://meta.test/latest/meta-data/",
        "http://[::1]:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://0.0.0.0:{port}/secret",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        "ftp://public.test/",
        "http://user:pw@public.test/",
    ],
)
def test_fetch_refuses_private_addresses(local_site: Any, url: str) -> None:
    port, hits, routes = local_site
    routes["/secret"] = (200, {"Content-Type": "text/plain"}, CANARY.encode())
    result, failed = run_tool(_public_fetcher(port), {"url": url.format(port=port)})
    assert failed and CANARY not in result
    assert hits == []  # nothing reached the private service


def test_fetch_refuses_a_redirect_to_loopback(local_site: Any) -> None:
    port, hits, routes = local_site
    routes["/go"] = (302, {"Location": f"http://127.0.0.1:{port}/secret"}, b"")
    routes["/go-name"] = (301, {"Location": f"http://sneaky.test:{port}/secret"}, b"")
    routes["/secret"] = (200, {"Content-Type": "text/plain"}, CANARY.encode())
    for path in ("/go", "/go-name"):
        result, failed = run_tool(_public_fetcher(port), {"url": f"http://public.test:{port}{path}"})
        assert failed and CANARY not in result and "refused" in result
    assert hits == ["/go", "/go-name"]  # the redirects were read, the private target never


def test_fetch_follows_a_public_redirect(local_site: Any) -> None:
    port, _hits, routes = local_site
    routes["/old"] = (302, {"Location": "/new"}, b"")
    routes["/new"] = (200, {"Content-Type": "text/plain"}, b"moved here")
    assert _public_fetcher(port).run({"url": f"http://public.test:{port}/old"}) == "moved here"


def test_the_real_resolver_refuses_localhost(local_site: Any) -> None:
    port, hits, _routes = local_site
    result, failed = run_tool(FetchPage(), {"url": f"http://localhost:{port}/"})
    assert failed and "refused" in result and hits == []


def test_public_addresses() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address("93.184.216.34"))
    for private in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "169.254.169.254", "::1", "fe80::1", "fc00::1"):
        assert not is_public(ipaddress.ip_address(private))


# -- the toolbox ---------------------------------------------------------------------------------------------


def test_toolbox_defaults_are_safe(tmp_path: Path) -> None:
    box = Toolbox(tmp_path)
    names = [tool.spec.name for tool in box.enabled()]
    assert "fetch_page" not in names and "calculator" in names
    assert available_tools_for_api(box) == [] and available_tools_for_api(None) == []
    box.update(enabled=[*names, "fetch_page"], folders=[str(tmp_path)], expose_to_api=True)
    again = Toolbox(tmp_path)  # the choices are saved
    assert "fetch_page" in [t.spec.name for t in again.enabled()]
    assert again.settings.allowed_folders == [str(tmp_path)]
    assert [t.spec.name for t in again.available_tools_for_api()] == [t.spec.name for t in again.enabled()]
    assert [t.spec.name for t in again.enabled(["calculator", "nope"])] == ["calculator"]


def test_switching_tools_keeps_the_choices_about_servers_that_are_down(tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text("disabled: [fetch_page, weather_tool]\n")
    box = Toolbox(tmp_path)  # no server runs: weather_tool is not known now
    box.update(enabled=["calculator"])
    assert "weather_tool" in Toolbox(tmp_path).settings.disabled


def test_a_corrupt_settings_file_gives_the_safe_defaults(tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text("disabled: [\n")
    box = Toolbox(tmp_path)
    assert box.settings.disabled == ["fetch_page"] and not box.settings.expose_to_api
