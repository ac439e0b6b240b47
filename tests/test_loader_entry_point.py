"""A loader installed by another package (entry point ``palabre.loaders``) is chosen for its files like a
built-in one: by the registry, `webui models list` and the Model tab, with no change to Palabre's code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.servers import Server, open_page
from tests.support.toy_loader import LOADER_NAME, PACKAGE, install_toy_loader
from webui.config import PROJECT_ROOT
from webui.core.engine import Engine
from webui.core.models.discovery import discover_models, infer_loader
from webui.core.params import GenerationParams
from webui.core.registry import LoaderRegistry

REPLY = "Hello from the toy loader"


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the toy loader package as pip would install it."""
    return install_toy_loader(tmp_path_factory.mktemp("site"))


def user_data_with_toy_model(root: Path) -> Path:
    models = root / "user_data" / "models"
    models.mkdir(parents=True)
    (models / "hello.toy").write_text(REPLY)
    (models / "notes.txt").write_text("not a model: no loader claims it")
    return root / "user_data"


@pytest.fixture
def installed(toy_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoaderRegistry]:
    """The installed loaders of this process, the toy one among them (its module is forgotten after)."""
    monkeypatch.syspath_prepend(str(toy_site))
    yield LoaderRegistry.from_entry_points()
    sys.modules.pop(PACKAGE, None)


def env_with(toy_site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(toy_site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_the_registry_lists_it_next_to_the_built_in_loaders(installed: LoaderRegistry) -> None:
    assert {LOADER_NAME, "llama.cpp", "transformers", "gptq", "awq", "remote"} <= set(installed.names())
    assert installed.get(LOADER_NAME).settings_model.model_fields.keys() == {"shout", "context_length"}


def test_its_files_are_listed_and_given_to_it(installed: LoaderRegistry, tmp_path: Path) -> None:
    models = user_data_with_toy_model(tmp_path) / "models"
    entries = discover_models(models, installed)
    assert [(entry.name, entry.kind) for entry in entries] == [("hello.toy", "file")]
    assert infer_loader(entries[0], installed) == LOADER_NAME
    assert discover_models(models, LoaderRegistry({})) == []  # without the loader: not a model


def test_the_engine_loads_it_with_settings_validated_once(installed: LoaderRegistry, tmp_path: Path) -> None:
    models = user_data_with_toy_model(tmp_path) / "models"
    engine = Engine(installed, models)
    try:
        state = engine.load("hello.toy", settings={"shout": "true"})  # as the CLI passes it: a string
        assert state.loader == LOADER_NAME and state.entry.kind == "file"
        toy = installed.get(LOADER_NAME)
        received = toy.loads[-1]  # type: ignore[attr-defined]
        assert received is state.settings and isinstance(received, toy.settings_model)
        assert received.model_dump()["shout"] is True
        job = engine.submit("say hello", GenerationParams(max_new_tokens=50))
        assert job.text() == REPLY.upper()
        assert job.finish_reason == "stop" and job.stats is not None and job.stats.prompt_tokens == 2
    finally:
        engine.close()


def models_list(user_data: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "webui", "models", "list", "--user-data-dir", str(user_data)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_models_list_shows_its_files_with_it(toy_site: Path, tmp_path: Path) -> None:
    user_data = user_data_with_toy_model(tmp_path)
    lines = models_list(user_data, env_with(toy_site)).splitlines()
    assert [line.split()[0] for line in lines] == ["hello.toy"]
    assert lines[0].split()[-1] == LOADER_NAME
    assert "hello.toy" not in models_list(user_data, {})  # not installed: not offered


@pytest.mark.browser
@pytest.mark.slow
def test_the_model_tab_offers_it_loads_it_and_chats(browser: Browser, toy_site: Path, tmp_path: Path) -> None:
    user_data_with_toy_model(tmp_path)
    with (
        Server(tmp_path, extra_env=env_with(toy_site)).running() as server,
        open_page(browser, server.url) as page,
    ):
        page.get_by_role("tab", name="Model").click()
        page.locator("#model-dropdown input").click()
        page.get_by_role("option", name="hello.toy", exact=True).click()
        page.wait_for_function(
            f"() => document.querySelector('#loader-dropdown input')?.value === '{LOADER_NAME}'"
        )
        assert page.locator(f"#setting-{LOADER_NAME}-shout").is_visible()  # its own settings panel
        page.locator("#model-load").click()
        # "Loaded hello.toy with toy in 0.0 s. ..." right after the load, "Loaded: hello.toy (toy). ..." later.
        page.wait_for_function(
            "() => /Loaded:? hello\\.toy (with toy|\\(toy\\))/"
            ".test(document.querySelector('#model-status')?.innerText ?? '')"
        )

        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input textarea").fill("Who is there?")
        page.locator("#chat-send").click()
        page.wait_for_function(
            "(reply) => [...document.querySelectorAll('#chatbot [data-testid=\"bot\"]')]"
            ".some((bot) => bot.innerText.includes(reply))",
            arg=REPLY,
        )
