"""One contract, every loader: the same behaviour through the Engine whatever runs the model.

Each case loads a real checkpoint: the default GGUF (llama.cpp), a tiny llama folder built in the session
(transformers), its GPTQ and AWQ quantizations (gptq, awq), and llama.cpp's OpenAI-compatible server on a
loopback port (remote).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from webui.core.engine import Engine, EngineError
from webui.core.loader import LoaderCapabilities
from webui.core.params import PARAM_NAMES, GenerationParams
from webui.core.registry import LoaderRegistry

pytestmark = pytest.mark.slow

PROMPT = "The history of the printing press begins"


@dataclass(frozen=True)
class LoaderCase:
    """How to load one real model with one loader."""

    loader: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    seeded: bool = True  # the backend makes sampling reproducible from a seed


CASES = ["llama.cpp", "transformers", "gptq", "awq", "remote"]


@pytest.fixture(scope="module")
def remote_server(default_model_path: Path) -> Iterator[str]:
    from tests.support.openai_server import OpenAIServer

    server = OpenAIServer(default_model_path)
    server.start()
    yield server.base_url
    server.stop()


def _case(request: pytest.FixtureRequest, loader: str) -> LoaderCase:
    if loader == "llama.cpp":
        path = request.getfixturevalue("default_model_path")
        return LoaderCase(loader, str(path), {"n_ctx": 1024})
    if loader == "transformers":
        return LoaderCase(loader, str(request.getfixturevalue("tiny_llama_dir")))
    if loader == "gptq":
        return LoaderCase(loader, str(request.getfixturevalue("tiny_gptq_dir")))
    if loader == "awq":
        return LoaderCase(loader, str(request.getfixturevalue("tiny_awq_dir")))
    base_url = request.getfixturevalue("remote_server")
    return LoaderCase(loader, "default", {"base_url": base_url, "endpoint": "completions"})


@pytest.fixture(scope="module", params=CASES)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    case = _case(request, request.param)
    engine = Engine(LoaderRegistry.from_entry_points(), tmp_path_factory.mktemp("models"))
    engine.load(case.name, case.loader, case.settings)
    engine.case = case  # type: ignore[attr-defined]
    yield engine
    engine.close()


def _greedy(max_new_tokens: int = 24, **changes: Any) -> GenerationParams:
    return GenerationParams(temperature=0, max_new_tokens=max_new_tokens, **changes)


def test_loads_and_describes_itself(loaded: Engine) -> None:
    state = loaded.require_model()
    assert state.loader == loaded.case.loader  # type: ignore[attr-defined]
    assert state.model.facts.loader == state.loader
    assert state.model.facts.context_length > 0


def test_claims_its_files_and_gets_its_settings_validated(loaded: Engine) -> None:
    state = loaded.require_model()
    loader = loaded.registry.get(state.loader)
    assert loaded.registry.claimant(state.entry) == state.loader  # what it would infer for these files
    assert type(state.settings) is loader.settings_model
    assert isinstance(state.model.capabilities, LoaderCapabilities)


def test_streams_deltas_and_ends_with_a_reason(loaded: Engine) -> None:
    chunks = list(loaded.generate(PROMPT, _greedy(16)))
    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) >= 2, "a reply arrives in pieces, not in one block"
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.stats is not None and last.stats.prompt_tokens > 0
    assert 0 < last.stats.new_tokens <= 16


def test_greedy_output_is_repeatable(loaded: Engine) -> None:
    first = loaded.submit(PROMPT, _greedy()).text()
    second = loaded.submit(PROMPT, _greedy()).text()
    assert first and first == second


def test_stop_string_ends_the_reply_before_it(loaded: Engine) -> None:
    full = loaded.submit(PROMPT, _greedy(32)).text()
    words = full.split()
    assert len(words) >= 4, f"need a few words to pick a stop string from: {full!r}"
    stop = words[len(words) // 2]
    cut = full[: full.index(stop)]
    job = loaded.submit(PROMPT, _greedy(32, stop=[stop]))
    assert job.text() == cut
    assert job.finish_reason == "stop"


def test_cancel_mid_stream(loaded: Engine) -> None:
    job = loaded.submit(PROMPT, GenerationParams(max_new_tokens=400, ban_eos_token=True, temperature=0))
    received = 0
    for chunk in job:
        received += chunk.tokens
        if received >= 2:
            job.cancel()
    assert job.finish_reason == "cancelled"
    assert job.stats is not None and job.stats.new_tokens < 400


def test_seed_makes_sampling_reproducible(loaded: Engine) -> None:
    if not loaded.case.seeded:  # type: ignore[attr-defined]
        pytest.skip("this backend does not promise seeded sampling")
    params = GenerationParams(temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=24, seed=1234)
    first = loaded.submit(PROMPT, params).text()
    second = loaded.submit(PROMPT, params).text()
    other = loaded.submit(PROMPT, params.model_copy(update={"seed": 99})).text()
    assert first == second
    assert other != first, "a different seed should give a different sample at temperature 1.5"


def test_tokenize_detokenize_round_trip(loaded: Engine) -> None:
    model = loaded.require_model().model
    text = "Hello world, this is Palabre."
    tokens = model.tokenize(text)
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert model.detokenize(tokens).strip() == text


def test_honoured_parameters_are_reported(loaded: Engine) -> None:
    honoured = loaded.require_model().capabilities.honoured_params
    assert honoured <= set(PARAM_NAMES)
    assert {"temperature", "max_new_tokens", "stop"} <= honoured


def test_unload_frees_the_model(loaded: Engine) -> None:
    """Runs last for each case (pytest keeps file order): after it the engine holds nothing."""
    model = loaded.require_model().model
    ref = weakref.ref(model)
    del model
    loaded.unload()
    gc.collect()
    assert loaded.state is None
    assert ref() is None, "something still holds the unloaded model"
    with pytest.raises(EngineError, match="No model is loaded"):
        loaded.submit(PROMPT, _greedy())
