"""The curated catalog: current models with capabilities and a fit verdict per quantization, refreshed from the
Hub's listing, and one entry downloaded from the local Hub stand-in, loaded, its capabilities detected."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalog_hub import (
    GEMMA_FILE,
    GEMMA_PROJECTOR,
    GEMMA_REPO,
    QWEN_FILE,
    QWEN_REPO,
    VISION_REPO,
    catalog_hub,
)
from tests.support.fake_hub import FakeHub
from tests.support.machines import GB, machine
from webui.core.hardware.machine import GpuFacts
from webui.core.hub import catalog as cat
from webui.core.hub import download as dl

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HUB_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, agent_gguf_path: Path) -> Iterator[FakeHub]:
    """The stand-in Hub serving two catalog repositories; huggingface_hub pointed at it."""
    server = catalog_hub(agent_gguf_path, tmp_path / "hub-files").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield server
    server.stop()


def test_the_catalog_lists_at_least_ten_current_models_with_capabilities() -> None:
    entries = cat.catalog_entries()
    assert len(entries) >= 10
    names = {e.name for e in entries}
    for wanted in ("Qwen3 0.6B", "Qwen3 4B", "Gemma 3 4B", "Llama 3.2 1B Instruct", "Phi-4-mini Instruct"):
        assert wanted in names
    assert {"SmolLM3 3B", "gpt-oss 20B"} <= names
    for entry in entries:
        assert entry.files and all(f.size > 0 and f.quant != "?" for f in entry.files)
        assert entry.repo_id.count("/") == 1 and entry.licence and entry.context_length >= 8192
    labels = {e.name: e.labels for e in entries}
    assert labels["Qwen3 0.6B"] == ("thinking", "tools")
    assert labels["Gemma 3 4B"] == ("vision",)
    assert sum(1 for e in entries if e.thinking) >= 4 and sum(1 for e in entries if e.tools) >= 6
    gemma = cat.find_entry("ggml-org/gemma-3-4b-it-GGUF")
    assert gemma.projector is not None and gemma.projector.path.startswith("mmproj")


def test_each_quantization_gets_a_fit_verdict_for_the_machine() -> None:
    small = {(r.entry.name, r.file.quant): r for r in cat.catalog_rows(machine(available_gb=8.0))}
    assert small[("Qwen3 0.6B", "Q8_0")].verdict == "fits"
    assert small[("gpt-oss 20B", "MXFP4")].verdict == "does not fit"
    assert small[("Qwen3 8B", "Q8_0")].verdict == "does not fit"
    assert "needs about" in small[("gpt-oss 20B", "MXFP4")].message
    assert {r.verdict for r in small.values()} == {"fits", "tight", "does not fit"}
    big = {(r.entry.name, r.file.quant): r.verdict for r in cat.catalog_rows(machine(available_gb=64.0))}
    assert big[("gpt-oss 20B", "MXFP4")] == "fits"
    gpu = GpuFacts("RTX 4090", 24 * GB, 24 * GB, 1008e9)
    with_gpu = {(r.entry.name, r.file.quant): r.verdict for r in cat.catalog_rows(machine(4.0, gpus=(gpu,)))}
    assert with_gpu[("gpt-oss 20B", "MXFP4")] == "fits"  # in VRAM, not in the 4 GB of RAM


def test_an_unknown_model_or_quantization_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cat.CatalogError, match=r"The catalog has: .*Qwen3 0\.6B"):
        cat.find_entry("Qwen9 1T")
    with pytest.raises(cat.CatalogError, match="offers Q8_0"):
        cat.download_entry(cat.find_entry("Qwen3 0.6B"), "Q2_K", models_dir=tmp_path)


def test_refresh_takes_the_sizes_from_the_hubs_listing(hub: FakeHub) -> None:
    entry = cat.find_entry(GEMMA_REPO)
    fresh = cat.refresh(entry, dl.list_files(entry.repo_id))
    served = hub.repos[GEMMA_REPO].branches["main"]
    assert fresh.refreshed
    assert [(f.path, f.size) for f in fresh.files] == [
        (GEMMA_FILE, len(served[GEMMA_FILE]))
    ]  # Q8_0 not served
    assert fresh.projector is not None and fresh.projector.size == len(served[GEMMA_PROJECTOR])


def test_a_catalog_model_downloads_and_loads_with_its_capabilities(hub: FakeHub, tmp_path: Path) -> None:
    from tests.support.config import make_config
    from webui.app import build_service

    config = make_config(tmp_path / "user_data")
    entry = cat.find_entry("Qwen3 0.6B")
    result = cat.download_entry(entry, "Q8_0", models_dir=config.models_dir)
    assert result.verified == (QWEN_FILE,)
    name = cat.local_model_name(entry, entry.files[0])
    assert name == "Qwen_Qwen3-0.6B-GGUF/" + QWEN_FILE
    rows = {r.key: r for r in cat.catalog_rows(machine(), config.models_dir)}
    assert rows[f"{QWEN_REPO}:{QWEN_FILE}"].downloaded
    service = build_service(config)
    try:
        assert name in [e.name for e in service.models()]
        service.load_model(name, settings={"n_ctx": 1024})
        abilities = service.abilities()
        assert abilities.thinks and abilities.tools
    finally:
        service.close()


def test_a_vision_model_comes_with_its_projector(hub: FakeHub, tmp_path: Path) -> None:
    from webui.core.models.capabilities import entry_capabilities
    from webui.core.models.discovery import discover_models

    models_dir = tmp_path / "models"
    cat.download_entry(cat.find_entry("Gemma 3 4B"), "Q4_K_M", models_dir=models_dir)
    [entry] = discover_models(models_dir)  # the projector is not offered as a model of its own
    assert entry.name == "ggml-org_gemma-3-4b-it-GGUF/" + GEMMA_FILE
    caps = entry_capabilities(entry)
    assert caps.vision and caps.projector == GEMMA_PROJECTOR and not caps.tools


def webui(user_data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webui", *args, "--user-data-dir", str(user_data)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_prints_the_catalog_downloads_an_entry_and_lists_its_capabilities(
    hub: FakeHub, tmp_path: Path
) -> None:
    user_data = tmp_path / "user_data"
    listing = webui(user_data, "models", "catalog")
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split()[:3] == ["Model", "Params", "Quant"] and "Fit here" in header
    qwen = next(line for line in lines if line.startswith("Qwen3 0.6B "))
    assert "Q8_0" in qwen and "thinking,tools" in qwen and QWEN_REPO in qwen
    assert any(v in qwen for v in ("fits", "tight", "does not fit"))

    download = webui(user_data, "models", "catalog", "--download", "Qwen3 0.6B")
    assert download.returncode == 0, download.stderr
    assert "verified sha256" in download.stdout and f"Qwen_Qwen3-0.6B-GGUF/{QWEN_FILE}" in download.stdout

    models = webui(user_data, "models", "list")
    assert models.returncode == 0, models.stderr
    [line] = [line for line in models.stdout.splitlines() if QWEN_FILE in line]
    assert line.split()[-2:] == ["thinking,tools", "llama.cpp"]

    missing = webui(user_data, "models", "catalog", "--download", "Nope 3B")
    assert missing.returncode != 0 and "No catalog model 'Nope 3B'" in missing.stderr


def test_a_repositorys_capabilities_are_read_before_downloading(hub: FakeHub, tmp_path: Path) -> None:
    from webui.core.hub.peek import repo_capabilities

    qwen = repo_capabilities(dl.list_files(QWEN_REPO))
    assert qwen is not None and qwen.source == QWEN_FILE
    assert qwen.capabilities.labels == ("thinking", "tools")
    ranges = [r for m, path, r in hub.requests if m == "GET" and path.endswith(QWEN_FILE)]
    assert ranges and all(r and r.startswith("bytes=0-") for r in ranges)  # the header only, not the weights
    gemma = repo_capabilities(dl.list_files(GEMMA_REPO))
    assert gemma is not None and gemma.capabilities.labels == ("vision",)
    assert gemma.capabilities.projector == GEMMA_PROJECTOR and gemma.capabilities.template_found
    vision = repo_capabilities(dl.list_files(VISION_REPO))
    assert vision is not None and vision.capabilities.labels == ("vision",)
    assert not (tmp_path / "models").exists()  # nothing was downloaded


def test_an_unreachable_hub_is_asked_once_and_the_catalogs_sizes_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def unreachable(repo_id: str, **_: object) -> dl.RepoListing:
        asked.append(repo_id)
        raise dl.HubUnreachable("Cannot reach the Hub at https://huggingface.co (refused).")

    monkeypatch.setattr(dl, "list_files", unreachable)
    entries = cat.catalog_entries()
    fresh, problems = cat.refresh_all(entries)
    assert fresh == entries and len(asked) == 1
    assert problems == [
        "Cannot reach the Hub at https://huggingface.co (refused). The catalog's sizes are shown."
    ]


def test_refresh_all_reads_what_the_hub_serves_and_names_what_it_could_not(hub: FakeHub) -> None:
    entries = (cat.find_entry(QWEN_REPO), cat.find_entry("SmolLM3 3B"), cat.find_entry(GEMMA_REPO))
    fresh, problems = cat.refresh_all(entries)
    assert [e.refreshed for e in fresh] == [True, False, True]
    assert len(problems) == 1 and problems[0].startswith("SmolLM3 3B: Repository unsloth/SmolLM3-3B-GGUF")
