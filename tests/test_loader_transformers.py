"""The transformers loader with a real (tiny, locally built) llama checkpoint, compared with transformers itself."""

from __future__ import annotations

import json
import shutil
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaders.transformers import HfModel, TransformersLoader, TransformersSettings
from tests.support.config import make_config
from tests.support.generation import CHAT_PROMPT, GREEDY, SAMPLING, STORY_PROMPT, cli_generate, run, text_of
from tests.support.tiny_models import CHATML_TEMPLATE, reference_greedy
from webui.app import build_service
from webui.core.loader import CancelToken, LoaderError
from webui.core.params import GenerationParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path) -> Iterator[HfModel]:
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    yield loaded
    loaded.unload()


@pytest.mark.parametrize("prompt", [CHAT_PROMPT, STORY_PROMPT])
def test_greedy_stream_equals_transformers_generate(
    model: HfModel, tiny_llama_dir: Path, prompt: str
) -> None:
    expected, expected_tokens = reference_greedy(tiny_llama_dir, prompt, GREEDY.max_new_tokens)
    chunks = run(model, prompt, GREEDY)
    assert text_of(chunks) == expected
    assert len(expected) > 10
    assert sum(chunk.tokens for chunk in chunks) == expected_tokens
    last = chunks[-1]
    assert last.finish_reason == ("length" if expected_tokens == GREEDY.max_new_tokens else "stop")
    assert last.prompt is not None and last.prompt.tokens == len(model.tokenize(prompt, add_bos=True))
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])


def test_chat_answer_stops_at_end_token(model: HfModel) -> None:
    chunks = run(model, CHAT_PROMPT, GREEDY)
    assert text_of(chunks) == "The capital of France is Paris."
    assert chunks[-1].finish_reason == "stop"
    assert len([chunk for chunk in chunks if chunk.text]) > 3  # streamed, not one piece


def test_same_seed_same_text_other_seed_differs(model: HfModel) -> None:
    first = text_of(run(model, STORY_PROMPT, SAMPLING))
    second = text_of(run(model, STORY_PROMPT, SAMPLING))
    other = text_of(run(model, STORY_PROMPT, SAMPLING.overlay({"seed": 99})))
    assert first == second
    assert len(first) > 20
    assert other != first


def test_cancel_stops_mid_stream(model: HfModel) -> None:
    cancel = CancelToken()
    params = GenerationParams(temperature=0, max_new_tokens=400, ban_eos_token=True)
    chunks = []
    for chunk in model.stream(STORY_PROMPT, params, cancel):
        chunks.append(chunk)
        if len(chunks) == 3:
            cancel.cancel()
    assert chunks[-1].finish_reason == "cancelled"
    assert sum(chunk.tokens for chunk in chunks) < 50


def test_reader_stopping_early_ends_the_generation_thread(model: HfModel) -> None:
    stream = model.stream(
        STORY_PROMPT, GenerationParams(max_new_tokens=400, ban_eos_token=True), CancelToken()
    )
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "palabre-transformers-generate"]


def test_ban_eos_runs_to_length(model: HfModel) -> None:
    chunks = run(model, CHAT_PROMPT, GREEDY.overlay({"ban_eos_token": True}))
    assert chunks[-1].finish_reason == "length"
    assert sum(chunk.tokens for chunk in chunks) == GREEDY.max_new_tokens


def test_logit_bias_bans_a_token(model: HfModel) -> None:
    paris = model.tokenize(" Paris")
    assert len(paris) == 1
    text = text_of(run(model, CHAT_PROMPT, GREEDY.overlay({"logit_bias": {paris[0]: -100.0}})))
    assert "Paris" not in text
    assert text.startswith("The capital of France is")


@pytest.mark.parametrize(
    "changes",
    [
        {
            "repetition_penalty": 1.3,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.5,
            "repetition_penalty_range": 64,
        },
        {"dry_multiplier": 0.8},
        {"xtc_probability": 1.0, "xtc_threshold": 0.05},
        {"top_n_sigma": 1.0},
        {"dynatemp_range": 0.5},
        {"typical_p": 0.9, "top_k": 20, "top_p": 0.9, "min_p": 0.1},
    ],
)
def test_every_extra_sampler_generates_reproducibly(model: HfModel, changes: dict[str, object]) -> None:
    params = SAMPLING.overlay({**changes, "ban_eos_token": True})
    first = run(model, STORY_PROMPT, params)
    assert sum(chunk.tokens for chunk in first) == params.max_new_tokens
    assert text_of(first) == text_of(run(model, STORY_PROMPT, params))


