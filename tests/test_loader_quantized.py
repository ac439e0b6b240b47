"""The GPTQ and AWQ loaders on CPU with real gptqmodel-quantized tiny checkpoints, compared with transformers."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from loaders.awq import AwqLoader, AwqSettings
from loaders.gptq import GptqLoader, GptqSettings
from loaders.transformers import HfModel, TransformersLoader
from tests.support.config import make_config
from tests.support.generation import (
    CHAT_PROMPT,
    GREEDY,
    SAMPLING,
    STORY_PROMPT,
    cli_generate,
    run,
    text_of,
)
from tests.support.tiny_models import CHATML_TEMPLATE, reference_greedy
from webui.app import build_service
from webui.core.loader import CancelToken, LoaderError
from webui.core.params import GenerationParams

pytestmark = pytest.mark.slow

LOADERS: dict[str, tuple[type[TransformersLoader], type[BaseModel]]] = {
    "gptq": (GptqLoader, GptqSettings),
    "awq": (AwqLoader, AwqSettings),
}
# A kernel forced by name, besides "auto", that runs on CPU.
CPU_BACKENDS = {"gptq": "torch", "awq": "torch_awq"}


@pytest.fixture(scope="module", params=["gptq", "awq"])
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def folder(method: str, tiny_gptq_dir: Path, tiny_awq_dir: Path) -> Path:
    return tiny_gptq_dir if method == "gptq" else tiny_awq_dir


@pytest.fixture(scope="module")
def model(method: str, folder: Path) -> Iterator[HfModel]:
    loader, settings = LOADERS[method]
    loaded = loader().load(folder, settings())
    yield loaded
    loaded.unload()


@pytest.mark.parametrize("prompt", [CHAT_PROMPT, STORY_PROMPT])
def test_greedy_stream_equals_transformers_generate(model: HfModel, folder: Path, prompt: str) -> None:
    expected, expected_tokens = reference_greedy(folder, prompt, GREEDY.max_new_tokens)
    chunks = run(model, prompt, GREEDY)
    assert text_of(chunks) == expected
    assert len(expected) > 10
    assert sum(chunk.tokens for chunk in chunks) == expected_tokens
    assert chunks[-1].finish_reason in ("stop", "length")
    prompt_usage = chunks[-1].prompt
    assert prompt_usage is not None and prompt_usage.tokens == len(model.tokenize(prompt, add_bos=True))


def test_runs_quantized_kernels_on_cpu(model: HfModel, method: str) -> None:
    kernels = {type(module).__module__ for module in model._model.modules()}
    assert any(name.startswith("gptqmodel.nn_modules.qlinear") for name in kernels)
    assert model.facts.extra["device"] == "cpu"
    assert model.facts.loader == method
    assert model.facts.chat_template == CHATML_TEMPLATE


def test_forced_cpu_kernel_gives_the_same_greedy_text(method: str, folder: Path, model: HfModel) -> None:
    loader, settings = LOADERS[method]
    forced = loader().load(folder, settings(backend=CPU_BACKENDS[method], dtype="float32"))
    try:
        assert forced.facts.extra["backend"] == CPU_BACKENDS[method]
        assert text_of(run(forced, CHAT_PROMPT, GREEDY)) == "The capital of France is Paris."
    finally:
        forced.unload()


def test_same_seed_same_text_other_seed_differs(model: HfModel) -> None:
    first = text_of(run(model, STORY_PROMPT, SAMPLING))
    assert first == text_of(run(model, STORY_PROMPT, SAMPLING))
    assert len(first) > 20
    assert text_of(run(model, STORY_PROMPT, SAMPLING.overlay({"seed": 99}))) != first


def test_cancel_stops_mid_stream(model: HfModel) -> None:
    cancel = CancelToken()
    chunks = []
    for chunk in model.stream(STORY_PROMPT, GenerationParams(max_new_tokens=400, ban_eos_token=True), cancel):
        chunks.append(chunk)
        if len(chunks) == 3:
            cancel.cancel()
    assert chunks[-1].finish_reason == "cancelled"
    assert sum(chunk.tokens for chunk in chunks) < 50


def test_tokenize_detokenize_round_trip(model: HfModel) -> None:
    text = "Every morning the robot walked to the harbour. <|im_start|>"
    assert model.detokenize(model.tokenize(text)) == text


def test_unload_frees_the_model(method: str, folder: Path) -> None:
    loader, settings = LOADERS[method]
    loaded = loader().load(folder, settings())
    ref = weakref.ref(loaded._model)
    loaded.unload()
    assert ref() is None


def test_wrong_loader_names_the_right_one(
    tiny_llama_dir: Path, tiny_gptq_dir: Path, tiny_awq_dir: Path, default_model_path: Path
) -> None:
    with pytest.raises(LoaderError, match="is an AWQ checkpoint, not GPTQ: pick the awq loader"):
        GptqLoader().load(tiny_awq_dir, GptqSettings())
    with pytest.raises(LoaderError, match="is a GPTQ checkpoint, not AWQ: pick the gptq loader"):
        AwqLoader().load(tiny_gptq_dir, AwqSettings())
    for loader, settings in LOADERS.values():
        with pytest.raises(LoaderError, match=r"no quantization_config.*pick the transformers loader"):
            loader().load(tiny_llama_dir, settings())
        with pytest.raises(LoaderError, match=r"GGUF file: pick the llama\.cpp loader"):
            loader().load(default_model_path, settings())


def test_unknown_backend_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        GptqSettings.model_validate({"backend": "autogptq"})
    with pytest.raises(ValidationError):
        AwqSettings.model_validate({"load_in_4bit": True})


def test_service_infers_the_loader_and_detects_chatml(tmp_path: Path, folder: Path, method: str) -> None:
    service = build_service(make_config(tmp_path / "user_data", folder))
    try:
        report = service.load_model(folder.name)
        assert report.state.loader == method
        assert service.detection is not None and service.detection.template.name == "ChatML"
        assert "Paris" in service.stream_completion(CHAT_PROMPT, GREEDY).text()
    finally:
        service.close()


def test_cli_generate_prints_transformers_greedy_text(tmp_path: Path, folder: Path, method: str) -> None:
    expected, _ = reference_greedy(folder, STORY_PROMPT, 20)
    printed = cli_generate(folder, method, STORY_PROMPT, tmp_path / "user_data")
    assert printed.strip() == expected.strip()
