"""Hugging Face Hub downloads through the real huggingface_hub client, against a local stand-in for the Hub."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_hub import FakeHub, gguf_like, standard_hub
from webui.core.hardware.estimates import FitVerdict
from webui.core.hub import cache as hub_cache
from webui.core.hub import download as dl
from webui.core.loader import CancelToken
from webui.core.models.discovery import discover_models, infer_loader

GGUF = "palabre-test/tiny-GGUF"
TRANSFORMERS = "palabre-test/tiny-transformers"
Q4 = "tiny-model-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The stand-in Hub on a free port, with huggingface_hub pointed at it and its cache in a temp folder."""
    server = standard_hub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in (
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)
    try:
        dl.quick_fit(1_000_000)
    except NotImplementedError:  # hardware.quick_fit is another module's job; until it lands, a stand-in
        monkeypatch.setattr(dl, "quick_fit", lambda size, **_: FitVerdict("fits", f"{size} bytes fit."))
    yield server
    server.stop()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- references and quantization labels ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repo_id", "revision", "filename"),
    [
        ("bartowski/SmolLM2-135M-Instruct-GGUF", "bartowski/SmolLM2-135M-Instruct-GGUF", None, None),
        ("  org/model  ", "org/model", None, None),
        ("https://huggingface.co/org/model", "org/model", None, None),
        ("https://huggingface.co/org/model/", "org/model", None, None),
        ("huggingface.co/org/model", "org/model", None, None),
        ("https://hf.co/org/model", "org/model", None, None),
        ("https://huggingface.co/org/model/tree/dev", "org/model", "dev", None),
        ("https://huggingface.co/org/model/tree/main/sub", "org/model", "main", "sub"),
        ("https://huggingface.co/org/model/blob/main/m-Q4_K_M.gguf", "org/model", "main", "m-Q4_K_M.gguf"),
        (
            "https://huggingface.co/org/model/resolve/v1.0/a/b.gguf?download=true",
            "org/model",
            "v1.0",
            "a/b.gguf",
        ),
        ("https://huggingface.co/org/model/tree/refs%2Fpr%2F3", "org/model", "refs/pr/3", None),
        ("https://huggingface.co/org/model/blob/refs/pr/3/x.gguf", "org/model", "refs/pr/3", "x.gguf"),
        ("gpt2", "gpt2", None, None),
    ],
)
def test_references_parse(text: str, repo_id: str, revision: str | None, filename: str | None) -> None:
    ref = dl.parse_reference(text)
    assert (ref.repo_id, ref.revision, ref.filename) == (repo_id, revision, filename)


def test_the_branch_field_wins_over_the_address() -> None:
    assert dl.parse_reference("https://huggingface.co/org/model/tree/dev", "main").revision == "main"
    assert dl.parse_reference("org/model", " v2 ").revision == "v2"
    assert dl.parse_reference("org/model").folder_name == "org_model"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Enter a model"),
        ("not a repo!", "not a Hugging Face model reference"),
        ("org/model/extra", "not a Hugging Face model reference"),
        ("org/../etc", "not a Hugging Face model reference"),
        ("https://example.com/org/model", "not a Hugging Face Hub address"),
        ("https://huggingface.co/datasets/org/data", "not a model repository"),
        ("https://huggingface.co/spaces/org/app", "not a model repository"),
        ("https://huggingface.co/org/model/discussions/4", "not a model address"),
        ("https://huggingface.co/org/model/blob/main", "names no file"),
        ("ftp://huggingface.co/org/model", "not a Hugging Face Hub address"),
    ],
)
def test_bad_references_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(dl.DownloadError, match=says):
        dl.parse_reference(text)


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.Q5_K_S.gguf", "Q5_K_S"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("SmolLM2-135M-Instruct-Q3_K_L.gguf", "Q3_K_L"),
        ("gemma-3-270m-it-IQ4_XS.gguf", "IQ4_XS"),
        ("phi-4-IQ2_XXS.gguf", "IQ2_XXS"),
        ("Qwen3-8B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("model-f16.gguf", "F16"),
        ("model-BF16-00001-of-00003.gguf", "BF16"),
        ("Meta-Llama-3-70B-Instruct-Q4_K_M-00002-of-00002.gguf", "Q4_K_M"),
        ("ggml-model-fp16.gguf", "F16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model_q4_0.gguf", "Q4_0"),
        ("mmproj-model-f32.gguf", "F32"),
        ("Q8-model-Q6_K.gguf", "Q6_K"),
        ("plain-model.gguf", None),
        ("QwQ-32B.gguf", None),
    ],
)
def test_quantization_from_the_file_name(name: str, quant: str | None) -> None:
    assert dl.gguf_quant(name) == quant


