"""Names that become paths: traversal payloads through the core stores, the CLI, the API and the page's upload.

Every name either is refused with a clear message or becomes a file directly inside its own folder; nothing
outside ``user_data/`` is read or written. Canary files outside hold values that would show if they were read.
Symlinks: a *model* the user linked into models/ is used (the downloader links Hugging Face cache files), but a
name from a request never resolves outside models/, and preset/template/personality files that are symlinks
leading out of their folder are not followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.support import hostile_files as hostile
from tests.support.fakes import ScriptedLoader
from tests.support.servers import Server
from webui.cli import EXIT_USAGE, main
from webui.config import PROJECT_ROOT
from webui.core.characters.store import Character, CharacterError, CharacterStore
from webui.core.models.discovery import ModelNotFoundError, discover_models, find_model
from webui.core.params import GenerationParams
from webui.core.paths import InvalidNameError, path_in, validate_name
from webui.core.presets import PresetError, PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.templates.store import TemplateError, TemplateStore
from webui.provision import DEFAULT_MODEL_FILE

NAMES = hostile.TRAVERSAL_NAMES
CLEAR_ERRORS = (InvalidNameError, PresetError, TemplateError, CharacterError)
SECRET = "0.123"  # the temperature in every canary preset outside user_data


def snapshot(root: Path) -> dict[Path, str]:
    """Every file under ``root`` (links not followed) with a digest of its content."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Path]:
    """tmp/user_data (the stores' folders) next to tmp/outside (canaries); checks nothing outside changed."""
    user_data = tmp_path / "user_data"
    for folder in ("presets", "instruction-templates", "characters", "models"):
        (user_data / folder).mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    for stem in ("escaped", "passwd"):
        (outside / f"{stem}.yaml").write_text(f"temperature: {SECRET}\nname: secret\ncontext: secret\n")
        (outside / f"{stem}.jinja").write_text(f"SECRET {SECRET}")
    (tmp_path / "escaped.yaml").write_text(f"temperature: {SECRET}\n")
    (outside / "real.gguf").write_bytes(hostile.gguf_bytes([]))
    # The tests' own inputs go to inputs/, the page's scratch files to scratch/; everything else must stay.
    own = {user_data, tmp_path / "inputs", tmp_path / "scratch"}

    def outside_files() -> dict[Path, str]:
        return {p: d for p, d in snapshot(tmp_path).items() if not own & set(p.parents)}

    before = outside_files()
    (tmp_path / "inputs").mkdir()
    yield user_data
    assert outside_files() == before, "a file outside user_data was written or removed"


def stores(user_data: Path) -> tuple[PresetStore, TemplateStore, CharacterStore]:
    templates = TemplateStore(PROJECT_ROOT / "instruction-templates", user_data / "instruction-templates")
    return (
        PresetStore(PROJECT_ROOT / "presets", user_data / "presets"),
        templates,
        CharacterStore(PROJECT_ROOT / "characters", user_data / "characters", templates),
    )


def refused_or_inside(action: Callable[[], object], folder: Path, name: str) -> None:
    """``action`` either fails with a clear error, or whatever it wrote lies directly inside ``folder``."""
    before = set(folder.iterdir())
    try:
        action()
    except CLEAR_ERRORS as exc:
        assert str(exc), name
        return
    for path in set(folder.iterdir()) - before:
        assert path.resolve().parent == folder.resolve(), (name, path)
        assert path.name.startswith(name), (name, path)


@pytest.mark.parametrize("name", NAMES)
def test_the_file_tool_never_reads_outside_its_allowed_folder(layout: Path, name: str) -> None:
    """The page's read_file tool takes its path from the model: every traversal name, as a path relative to
    the allowed folder or through a link out of it, reads nothing outside (issue 16)."""
    from webui.core.agent import run_tool
    from webui.core.agent.files import ReadFile

    allowed = layout / "notes"
    allowed.mkdir()
    (allowed / "linked").symlink_to(layout.parent / "outside")
    tool = ReadFile([allowed])
    for path in (
        name,
        f"linked/{name}",
        f"linked/{name}.yaml",
        "linked/escaped.yaml",
        "../outside/escaped.yaml",
    ):
        result, _ = run_tool(tool, {"path": path})
        assert SECRET not in result, (name, path)


