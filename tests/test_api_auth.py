"""API keys, admin keys, the page password, CORS and the bind-address check, against a real `webui serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.servers import Server
from webui.api.auth import (
    AccessPolicy,
    AuthConfigError,
    collect_keys,
    exposure_problem,
    is_loopback,
    parse_page_auth,
    path_kind,
    presented_key,
)
from webui.cli import main
from webui.config import AppConfig
from webui.provision import DEFAULT_MODEL_FILE

if TYPE_CHECKING:
    from playwright.sync_api import Browser

USER_KEY = "user-key-1f3a"
ENV_KEY = "env-key-77c2"
ADMIN_KEY = "admin-key-9b0d"
PAGE_USER, PAGE_PASSWORD = "alice", "open-sesame-42"
ORIGIN = "http://allowed.example"
SECRETS = (USER_KEY, ENV_KEY, ADMIN_KEY, PAGE_PASSWORD)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Server]:
    """Exposed (--listen) and therefore fully protected: keys from flags and the environment, a page password."""
    args = ["--listen", "--api-key", USER_KEY, "--admin-key", ADMIN_KEY, "--cors-origin", ORIGIN]
    args += ["--page-auth", f"{PAGE_USER}:{PAGE_PASSWORD}"]
    running = Server(
        tmp_path_factory.mktemp("auth"),
        model=default_model_path,
        extra_args=args,
        extra_env={"PALABRE_API_KEYS": f"other-key, {ENV_KEY}"},
    )
    running.start()
    yield running
    running.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def has_route(server: Server, path: str) -> bool:
    schema = httpx.get(f"{server.url}openapi.json").json()
    return path in schema["paths"]


# -- API keys ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_api_refuses_requests_without_a_valid_key(server: Server) -> None:
    url = f"{server.url}v1/internal/model"
    for headers in ({}, bearer("wrong-key"), {"x-api-key": "wrong-key"}, {"Authorization": USER_KEY}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401, headers
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert "API key" in error["message"] and "wrong-key" not in response.text
        assert response.headers["www-authenticate"] == "Bearer"
    # A route that does not exist is refused the same way: nothing is revealed without a key.
    assert httpx.post(f"{server.url}v1/no-such-route").status_code == 401


@pytest.mark.slow
def test_api_accepts_every_configured_key(server: Server) -> None:
    url = f"{server.url}v1/internal/model"
    for headers in (bearer(USER_KEY), bearer(ENV_KEY), bearer(ADMIN_KEY), {"x-api-key": USER_KEY}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200, headers
        assert response.json()["name"] == DEFAULT_MODEL_FILE


@pytest.mark.slow
def test_the_openai_client_authenticates_with_its_api_key(server: Server) -> None:
    import openai

    client = openai.OpenAI(api_key=USER_KEY, base_url=f"{server.url}v1", max_retries=0)
    info = client.get("/internal/model", cast_to=httpx.Response).json()
    assert info["loaded"] is True
    wrong = openai.OpenAI(api_key="wrong-key", base_url=f"{server.url}v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.get("/internal/model", cast_to=httpx.Response)
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    if not has_route(server, "/v1/models"):
        pytest.skip("the OpenAI routes (/v1/models) are not installed yet")
    assert DEFAULT_MODEL_FILE in [model.id for model in client.models.list()]
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


@pytest.mark.slow
def test_ollama_paths_need_the_key_too_and_answer_in_ollamas_shape(server: Server) -> None:
    import ollama

    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url.rstrip("/")).list()
    assert refused.value.status_code == 401 and "API key" in str(refused.value.error)
    if has_route(server, "/api/tags"):
        listed = ollama.Client(host=server.url.rstrip("/"), headers=bearer(USER_KEY)).list()
        assert listed.models


@pytest.mark.slow
def test_loading_and_unloading_need_an_admin_key(server: Server) -> None:
    url = f"{server.url}v1/internal/model"
    body = {"model": DEFAULT_MODEL_FILE, "settings": {"n_ctx": 2048}}
    for path, payload in (("/load", body), ("/unload", None)):
        refused = httpx.post(url + path, json=payload, headers=bearer(USER_KEY))
        assert refused.status_code == 403, refused.text
        assert "admin key" in refused.json()["error"]["message"]
    assert httpx.get(url, headers=bearer(USER_KEY)).json()["loaded"] is True  # nothing happened
    loaded = httpx.post(url + "/load", json=body, headers=bearer(ADMIN_KEY), timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["name"] == DEFAULT_MODEL_FILE


# -- the page, public paths, CORS, logs ----------------------------------------------------------------------


@pytest.mark.slow
def test_page_asks_for_its_password(server: Server) -> None:
    for path in ("", "config", "gradio_api/info"):
        refused = httpx.get(server.url + path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == 'Basic realm="Palabre"'
        assert httpx.get(server.url + path, auth=(PAGE_USER, "wrong")).status_code == 401
        assert httpx.get(server.url + path, auth=("bob", PAGE_PASSWORD)).status_code == 401
    page = httpx.get(server.url, auth=(PAGE_USER, PAGE_PASSWORD), follow_redirects=True)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    # The page password is not an API key, and an API key does not open the page.
    assert httpx.get(f"{server.url}v1/internal/model", auth=(PAGE_USER, PAGE_PASSWORD)).status_code == 401
    assert httpx.get(server.url, headers=bearer(USER_KEY)).status_code == 401


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_works_in_a_browser_that_logs_in(server: Server, browser: Browser) -> None:
    """Gradio's own requests (config, queue, streamed events) all pass with the browser's Basic credentials."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(http_credentials={"username": PAGE_USER, "password": PAGE_PASSWORD})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server.url)
        page.wait_for_function(  # filled by a page-load event: the event pipeline works behind the password
            "() => document.querySelector('#chat-status')?.innerText.includes('Loaded:')"
        )
    finally:
        context.close()
    anonymous = browser.new_context()
    try:
        with pytest.raises(PlaywrightError, match="AUTH"):  # headless Chromium cannot ask: it gives up
            anonymous.new_page().goto(server.url)
    finally:
        anonymous.close()