def test_split_parts_are_recognised() -> None:
    assert dl.split_part("m-Q4_K_M-00002-of-00003.gguf") == ("m-Q4_K_M", 2, 3)
    assert dl.split_part("m-Q4_K_M.gguf") is None


def test_sizes_read_like_a_person_writes_them() -> None:
    assert [dl.format_size(n) for n in (12, 3_200, 4_700_000, 1_234_000_000)] == [
        "12 B",
        "3.2 kB",
        "4.7 MB",
        "1.2 GB",
    ]


# -- listing ----------------------------------------------------------------------------------------


def test_a_gguf_repository_lists_every_file_with_size_quant_checksum_and_fit(hub: FakeHub) -> None:
    listing = dl.list_files(GGUF)
    files = {f.path: f for f in listing.files}
    repo = hub.repos[GGUF].branches["main"]
    assert set(files) == set(repo)
    for path, data in repo.items():
        assert files[path].size == len(data)
    assert files[Q4].sha256 == sha256(repo[Q4])
    assert files["README.md"].sha256 is None  # a small (non-LFS) file
    assert files[Q4].quant == "Q4_K_M"
    assert files["tiny-model-IQ4_XS.gguf"].quant == "IQ4_XS"
    assert listing.kind == "gguf"
    choices = {c.label: c for c in listing.choices}
    split = choices["tiny-model-F16.gguf (3 parts)"]
    assert split.size == 500_000 and len(split.files) == 3 and split.quant == "F16"
    assert choices[Q4].size == 300_000 and choices[Q4].fit is not None
    assert choices[Q4].fit.verdict in ("fits", "tight", "does not fit")
    assert "README.md" not in choices


def test_a_transformers_repository_is_one_choice_without_other_frameworks(hub: FakeHub) -> None:
    listing = dl.list_files(f"https://huggingface.co/{TRANSFORMERS}")
    assert listing.kind == "transformers"
    (whole,) = listing.choices
    assert set(whole.files) == {"config.json", "tokenizer_config.json", "model.safetensors"}
    assert whole.fit is not None


def test_a_branch_lists_that_branch(hub: FakeHub) -> None:
    listing = dl.list_files(f"https://huggingface.co/{GGUF}/tree/dev")
    assert [(f.path, f.size) for f in listing.files] == [(Q4, 10_000)]


@pytest.mark.parametrize(
    ("repo", "revision", "says"),
    [
        ("palabre-test/no-such-model", None, "not found"),
        (GGUF, "no-such-branch", "no branch, tag or commit 'no-such-branch'"),
    ],
)
def test_a_bad_repository_or_branch_says_so(hub: FakeHub, repo: str, revision: str | None, says: str) -> None:
    with pytest.raises(dl.DownloadError, match=says):
        dl.list_files(repo, revision)