def test_every_traversal_name_is_refused_by_the_one_validator() -> None:
    accepted = []
    for name in NAMES:
        try:
            validate_name(name)
            accepted.append(name)
        except InvalidNameError as exc:
            assert str(exc)
    assert accepted == ["%2e%2e%2fescaped"]  # percent signs are literal: the name stays one file name


@pytest.mark.parametrize("name", NAMES)
def test_store_operations_stay_in_their_folder(layout: Path, name: str) -> None:
    presets, templates, characters = stores(layout)
    refused_or_inside(lambda: presets.save(name, GenerationParams()), presets.user_dir, name)
    refused_or_inside(lambda: templates.save(name, "{{ messages }}"), templates.user_dir, name)
    character = Character.model_construct(name=name, greeting="hi", context="ctx")
    refused_or_inside(lambda: characters.save(character), characters.user_dir, name)
    for load in (presets.load, templates.get, characters.load):
        with contextlib.suppress(*CLEAR_ERRORS):
            loaded = load(name)
            assert SECRET not in repr(loaded)
    for delete in (presets.delete, templates.delete, characters.delete):
        with contextlib.suppress(*CLEAR_ERRORS):
            delete(name)
    with contextlib.suppress(*CLEAR_ERRORS):
        characters.export(name, "yaml")
    assert not (layout.parent / "exports").exists()


def link_outside(user_data: Path) -> None:
    outside = user_data.parent / "outside"
    (user_data / "presets" / "linked.yaml").symlink_to(outside / "escaped.yaml")
    (user_data / "instruction-templates" / "linked.jinja").symlink_to(outside / "escaped.jinja")
    (user_data / "characters" / "linked.yaml").symlink_to(outside / "escaped.yaml")
    (user_data / "presets" / "dirlink.yaml").symlink_to(outside)


def test_symlinks_out_of_user_folders_are_not_followed(
    layout: Path, caplog: pytest.LogCaptureFixture
) -> None:
    presets, templates, characters = stores(layout)
    link_outside(layout)
    with caplog.at_level(logging.WARNING, logger="palabre.paths"):
        assert "linked" not in presets.names() and "linked" not in templates.names()
    assert "linked" not in characters.names() and "dirlink" not in presets.names()
    # The log says why a linked file is missing from the list, naming the link and where it leads.
    skipped = [r.getMessage() for r in caplog.records if "linked.yaml" in r.getMessage()]
    assert skipped and "outside" in skipped[0] and "escaped.yaml" in skipped[0]
    with pytest.raises(PresetError, match="No preset named 'linked'"):
        presets.load("linked")
    with pytest.raises(TemplateError, match='No instruction template named "linked"'):
        templates.get("linked")
    with pytest.raises(CharacterError, match='No personality named "linked"'):
        characters.load("linked")
    # Saving under that name must not write through the link into the outside file.
    with pytest.raises(InvalidNameError, match="points outside"):
        presets.save("linked", GenerationParams(temperature=1.5))
    with pytest.raises(InvalidNameError, match="points outside"):
        templates.save("linked", "{{ messages }}")
    with pytest.raises(InvalidNameError, match="points outside"):
        characters.save(Character(name="linked", greeting="x", context="y"))
    with pytest.raises(PresetError):
        presets.delete("linked")
    assert (layout.parent / "outside" / "escaped.yaml").read_text().startswith(f"temperature: {SECRET}")


def test_a_model_the_user_linked_is_used_but_names_never_leave_models(layout: Path) -> None:
    models = layout / "models"
    outside = layout.parent / "outside"
    (models / "linked.gguf").symlink_to(outside / "real.gguf")
    assert [entry.name for entry in discover_models(models)] == ["linked.gguf"]
    assert find_model(models, "linked.gguf").path == models / "linked.gguf"
    # (A path given on the command line, `webui serve --model /x.gguf`, is the user's own choice; the API
    # accepts listed names only: see test_api_requests_with_traversal_names_get_clear_errors.)
    for name in ("../outside/real.gguf", "..\\outside\\real.gguf", "/etc/passwd", "%2e%2e%2freal.gguf"):
        with pytest.raises(ModelNotFoundError):
            find_model(models, name)


