"""The Host / Origin / content-type policy's rules, without a server (webui/api/web_policy.py)."""

from __future__ import annotations

import pytest

from webui.api.auth import AuthConfigError, allowed_hosts, exposure_problem
from webui.api.web_policy import UploadBudget, WebPolicy, same_origin, split_host
from webui.config import AppConfig

PORT = 7860


def policy(**config: object) -> WebPolicy:
    return WebPolicy.from_config(AppConfig(**config), machine_names=["mybox"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost:7860", ("localhost", 7860)),
        ("LocalHost", ("localhost", None)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:7860", ("::1", 7860)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("a:b", None),
        ("a:99999", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


def test_the_default_setup_answers_to_loopback_names_and_addresses_only() -> None:
    rules = policy()
    for host in ("localhost:7860", "127.0.0.1:7860", "[::1]:7860", "127.0.0.5:7860", "192.168.1.4:7860"):
        assert rules.host_allowed(host, PORT), host
    # DNS rebinding: any name an attacker controls, and the *.localhost names browsers send to loopback.
    for host in ("evil.example:7860", "x.localhost:7860", "localhost.evil.example", "mybox:7860", "x"):
        assert not rules.host_allowed(host, PORT), host
    assert not rules.host_allowed("localhost:8080", PORT)  # the right name on another port
    assert not rules.host_allowed("local host", PORT)
    assert rules.host_allowed(None, PORT)  # no Host: not a browser


def test_serving_to_the_network_adds_the_host_given_and_the_machines_name() -> None:
    assert policy(host="palabre.lan").host_allowed("palabre.lan:7860", PORT)
    listening = policy(host="0.0.0.0")
    assert listening.host_allowed("mybox:7860", PORT) and listening.host_allowed("mybox.local:7860", PORT)
    assert not listening.host_allowed("evil.example:7860", PORT)


def test_allowed_hosts_with_and_without_a_port_and_the_wildcard() -> None:
    rules = policy(allowed_hosts=("chat.example.org", "proxy.lan:8443"))
    assert rules.host_allowed("chat.example.org", PORT) and rules.host_allowed("chat.example.org:443", PORT)
    assert rules.host_allowed("proxy.lan:8443", PORT) and not rules.host_allowed("proxy.lan:9000", PORT)
    assert not rules.host_allowed("other.example.org", PORT)
    assert policy(allowed_hosts=("*",)).host_allowed("anything.example:1", PORT)


def test_allowed_host_flags_are_checked() -> None:
    assert allowed_hosts(["Chat.Example.org", "chat.example.org"], "a.lan:8080, ") == (
        "chat.example.org",
        "a.lan:8080",
    )
    for bad in ("http://x", "a b", "x:port", "[::1"):
        with pytest.raises(AuthConfigError, match="--allowed-host"):
            allowed_hosts([bad], None)


def test_same_origin_compares_name_and_port_with_the_schemes_default() -> None:
    assert same_origin("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert same_origin("http://localhost", "localhost:80")
    assert same_origin("https://chat.example.org", "chat.example.org")
    assert same_origin("http://[::1]:7860", "[::1]:7860")
    assert not same_origin("http://127.0.0.1:9000", "127.0.0.1:7860")  # another port: another origin
    assert not same_origin("http://localhost:7860", "127.0.0.1:7860")
    assert not same_origin("null", "127.0.0.1:7860")
    assert not same_origin("file://", "127.0.0.1:7860")
    assert not same_origin("http://127.0.0.1:7860", None)


def test_foreign_origins_pass_only_when_listed() -> None:
    rules = policy(cors_origins=("http://allowed.example",))
    assert rules.origin_allowed("http://allowed.example", "127.0.0.1:7860")
    assert rules.origin_allowed("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert not rules.origin_allowed("http://evil.example", "127.0.0.1:7860")
    assert policy(cors_origins=("*",)).origin_allowed("http://evil.example", "127.0.0.1:7860")


def test_upload_budget_refuses_past_the_window_and_says_when_to_retry() -> None:
    budget = UploadBudget(1000, window_s=600)
    assert budget.take(400) is None and budget.take(400) is None
    wait = budget.take(400)
    assert wait is not None and 590 <= wait <= 600
    assert budget.take(200) is None  # what still fits is taken


def test_admin_keys_without_a_page_password_refuse_to_start_unless_the_page_is_opened() -> None:
    problem = exposure_problem(AppConfig(admin_keys=("a",)))
    assert problem is not None and "--page-auth" in problem and "--open-page" in problem
    assert exposure_problem(AppConfig(admin_keys=("a",), open_page=True)) is None
    assert exposure_problem(AppConfig(admin_keys=("a",), page_auth=("u", "p"))) is None
    assert exposure_problem(AppConfig(api_keys=("k",))) is None  # no admin key: nothing the page bypasses