@pytest.mark.slow
def test_health_and_the_schema_stay_public(server: Server) -> None:
    assert httpx.get(f"{server.url}health").json()["model"] == DEFAULT_MODEL_FILE
    assert "/v1/internal/tokenize" in httpx.get(f"{server.url}openapi.json").json()["paths"]


@pytest.mark.slow
def test_cors_preflight_for_configured_origins_only(server: Server) -> None:
    url = f"{server.url}v1/internal/tokenize"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(url, headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    foreign = httpx.options(url, headers={"Origin": "http://elsewhere.example", **preflight})
    # Refused by the web policy before CORS (webui/api/web_policy.py), never reflected.
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    # A browser client can read the refusal, and the real request once it sends the key.
    refused = httpx.post(url, json={"text": "hi"}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    ok = httpx.post(url, json={"text": "hi"}, headers={"Origin": ORIGIN, **bearer(USER_KEY)})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.slow
def test_secrets_never_reach_the_log(server: Server) -> None:
    httpx.get(f"{server.url}v1/internal/model", headers=bearer("wrong-key"))
    log = server.log.read_text()
    assert "serving on http://0.0.0.0:" in log
    for secret in SECRETS:
        assert secret not in log


# -- exposure: --listen -------------------------------------------------------------------------------------


@pytest.fixture
def no_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PALABRE_API_KEYS", "PALABRE_ADMIN_KEYS", "PALABRE_PAGE_AUTH"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_auth_env")
def test_listen_without_protection_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "--no-model", "--user-data-dir", str(tmp_path)]
    assert main([*base, "--listen"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: refusing to serve on 0.0.0.0")
    assert "API key" in error and "page password" in error and "--insecure" in error

    assert main([*base, "--host", "192.168.7.7", "--api-key", USER_KEY]) == 2
    error = capsys.readouterr().err
    assert "192.168.7.7" in error and "page password" in error and "API key (" not in error
    assert USER_KEY not in error

    assert main([*base, "--listen", "--page-auth", "no-colon"]) == 2
    assert "USER:PASS" in capsys.readouterr().err
    assert main([*base, "--listen", "--page-user", "alice"]) == 2
    assert "--page-password" in capsys.readouterr().err


@pytest.mark.slow
def test_listen_with_insecure_starts_unprotected(tmp_path: Path) -> None:
    server = Server(tmp_path, extra_args=["--listen", "--insecure"])
    server.start()
    try:
        info = httpx.get(f"{server.url}v1/internal/model")
        assert info.status_code == 200 and info.json()["loaded"] is False
        assert httpx.get(server.url).status_code == 200
        assert "serving on http://0.0.0.0:" in server.log.read_text()
    finally:
        server.stop()


# -- units ----------------------------------------------------------------------------------------------------


def test_exposure_rules() -> None:
    protected = {"api_keys": ("k",), "page_auth": ("u", "p")}
    for host in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
        assert exposure_problem(AppConfig(host=host)) is None
    for host in ("0.0.0.0", "::", "192.168.1.2", "my-laptop.local"):
        assert not is_loopback(host), host
        assert exposure_problem(AppConfig(host=host)) is not None
        assert exposure_problem(AppConfig(host=host, insecure=True)) is None
        assert exposure_problem(AppConfig(host=host, **protected)) is None  # type: ignore[arg-type]
    # An admin key alone protects model loading, not the API.
    assert exposure_problem(AppConfig(host="0.0.0.0", admin_keys=("a",), page_auth=("u", "p"))) is not None


def test_secrets_are_not_in_the_config_repr() -> None:
    config = AppConfig(api_keys=(USER_KEY,), admin_keys=(ADMIN_KEY,), page_auth=(PAGE_USER, PAGE_PASSWORD))
    for secret in (USER_KEY, ADMIN_KEY, PAGE_PASSWORD):
        assert secret not in repr(config)


def test_key_and_page_auth_parsing() -> None:
    assert collect_keys(["a", " b "], "c, ,a,d", what="API key") == ("a", "b", "c", "d")
    assert collect_keys(None, None, what="API key") == ()
    with pytest.raises(AuthConfigError):
        collect_keys(["two words"], None, what="API key")
    assert parse_page_auth(None, None, None) is None
    assert parse_page_auth("u", "p:with:colons", None) == ("u", "p:with:colons")
    assert parse_page_auth(None, None, "u:p:q") == ("u", "p:q")
    for bad in (("u", None, None), (None, "p", None), ("u", "p", "u:p"), (None, None, "nocolon")):
        with pytest.raises(AuthConfigError):
            parse_page_auth(*bad)


def test_request_classification() -> None:
    assert [path_kind(p) for p in ("/v1/models", "/v1", "/api/tags", "/health", "/openapi.json")] == [
        "api",
        "api",
        "api",
        "public",
        "public",
    ]
    assert [path_kind(p) for p in ("/", "/gradio_api/info", "/v1x", "/apis", "/api-docs-x")] == ["page"] * 5
    assert presented_key({"authorization": "Bearer  k1 "}) == "k1"
    assert presented_key({"authorization": "bearer k1", "x-api-key": "k2"}) == "k1"
    assert presented_key({"authorization": "Basic abc", "x-api-key": "k2"}) == "k2"
    assert presented_key({}) is None


def test_admin_flag_rules() -> None:
    open_policy = AccessPolicy.from_config(AppConfig(api_keys=("k",)))
    assert open_policy.is_admin(None) and open_policy.is_admin("k")  # no admin key: every caller is admin
    policy = AccessPolicy.from_config(AppConfig(api_keys=("k",), admin_keys=("a",)))
    assert policy.is_api_key("k") and policy.is_api_key("a") and not policy.is_api_key("x")
    assert policy.is_admin("a") and not policy.is_admin("k") and not policy.is_admin(None)
    admin_only = AccessPolicy.from_config(AppConfig(admin_keys=("a",)))
    assert not admin_only.api_required and not admin_only.is_admin("k")