def test_an_unreachable_hub_says_so(monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    url = hub.url
    hub.stop()
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(dl.DownloadError, match="Cannot reach the Hub"):
        dl.list_files(GGUF)


def test_a_private_repository_needs_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.repos[GGUF].private_token = "hf_secret"
    with pytest.raises(dl.DownloadError, match="token"):
        dl.list_files(GGUF)
    assert dl.list_files(GGUF, token="hf_secret").files  # typed in
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert dl.list_files(GGUF).files  # from the environment


# -- downloading ------------------------------------------------------------------------------------


def test_download_reports_monotonic_progress_and_verifies(hub: FakeHub, models_dir: Path) -> None:
    hub.throttle = 2_000_000  # several progress updates for a 300 kB file
    seen: list[tuple[int, int, str]] = []
    result = dl.download(GGUF, [Q4], models_dir=models_dir, progress=lambda *a: seen.append(a))
    data = hub.repos[GGUF].branches["main"][Q4]
    target = models_dir / "palabre-test_tiny-GGUF" / Q4
    assert target.read_bytes() == data
    assert result.files == (target,) and result.verified == (Q4,)
    assert "verified sha256" in result.message
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and len(done) > 3
    assert {t for _, t, _ in seen} == {len(data)} and done[-1] == len(data)
    assert not (models_dir / dl.STAGING_DIR).exists()  # nothing left behind
    (entry,) = discover_models(models_dir)
    assert entry.name == f"palabre-test_tiny-GGUF/{Q4}" and infer_loader(entry) == "llama.cpp"


def test_an_interrupted_download_resumes_from_where_it_stopped(hub: FakeHub, models_dir: Path) -> None:
    data = hub.repos[GGUF].branches["main"][Q4]
    hub.die_after = 120_000
    with pytest.raises(
        dl.DownloadError, match=r"interrupted at 120\.0 kB of 300\.0 kB.*Download again to resume"
    ):
        dl.download(GGUF, [Q4], models_dir=models_dir)
    assert discover_models(models_dir) == []  # a partial file never shows up as a model
    assert dl.partial_bytes(models_dir, GGUF) == 120_000

    seen: list[int] = []
    result = dl.download(GGUF, [Q4], models_dir=models_dir, progress=lambda d, t, f: seen.append(d))
    assert hub.bytes_served(Q4) == len(data)  # 120 kB in the first run + only the remainder in the second
    assert result.resumed_bytes == 120_000 and result.fetched_bytes == len(data) - 120_000
    assert seen[0] == 120_000 and seen[-1] == len(data)
    assert ("GET", f"/{GGUF}/resolve/main/{Q4}", "bytes=120000-") in hub.requests
    assert sha256((models_dir / "palabre-test_tiny-GGUF" / Q4).read_bytes()) == sha256(data)
    assert "resumed" in result.message and "verified sha256" in result.message


def test_cancel_keeps_the_part_fetched_and_the_next_download_resumes(hub: FakeHub, models_dir: Path) -> None:
    hub.throttle = 500_000
    cancel = CancelToken()

    def progress(done: int, total: int, file: str) -> None:
        if done >= 50_000:
            cancel.cancel()

    with pytest.raises(dl.DownloadCancelled, match="Cancelled"):
        dl.download(GGUF, [Q4], models_dir=models_dir, progress=progress, cancel=cancel)
    kept = dl.partial_bytes(models_dir, GGUF)
    assert 50_000 <= kept < 300_000
    hub.throttle = None
    result = dl.download(GGUF, [Q4], models_dir=models_dir)
    assert result.resumed_bytes == kept and result.verified == (Q4,)


def test_a_corrupt_file_is_deleted_and_reported(hub: FakeHub, models_dir: Path) -> None:
    hub.corrupt.add(Q4)
    with pytest.raises(
        dl.DownloadError, match=r"corrupt: its sha256 is [0-9a-f]{64}, the Hub says .*deleted"
    ):
        dl.download(GGUF, [Q4], models_dir=models_dir)
    assert [p for p in models_dir.rglob("*") if p.is_file()] == []
    assert discover_models(models_dir) == []
    hub.corrupt.clear()
    assert dl.download(GGUF, [Q4], models_dir=models_dir).verified == (Q4,)


def test_choosing_one_part_of_a_split_gguf_brings_every_part(hub: FakeHub, models_dir: Path) -> None:
    result = dl.download(GGUF, ["tiny-model-F16-00001-of-00003.gguf"], models_dir=models_dir)
    assert sorted(p.name for p in result.files) == [
        f"tiny-model-F16-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    (entry,) = discover_models(models_dir)
    assert entry.parts == 3 and entry.size_bytes == 500_000


def test_a_choice_label_downloads_its_files(hub: FakeHub, models_dir: Path) -> None:
    result = dl.download(GGUF, ["tiny-model-F16.gguf (3 parts)"], models_dir=models_dir)
    assert len(result.files) == 3


def test_a_transformers_repository_downloads_as_a_model_folder(hub: FakeHub, models_dir: Path) -> None:
    result = dl.download(TRANSFORMERS, models_dir=models_dir)
    folder = models_dir / "palabre-test_tiny-transformers"
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
    ]
    assert set(result.verified) == {"config.json", "model.safetensors", "tokenizer_config.json"}
    (entry,) = discover_models(models_dir)
    assert entry.kind == "folder" and infer_loader(entry) == "transformers"


def test_a_second_download_of_the_same_file_fetches_nothing(hub: FakeHub, models_dir: Path) -> None:
    dl.download(GGUF, [Q4], models_dir=models_dir)
    before = hub.bytes_served(Q4)
    result = dl.download(GGUF, [Q4], models_dir=models_dir)
    assert hub.bytes_served(Q4) == before and result.skipped == (Q4,) and result.fetched_bytes == 0


def test_a_branch_downloads_that_branch(hub: FakeHub, models_dir: Path) -> None:
    result = dl.download(GGUF, [Q4], models_dir=models_dir, revision="dev")
    assert result.files[0].read_bytes() == gguf_like("dev", 10_000)


def test_several_gguf_files_without_a_choice_ask_for_one(hub: FakeHub, models_dir: Path) -> None:
    with pytest.raises(dl.DownloadError, match="several GGUF files; choose one"):
        dl.download(GGUF, models_dir=models_dir)
    with pytest.raises(dl.DownloadError, match=r"has no file 'nope\.gguf'"):
        dl.download(GGUF, ["nope.gguf"], models_dir=models_dir)


def test_an_address_naming_a_file_downloads_that_file(hub: FakeHub, models_dir: Path) -> None:
    result = dl.download(
        f"https://huggingface.co/{GGUF}/blob/main/tiny-model-Q8_0.gguf", models_dir=models_dir
    )
    assert [p.name for p in result.files] == ["tiny-model-Q8_0.gguf"]


# -- the Hugging Face cache -------------------------------------------------------------------------


def test_models_in_the_hugging_face_cache_are_listed_and_usable(hub: FakeHub, models_dir: Path) -> None:
    from huggingface_hub import hf_hub_download

    assert hub_cache.cached_models() == []
    cache = hub_cache.hub_cache_dir()
    for name in (Q4, "README.md"):
        hf_hub_download(GGUF, name, cache_dir=cache, endpoint=hub.url)
    for name in ("config.json", "model.safetensors"):
        hf_hub_download(TRANSFORMERS, name, cache_dir=cache, endpoint=hub.url)
    found = {(m.repo_id, m.kind): m for m in hub_cache.cached_models()}
    assert set(found) == {(GGUF, "gguf"), (TRANSFORMERS, "folder")}
    gguf = found[(GGUF, "gguf")]
    assert gguf.path.name == Q4 and gguf.size == 300_000 and "main" in gguf.label
    assert gguf.path.read_bytes() == hub.repos[GGUF].branches["main"][Q4]

    hub_cache.use_cached(gguf, models_dir)
    hub_cache.use_cached(found[(TRANSFORMERS, "folder")], models_dir)
    names = {e.name: e for e in discover_models(models_dir)}
    assert set(names) == {f"palabre-test_tiny-GGUF/{Q4}", "palabre-test_tiny-transformers"}
    with pytest.raises(dl.DownloadError, match="already exists"):
        hub_cache.use_cached(found[(TRANSFORMERS, "folder")], models_dir)


# -- the command line -------------------------------------------------------------------------------


def webui(capsys: pytest.CaptureFixture[str], user_data: Path, *args: str) -> tuple[int, str, str]:
    """``webui ARGS`` through the real entry point, in this process (so the stand-in Hub's settings apply)."""
    from webui.cli import main

    code = main([*args, "--user-data-dir", str(user_data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lists_files_and_downloads(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_data = tmp_path / "user_data"
    code, out, err = webui(capsys, user_data, "models", "files", GGUF)
    assert code == 0, err
    assert "tiny-model-Q4_K_M.gguf" in out and "Q4_K_M" in out
    assert "300.0 kB" in out and "tiny-model-F16.gguf (3 parts)" in out

    code, out, err = webui(capsys, user_data, "models", "download", GGUF, "--file", "tiny-model-IQ4_XS.gguf")
    assert code == 0, err
    assert "verified sha256" in out and "100.0%" in err
    assert (
        user_data / "models" / "palabre-test_tiny-GGUF" / "tiny-model-IQ4_XS.gguf"
    ).stat().st_size == 250_000

    code, out, _ = webui(capsys, user_data, "models", "files", GGUF, "--revision", "dev")
    assert code == 0 and "10.0 kB" in out

    code, _, err = webui(capsys, user_data, "models", "download", "palabre-test/missing")
    assert code == 2 and "error: Repository palabre-test/missing was not found" in err

    code, _, err = webui(capsys, user_data, "models", "download", GGUF)
    assert code == 2 and "choose one" in err
