"""`webui characters list / import / export` as a user runs them: `python -m webui ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from webui.core.characters.modelfile import parse_modelfile

DATA = Path(__file__).parent / "data" / "characters"


def webui(user_data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PALABRE_USER_DATA": str(user_data)}
    return subprocess.run(
        [sys.executable, "-m", "webui", "characters", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_list_shows_bundled_and_own_personalities(tmp_path: Path) -> None:
    result = webui(tmp_path)
    assert result.returncode == 2 and "required: characters_command" in result.stderr
    listing = webui(tmp_path, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == "Assistant  (bundled)"
    assert "Coder  (bundled)" in lines and "Captain Barnacle  (bundled)" in lines


def test_import_then_export_a_card_and_a_modelfile(tmp_path: Path) -> None:
    user_data = tmp_path / "user_data"
    imported = webui(user_data, "import", str(DATA / "card_v2_lighthouse.json"))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == f'Imported "Mira" into {user_data / "characters" / "Mira.yaml"}'
    assert "Mira  (yours)" in webui(user_data, "list").stdout.splitlines()

    out = tmp_path / "mira.json"
    exported = webui(user_data, "export", "Mira", "--format", "card-json", "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == str(out)
    original = json.loads((DATA / "card_v2_lighthouse.json").read_text("utf-8"))
    assert json.loads(out.read_text("utf-8"))["data"] == original["data"]

    mario = webui(user_data, "import", str(DATA / "Mario.Modelfile"), "--name", "Super Mario")
    assert mario.returncode == 0, mario.stderr
    assert (
        'note: The TEMPLATE was converted to the instruction template "Super Mario (Modelfile)".'
        in mario.stderr
    )
    assert (user_data / "instruction-templates" / "Super Mario (Modelfile).yaml").is_file()
    saved = yaml.safe_load((user_data / "characters" / "Super Mario.yaml").read_text("utf-8"))
    assert saved["loader_settings"] == {"n_ctx": 4096}

    default_out = webui(user_data, "export", "Super Mario", "--format", "modelfile")
    assert default_out.returncode == 0, default_out.stderr
    written = Path(default_out.stdout.strip())
    assert written == user_data / "exports" / "Super Mario.Modelfile"
    assert (
        parse_modelfile(written.read_text("utf-8")).system
        == parse_modelfile((DATA / "Mario.Modelfile").read_text("utf-8")).system
    )

    png = webui(user_data, "export", "Coder", "--format", "card-png", "--output", str(tmp_path))
    assert png.returncode == 0 and (tmp_path / "Coder.png").read_bytes().startswith(b"\x89PNG")


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = webui(tmp_path, "export", "Nobody", "--format", "yaml")
    assert missing.returncode == 2
    assert missing.stderr.startswith('error: No personality named "Nobody". Available: Assistant, ')
    assert len(missing.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.Modelfile"
    bad.write_text("FROM x\nPARAMETER temperature warm\n", encoding="utf-8")
    result = webui(tmp_path, "import", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Cannot import bad.Modelfile: Modelfile line 2 (PARAMETER temperature warm): "
        "'warm' is not a number."
    )

    traversal = webui(tmp_path, "export", "../etc", "--format", "yaml")
    assert traversal.returncode == 2 and traversal.stderr.startswith("error: The personality name '../etc'")

    webui(tmp_path, "import", str(DATA / "card_v2_lighthouse.json"))
    again = webui(tmp_path, "import", str(DATA / "card_v2_lighthouse.json"))
    assert again.returncode == 2 and 'A personality named "Mira" already exists' in again.stderr
    assert webui(tmp_path, "import", str(DATA / "card_v2_lighthouse.json"), "--overwrite").returncode == 0