def test_path_in_refuses_a_name_whose_file_is_a_link_out(layout: Path) -> None:
    link_outside(layout)
    with pytest.raises(InvalidNameError, match="points outside"):
        path_in(layout / "presets", "linked", ".yaml")


# -- the CLI -------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def test_cli_characters_import_and_export_refuse_traversal_names(layout: Path, tmp_path: Path) -> None:
    card = tmp_path / "inputs" / "card.json"
    card.write_text(json.dumps({"name": "../../escaped", "description": "d", "first_mes": "hello"}))
    udd = str(layout)
    code, err = run_cli("characters", "import", str(card), "--user-data-dir", udd)
    assert code == 0, err  # the name inside a file is made safe, not refused
    saved = [p.name for p in (layout / "characters").iterdir()]
    assert saved == ["escaped.yaml"], saved
    for name in NAMES:
        if name == "%2e%2e%2fescaped":
            continue
        code, err = run_cli("characters", "import", str(card), "--name", name, "--user-data-dir", udd)
        assert code == EXIT_USAGE and err.startswith("error: "), (name, code, err)
        code, err = run_cli("characters", "export", name, "--format", "yaml", "--user-data-dir", udd)
        assert code == EXIT_USAGE and err.startswith("error: "), (name, code, err)
    assert [p.name for p in (layout / "characters").iterdir()] == ["escaped.yaml"]
    for (
        name
    ) in NAMES:  # `webui models inspect` takes a path on purpose (the user's own); none of these is one
        code, err = run_cli("models", "inspect", name, "--user-data-dir", udd)
        assert code == EXIT_USAGE and "not found" in err, (name, code, err)


# -- the page's upload (Character tab handler) ---------------------------------------------------------------


def test_upload_with_traversal_names_stays_in_the_characters_folder(layout: Path, tmp_path: Path) -> None:
    from webui.ui.character_tab import CharacterTab

    presets, templates, characters = stores(layout)
    service = Service(
        LoaderRegistry({"scripted": ScriptedLoader}),
        models_dir=layout / "models",
        presets=presets,
        templates=templates,
        characters=characters,
    )
    tab = CharacterTab(service, scratch_dir=tmp_path / "scratch")
    try:
        upload = tmp_path / "inputs" / "..%2f..%2fevil.json"
        upload.write_text(json.dumps({"name": "..\\..\\evil", "description": "d", "first_mes": "hello"}))
        status = tab.import_file(str(upload), "", False)[-1]
        assert "Imported" in status, status
        for name in NAMES:
            if not name.strip():
                continue
            status = tab.import_file(str(upload), name, True)[-1]
            try:
                validate_name(name.strip())  # the form trims what is typed
            except InvalidNameError:
                assert status.startswith("⚠️"), (name, status)
            else:
                assert status.startswith("Imported"), (name, status)
        saved = sorted(p.name for p in characters.user_dir.iterdir())
        assert saved == ["%2e%2e%2fescaped.yaml", "escaped.yaml", "evil.yaml"], saved
    finally:
        service.close()


# -- the API (real server) -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("paths-api")


@pytest.fixture(scope="module")
def server(api_root: Path, default_model_path: Path) -> Iterator[Server]:
    server = Server(api_root, model=default_model_path)
    outside = api_root / "outside"
    outside.mkdir()
    (outside / "escaped.yaml").write_text(f"temperature: {SECRET}\nname: secret\ncontext: secret\n")
    (outside / "escaped.jinja").write_text(f"SECRET {SECRET}")
    (outside / "evil.gguf").symlink_to(default_model_path)  # a real model, but not in models/
    user_data = server.config.user_data_dir
    for folder in ("presets", "instruction-templates", "characters"):
        (user_data / folder).mkdir(parents=True, exist_ok=True)
    link_outside(user_data)
    server.start()
    yield server
    server.stop()


