"""The llama.cpp loader through the real engine with real GGUF models (SmolLM2 and the Gemma 3 base model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import make_config
from webui.app import build_service
from webui.core.engine import EngineError
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, Service
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

CHATML_QUESTION = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = GenerationParams(temperature=0, max_new_tokens=24)


@pytest.fixture
def gemma_service(tmp_path: Path, gemma_model_path: Path, default_model_path: Path) -> Iterator[Service]:
    service = build_service(make_config(tmp_path / "user_data", gemma_model_path, default_model_path))
    yield service
    service.close()


def test_greedy_answer_and_stats(smol_service: Service) -> None:
    job = smol_service.stream_completion(CHATML_QUESTION, GREEDY)
    chunks = list(job)
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    assert len([c for c in chunks if c.text]) > 3  # streamed token by token, not in one piece
    stats = chunks[-1].stats
    assert stats is not None and chunks[-1].finish_reason == "stop"
    assert stats.prompt_tokens == len(smol_service.engine.require_model().model.tokenize(CHATML_QUESTION))
    assert stats.new_tokens > 3 and stats.tokens_per_second > 0


def test_same_seed_same_text_and_other_seed_differs(smol_service: Service) -> None:
    params = GenerationParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=40, seed=1234)
    prompt = "Once upon a time"
    first = smol_service.stream_completion(prompt, params).text()
    second = smol_service.stream_completion(prompt, params).text()
    other = smol_service.stream_completion(prompt, params.overlay({"seed": 99})).text()
    assert first == second
    assert len(first) > 20
    assert other != first


def test_cancel_stops_mid_stream(smol_service: Service) -> None:
    job = smol_service.stream_completion(
        "Count from one to one hundred:", GenerationParams(max_new_tokens=300, ban_eos_token=True)
    )
    seen = 0
    last = None
    for chunk in job:
        if seen < 5 <= seen + chunk.tokens:  # a chunk can carry several tokens (stream_interval)
            job.cancel()
        seen += chunk.tokens
        last = chunk
    assert last is not None and last.finish_reason == "cancelled"
    # Well short of the 300 asked: what was generated while the reader caught up (a busy machine lags it).
    assert last.stats is not None and last.stats.new_tokens < 40


def test_stop_strings_with_the_real_model(smol_service: Service) -> None:
    params = GREEDY.overlay({"stop": ["Paris"]})
    job = smol_service.stream_completion(CHATML_QUESTION, params)
    text = job.text()
    assert "Paris" not in text and text.startswith("The capital of France is")
    assert job.finish_reason == "stop"


def test_max_new_tokens_ends_with_length(smol_service: Service) -> None:
    job = smol_service.stream_completion("The", GenerationParams(max_new_tokens=5, ban_eos_token=True))
    job.text()
    assert job.finish_reason == "length" and job.stats is not None and job.stats.new_tokens == 5


def test_second_chat_turn_reuses_the_evaluated_prefix(smol_service: Service) -> None:
    settings = ChatSettings(mode="instruct")
    history = [ChatMessage("user", "What is the capital of France?")]
    first = smol_service.stream_chat_reply(history, settings, GREEDY)
    reply = "".join(c.text for c in first)
    history += [ChatMessage("assistant", reply), ChatMessage("user", "And of Germany?")]
    second = smol_service.stream_chat_reply(history, settings, GREEDY)
    list(second)
    stats = second.stats
    assert stats is not None
    assert stats.reused_prompt_tokens >= first.stats.prompt_tokens - 2 if first.stats else False
    assert stats.prompt_tokens > stats.reused_prompt_tokens


def test_sampler_chain_with_every_sampler_enabled(smol_service: Service) -> None:
    params = GenerationParams(
        temperature=0.9, dynatemp_range=0.3, top_k=30, top_p=0.9, min_p=0.02, typical_p=0.95, top_n_sigma=2.0,
        xtc_probability=0.3, repetition_penalty=1.15, frequency_penalty=0.2, presence_penalty=0.2,
        dry_multiplier=0.8, logit_bias={0: -100}, seed=7, max_new_tokens=20,
    )  # fmt: skip
    assert smol_service.stream_completion("The weather today", params).text()
    mirostat = GenerationParams(mirostat_mode=2, seed=7, max_new_tokens=10)
    assert smol_service.stream_completion("The weather today", mirostat).text()


def test_grammar_constrains_the_reply(smol_service: Service) -> None:
    params = GREEDY.overlay({"grammar": 'root ::= ("yes" | "no")', "max_new_tokens": 5})
    text = smol_service.stream_completion(CHATML_QUESTION, params).text()
    assert text in ("yes", "no")
    with pytest.raises(EngineError, match="grammar"):
        smol_service.stream_completion("x", GREEDY.overlay({"grammar": "root ::= ("})).text()


def test_tokenize_detokenize_round_trip(smol_service: Service) -> None:
    model = smol_service.engine.require_model().model
    text = "Héllo, wörld! 1 + 1 = 2 <|im_start|>"
    tokens = model.tokenize(text)
    assert model.detokenize(tokens) == text
    assert "<|im_start|>" in model.facts.bos_token + model.facts.eos_token or tokens


def test_prompt_longer_than_context_is_a_clear_error(tmp_path: Path, default_model_path: Path) -> None:
    service = build_service(make_config(tmp_path / "ud", default_model_path))
    try:
        service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 256})
        with pytest.raises(EngineError, match="context holds only 256"):
            service.stream_completion("word " * 400, GREEDY).text()
        assert service.stream_completion("The", GREEDY.overlay({"max_new_tokens": 3})).text()
    finally:
        service.close()


def test_corrupt_gguf_keeps_the_previous_model(smol_service: Service) -> None:
    broken = smol_service.engine.models_dir / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(EngineError, match=r"broken\.gguf"):
        smol_service.load_model("broken.gguf")
    assert smol_service.engine.require_model().entry.name == DEFAULT_MODEL_FILE
    assert "Paris" in smol_service.stream_completion(CHATML_QUESTION, GREEDY).text()


def test_unload_frees_the_model(smol_service: Service) -> None:
    model = smol_service.engine.require_model().model
    smol_service.unload_model()
    assert smol_service.engine.state is None
    assert getattr(model, "_llm", "missing") is None
    with pytest.raises(EngineError, match="No model is loaded"):
        smol_service.stream_completion("x", GREEDY)


def test_smollm_template_is_detected_from_metadata(smol_service: Service) -> None:
    detection = smol_service.detection
    assert detection is not None and detection.template.name == "ChatML"
    assert detection.message() == (
        'It seems to be an instruction-following model with template "ChatML". '
        "In the Chat tab, instruct or chat-instruct modes should be used."
    )


def test_gemma_base_model_falls_back_and_generates(gemma_service: Service, gemma_model_path: Path) -> None:
    report = gemma_service.load_model(gemma_model_path.name, settings={"n_ctx": 1024})
    assert report.detection.reason == "fallback"
    assert report.detection.template.name == "Alpaca"
    params = GenerationParams(temperature=0.8, seed=42, max_new_tokens=16)
    first = gemma_service.stream_completion("The capital of France is", params).text()
    again = gemma_service.stream_completion("The capital of France is", params).text()
    assert first and first == again
    job = gemma_service.stream_completion(
        "Write a long story about a dragon.", GenerationParams(max_new_tokens=200, ban_eos_token=True)
    )
    for index, _chunk in enumerate(job):
        if index == 3:
            job.cancel()
    assert job.finish_reason == "cancelled"
    # Switching to another model frees Gemma and works.
    gemma_service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 1024})
    assert gemma_service.detection is not None and gemma_service.detection.template.name == "ChatML"


def test_model_loaded_by_path_is_listed_and_reloadable(tmp_path: Path, default_model_path: Path) -> None:
    service = build_service(make_config(tmp_path / "empty"))
    try:
        service.load_model(str(default_model_path), settings={"n_ctx": 512})
        assert [e.name for e in service.models()] == [DEFAULT_MODEL_FILE]
        service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 1024})
        assert service.engine.require_model().model.facts.context_length == 1024
    finally:
        service.close()
