"""The core's embedding model through real parts: all-MiniLM-L6-v2 (a sentence-transformers folder from PyPI)
through Transformers, and the default SmolLM2 GGUF through llama.cpp with mean pooling."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import make_config
from tests.support.embedding_models import MINILM_DIMENSIONS, MINILM_NAME, minilm_folder, reference_embeddings
from webui.core.embeddings import EmbeddingError, EmbeddingModelNotFound, read_sentence_transformers
from webui.core.service import Service
from webui.provision import DEFAULT_MODEL_FILE

TEXTS = ["The cat sat on the mat.", "Quarterly revenue grew by four percent.", "héllo wörld"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return minilm_folder()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, minilm: Path, default_model_path: Path
) -> Iterator[Service]:
    from webui.app import build_service

    user_data = tmp_path_factory.mktemp("embeddings") / "user_data"
    config = make_config(user_data, default_model_path)
    (config.models_dir / MINILM_NAME).symlink_to(minilm, target_is_directory=True)
    service = build_service(config)
    yield service
    service.close()


def close(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_the_folder_says_mean_pooling_and_normalisation(minilm: Path, tmp_path: Path) -> None:
    pipeline = read_sentence_transformers(minilm)
    assert pipeline is not None
    assert (pipeline.pooling, pipeline.normalize, pipeline.max_seq_length) == ("mean", True, 256)
    cls = tmp_path / "cls"
    (cls / "1_Pooling").mkdir(parents=True)
    modules = [
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (cls / "modules.json").write_text(json.dumps(modules))
    (cls / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    pipeline = read_sentence_transformers(cls)
    assert pipeline is not None and (pipeline.pooling, pipeline.normalize) == ("cls", False)
    assert read_sentence_transformers(tmp_path) is None


def test_no_embedding_model_says_how_to_choose_one(service: Service) -> None:
    with pytest.raises(EmbeddingError, match="--embedding-model"):
        service.embed(["hello"])


def test_vectors_equal_the_model_run_directly(service: Service, minilm: Path) -> None:
    result = service.embed(TEXTS, MINILM_NAME)
    assert result.model == MINILM_NAME
    assert [len(v) for v in result.vectors] == [MINILM_DIMENSIONS] * len(TEXTS)
    for got, want in zip(result.vectors, reference_embeddings(minilm, TEXTS), strict=True):
        assert close(got, want) < 1e-5
        assert math.isclose(math.fsum(x * x for x in got), 1.0, abs_tol=1e-5)
    assert result.prompt_tokens > len(TEXTS) * 3
    # Now loaded: a request naming no model gets it.
    assert service.embed(["hello"]).model == MINILM_NAME


def test_token_ids_embed_like_their_text(service: Service) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()))
    ids = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    by_text, by_ids = service.embed([TEXTS[0], ids], MINILM_NAME).vectors
    assert close(by_text, by_ids) < 1e-6
    with pytest.raises(EmbeddingError, match="Token ids must be between"):
        service.embed([[10**9]], MINILM_NAME)


def test_over_long_input_is_cut_or_refused(service: Service) -> None:
    long = "word " * 600
    cut = service.embed([long], MINILM_NAME)
    assert cut.prompt_tokens == 256
    with pytest.raises(EmbeddingError, match="more than the 256"):
        service.embed([long], MINILM_NAME, truncate=False)


def test_an_unknown_model_is_refused(service: Service) -> None:
    with pytest.raises(EmbeddingModelNotFound, match="'no-such-model' does not exist"):
        service.embed(["x"], "no-such-model")


def test_pickle_only_and_plain_folders_are_refused(tmp_path: Path, minilm: Path) -> None:
    from webui.app import build_service

    config = make_config(tmp_path / "user_data")
    plain = config.models_dir / "plain-model"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (plain / "model.safetensors").write_bytes(b"")
    pickled = config.models_dir / "pickled-embedder"
    (pickled / "1_Pooling").mkdir(parents=True)
    for name in ("modules.json", "config.json", "1_Pooling/config.json", "tokenizer.json"):
        (pickled / name).write_bytes((minilm / name).read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    service = build_service(config)
    try:
        with pytest.raises(EmbeddingError, match="not an embedding model"):
            service.embed(["x"], "plain-model")
        with pytest.raises(EmbeddingError, match="pickle"):
            service.embed(["x"], "pickled-embedder")
    finally:
        service.close()


def test_a_gguf_embeds_with_its_hidden_size(service: Service) -> None:
    result = service.embed(["hello world", "a second input"], DEFAULT_MODEL_FILE)
    assert [len(v) for v in result.vectors] == [576, 576]  # SmolLM2-135M's hidden size
    again = service.embed(["hello world"], DEFAULT_MODEL_FILE)
    assert close(again.vectors[0], result.vectors[0]) < 1e-5  # one input's vector does not depend on others
    normalised = service.embed(["hello world"], DEFAULT_MODEL_FILE, normalize=True).vectors[0]
    assert math.isclose(math.fsum(x * x for x in normalised), 1.0, abs_tol=1e-5)
    assert close(normalised, result.vectors[0]) > 1e-3  # llama.cpp's pooled vector is not unit length


def test_models_list_marks_embedding_models(
    tmp_path: Path, minilm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from webui.cli import main

    config = make_config(tmp_path / "user_data")
    (config.models_dir / MINILM_NAME).symlink_to(minilm, target_is_directory=True)
    assert main(["models", "list", "--user-data-dir", str(config.user_data_dir)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(MINILM_NAME))
    assert "embedding" in line.split()


@pytest.mark.parametrize("mode", ["cls", "lasttoken", "max"])
def test_the_folders_pooling_is_applied(tmp_path: Path, minilm: Path, mode: str) -> None:
    """The same weights with another pooling (and no Normalize module) give that pooling of the hidden states."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from webui.app import build_service

    config = make_config(tmp_path / "user_data")
    folder = config.models_dir / f"minilm-{mode}"
    (folder / "1_Pooling").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).symlink_to(minilm / name)
    modules = json.loads((minilm / "modules.json").read_text())[:2]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": mode}))
    texts = TEXTS[:2]
    service = build_service(config)
    try:
        got = service.embed(texts, folder.name).vectors
    finally:
        service.close()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    model = AutoModel.from_pretrained(str(minilm), use_safetensors=True).eval()
    for text, vector in zip(texts, got, strict=True):
        with torch.inference_mode():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        want = {"cls": hidden[0], "lasttoken": hidden[-1], "max": hidden.max(dim=0).values}[mode]
        assert close(vector, want.tolist()) < 1e-4


def test_an_embedding_model_is_not_loaded_as_the_chat_model(service: Service) -> None:
    from webui.core.service import EngineError

    with pytest.raises(EngineError, match="is an embedding model, not a text generator"):
        service.load_model(MINILM_NAME)
    assert service.loaded is None  # nothing was half-loaded