def post(server: Server, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


@pytest.mark.slow
def test_api_requests_with_traversal_names_get_clear_errors(server: Server, api_root: Path) -> None:
    outside = api_root / "outside"
    names = [*NAMES, "linked", "dirlink", str(outside / "escaped"), str(outside / "evil.gguf")]
    names += ["../../outside/evil.gguf", "../outside/evil.gguf", "../../outside/escaped"]
    message = [{"role": "user", "content": "Hi"}]
    tried = 0
    for name in names:
        requests: list[tuple[str, dict[str, object]]] = [
            ("v1/chat/completions", {"messages": message, "max_tokens": 1, "preset": name}),
            ("v1/chat/completions", {"messages": message, "max_tokens": 1, "character": name}),
            ("v1/chat/completions", {"messages": message, "max_tokens": 1, "instruction_template": name}),
            ("v1/chat/completions", {"messages": message, "max_tokens": 1, "model": name}),
            ("v1/internal/chat-prompt", {"messages": message, "preset": name}),
            ("v1/internal/chat-prompt", {"messages": message, "instruction_template": name}),
            ("v1/internal/model/load", {"model": name}),
            ("api/show", {"model": name}),
            ("api/chat", {"model": name, "messages": message, "stream": False}),
        ]
        for path, body in requests:
            if not name and path.startswith(("v1/chat", "api/chat", "v1/internal/chat")):
                continue  # an empty name means "the default" there, which is fine
            response = post(server, path, body)
            tried += 1
            assert 400 <= response.status_code < 500, (path, name, response.status_code, response.text[:300])
            assert SECRET not in response.text, (path, name)
            assert {"error", "detail"} & set(response.json()), (path, name, response.text[:300])
    assert tried >= 9 * len(NAMES)
    model = httpx.get(f"{server.url}v1/internal/model").json()
    assert model["name"] == DEFAULT_MODEL_FILE  # no request swapped in the model from outside models/
    listing = httpx.get(f"{server.url}v1/internal/presets").json()["presets"]
    assert all(item["name"] not in {"linked", "dirlink"} for item in listing)
    answer = post(server, "v1/chat/completions", {"messages": message, "max_tokens": 2})
    assert answer.status_code == 200, answer.text


def test_chat_export_file_names_stay_in_the_export_folder(tmp_path: Path) -> None:
    from webui.ui.convert import export_file_name

    for title in NAMES:
        name = export_file_name(title)
        assert name.endswith(".json") and not name.startswith(".")
        assert (tmp_path / name).resolve().parent == tmp_path.resolve(), (title, name)
        assert not set(name) & set("/\\\0:"), (title, name)


# -- the page's upload in a real browser ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
def test_page_upload_with_traversal_names_in_chromium(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.support.page import open_character_tab, wait_character_status
    from tests.support.servers import open_page

    root = tmp_path_factory.mktemp("paths-browser")
    server = Server(root)
    inputs = root / "inputs"
    inputs.mkdir()
    upload = inputs / "..%2f..%2fevil.json"
    upload.write_text(json.dumps({"name": "../../../escaped", "description": "d", "first_mes": "hello"}))
    server.start()
    try:
        with open_page(browser, server.url, timeout_ms=60_000) as page:
            open_character_tab(page)
            status = page.locator("#character-status")
            page.locator("#character-import input[type=file]").set_input_files(str(upload))
            wait_character_status(page, "Imported")
            assert "escaped" in status.inner_text()
            for name in (
                "../../escaped",
                "..\\..\\escaped",
                "/tmp/escaped",
                "\uff0e\uff0e\uff0fescaped",
                "CON",
            ):
                before = status.inner_text()
                page.locator("#character-import-name textarea, #character-import-name input").fill(name)
                page.locator("#character-import-button").click()
                page.wait_for_function(
                    "(before) => { const text = document.querySelector('#character-status')?.innerText;"
                    " return text && text !== before && text.includes('⚠️'); }",
                    arg=before,
                )
    finally:
        server.stop()
    saved = sorted(p.name for p in (server.config.user_data_dir / "characters").iterdir())
    assert saved == ["escaped.yaml"], saved
    written = [p for p in root.rglob("*escaped*") if server.config.user_data_dir not in p.parents]
    assert written == [], written