def test_repetition_penalty_changes_greedy_output(model: HfModel) -> None:
    plain = text_of(run(model, STORY_PROMPT, GREEDY.overlay({"max_new_tokens": 40})))
    penalized = text_of(
        run(model, STORY_PROMPT, GREEDY.overlay({"max_new_tokens": 40, "repetition_penalty": 2.5}))
    )
    assert plain != penalized


def test_tokenize_detokenize_round_trip(model: HfModel) -> None:
    text = "The robot counted the boats. <|im_end|>\nÜnïcödé ✓"
    tokens = model.tokenize(text)
    assert model.detokenize(tokens) == text
    assert model.tokenize(text, add_bos=True) == [model.tokenize("<|endoftext|>")[0], *tokens]
    assert len(model.tokenize("<|im_start|>")) == 1  # special tokens in the text are parsed as such


def test_facts(model: HfModel, tiny_llama_dir: Path) -> None:
    facts = model.facts
    assert facts.loader == "transformers"
    assert facts.context_length == 512
    assert facts.chat_template == CHATML_TEMPLATE
    assert (facts.bos_token, facts.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert facts.extra["device"] == "cpu" and facts.extra["dtype"] == "float32"


def test_max_context_setting_and_prompt_too_long(tiny_llama_dir: Path) -> None:
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings(max_context=16))
    try:
        assert loaded.facts.context_length == 16
        with pytest.raises(LoaderError, match="context holds only 16"):
            run(loaded, STORY_PROMPT * 10, GREEDY)
        chunks = run(loaded, STORY_PROMPT, GREEDY.overlay({"ban_eos_token": True}))
        assert chunks[-1].finish_reason == "length"
        prompt = chunks[-1].prompt
        assert prompt is not None and sum(chunk.tokens for chunk in chunks) == 16 - prompt.tokens
    finally:
        loaded.unload()


def test_unload_frees_the_model(tiny_llama_dir: Path) -> None:
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    run(loaded, STORY_PROMPT, GREEDY)
    ref = weakref.ref(loaded._model)
    loaded.unload()
    assert ref() is None
    with pytest.raises(LoaderError, match="unloaded"):
        run(loaded, STORY_PROMPT, GREEDY)


def test_quantized_folders_are_refused_with_the_right_loader(tiny_gptq_dir: Path, tiny_awq_dir: Path) -> None:
    with pytest.raises(LoaderError, match="is a GPTQ checkpoint: pick the gptq loader"):
        TransformersLoader().load(tiny_gptq_dir, TransformersSettings())
    with pytest.raises(LoaderError, match="is an AWQ checkpoint: pick the awq loader"):
        TransformersLoader().load(tiny_awq_dir, TransformersSettings())


def test_remote_code_needs_the_setting(tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="palabre-custom", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoaderError, match="trust_remote_code=true"):
        TransformersLoader().load(folder, TransformersSettings())


def test_bad_settings_give_clear_errors(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(LoaderError, match="no CUDA GPU"):
            TransformersLoader().load(tiny_llama_dir, TransformersSettings(device="cuda"))
        with pytest.raises(LoaderError, match="need a CUDA GPU"):
            TransformersLoader().load(tiny_llama_dir, TransformersSettings(load_in_4bit=True))
    with pytest.raises(LoaderError, match=r"no config\.json"):
        TransformersLoader().load(tmp_path, TransformersSettings())
    with pytest.raises(LoaderError, match="does not exist"):
        TransformersLoader().load(tmp_path / "missing", TransformersSettings())


def test_service_detects_chatml_and_answers(tmp_path: Path, tiny_llama_dir: Path) -> None:
    service = build_service(make_config(tmp_path / "user_data", tiny_llama_dir))
    try:
        report = service.load_model(tiny_llama_dir.name)
        assert report.state.loader == "transformers"
        detection = service.detection
        assert detection is not None
        assert (detection.template.name, detection.reason) == ("ChatML", "model metadata")
        assert "Paris" in service.stream_completion(CHAT_PROMPT, GREEDY).text()
    finally:
        service.close()


def test_cli_generate_prints_transformers_greedy_text(tmp_path: Path, tiny_llama_dir: Path) -> None:
    expected, _ = reference_greedy(tiny_llama_dir, STORY_PROMPT, 20)
    printed = cli_generate(tiny_llama_dir, "transformers", STORY_PROMPT, tmp_path / "user_data")
    assert printed.strip() == expected.strip()


def test_gguf_file_through_transformers(default_model_path: Path) -> None:
    loaded = TransformersLoader().load(default_model_path, TransformersSettings())
    try:
        assert loaded.facts.chat_template and "<|im_start|>" in loaded.facts.chat_template
        assert "Paris" in text_of(run(loaded, CHAT_PROMPT, GREEDY))
    finally:
        loaded.unload()
