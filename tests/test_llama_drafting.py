"""Speculative decoding (prompt lookup) and KV-cache quantization in the llama.cpp loader, with the real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from loaders.llama_drafting import PromptLookup
from tests.support.config import make_config
from tests.support.servers import Server
from webui.app import build_service
from webui.benchmarks.speculative import CODE as MODULE
from webui.core.engine import EngineError
from webui.core.loader import LoaderError
from webui.core.params import GenerationParams
from webui.core.service import Service

pytestmark = pytest.mark.slow

# The model copies the module it was given: most of the reply is in the prompt, so drafts are kept. (Code
# without counting in it: a near tie, such as which number comes next, can be decided either way by llama.cpp's
# rounding, which depends on how the cache was filled; see loaders.llama_slots.CLOSE_CALL.)
COPY = (
    "<|im_start|>user\nCopy this Python module exactly, in one code block.\n\n```python\n"
    f"{MODULE}```<|im_end|>\n<|im_start|>assistant\n```python\n"
)
GREEDY = GenerationParams(temperature=0, max_new_tokens=160)


def test_prompt_lookup_drafts_what_followed_the_longest_latest_match() -> None:
    lookup = PromptLookup([5, 1, 2, 7, 9, 6, 1, 2, 8, 4, 5, 1, 2])
    assert lookup.draft(3) == [7, 9, 6]  # (5, 1, 2) beats the later but shorter (1, 2)
    lookup.append(3)
    assert lookup.draft(3) == []  # (1, 2, 3) / (2, 3) never came before
    tail = PromptLookup([1, 2, 3, 1, 2])
    assert tail.draft(8) == [3, 1, 2]  # never past the tokens there are
    assert tail.draft(0) == []


def _service(root: Path, model: Path, **settings: object) -> Service:
    service = build_service(make_config(root / "user_data", model))
    service.load_model(model.name, settings={"n_ctx": 2048, "n_threads": 1, **settings})
    return service


@pytest.fixture(scope="module")
def plain_text(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> str:
    service = _service(tmp_path_factory.mktemp("plain"), default_model_path)
    try:
        return service.stream_completion(COPY, GREEDY).text()
    finally:
        service.close()


@pytest.fixture(scope="module")
def drafting(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    service = _service(tmp_path_factory.mktemp("drafting"), default_model_path, draft_model="prompt-lookup")
    yield service
    service.close()


def test_greedy_output_is_the_same_with_drafts_and_the_kept_drafts_are_counted(
    drafting: Service, plain_text: str
) -> None:
    stream = drafting.stream_completion(COPY, GREEDY)
    text = stream.text()
    # The model does copy (a test of drafting, not of a bad reply); how far this tiny model copies before it
    # repeats itself follows the CPU's rounding (past add_item on one machine, past the docstring on another).
    assert '"""Items in a warehouse, saved as JSON."""\n' in plain_text
    assert text == plain_text
    stats = drafting.engine.last_stats
    assert stats is not None and stats.drafted_tokens > 0
    assert 0 < stats.accepted_tokens <= stats.drafted_tokens
    assert stats.tokens_per_decode > 1.2  # each decoding step gave more than one token
    line = drafting.status_line()
    assert f"{stats.accepted_tokens} of {stats.drafted_tokens} drafted tokens kept" in line


def test_drafting_does_not_change_a_seeded_sampled_reply_length_or_stop(drafting: Service) -> None:
    sampled = GenerationParams(temperature=0.8, seed=7, max_new_tokens=60, stop=["def load"])
    text = drafting.stream_completion(COPY, sampled).text()
    assert "def load" not in text and text  # stop strings still cut drafted tokens


def test_a_missing_draft_model_is_refused_with_what_works(tmp_path: Path, default_model_path: Path) -> None:
    service = build_service(make_config(tmp_path / "user_data", default_model_path))
    try:
        with pytest.raises(EngineError, match=r"tiny-draft\.gguf.*prompt-lookup"):
            service.load_model(default_model_path.name, settings={"draft_model": "tiny-draft.gguf"})
    finally:
        service.close()


def test_a_draft_model_of_the_same_vocabulary_drafts_for_the_model(
    tmp_path: Path, default_model_path: Path, plain_text: str
) -> None:
    """The default model drafting for itself: greedy, so it guesses right nearly every time."""
    config = make_config(tmp_path / "user_data", default_model_path)
    (config.models_dir / "draft-copy.gguf").symlink_to(default_model_path.resolve())
    service = build_service(config)
    try:
        service.load_model(
            default_model_path.name,
            settings={"n_ctx": 2048, "n_threads": 1, "draft_model": "draft-copy.gguf"},
        )
        assert service.stream_completion(COPY, GREEDY).text() == plain_text
        stats = service.engine.last_stats
        assert stats is not None and stats.drafted_tokens > 0
        assert stats.acceptance_rate > 0.8
    finally:
        service.close()


def test_a_draft_model_with_another_vocabulary_is_refused() -> None:
    from loaders.llama_drafting import _check_vocabulary

    class Vocab:
        def __init__(self, words: list[bytes]) -> None:
            self.words = words

    class Lib:
        @staticmethod
        def llama_vocab_n_tokens(vocab: Vocab) -> int:
            return len(vocab.words)

        @staticmethod
        def llama_vocab_get_text(vocab: Vocab, token: int) -> bytes:
            return vocab.words[token]

    ours = Vocab([b"a", b"b", b"c"])
    _check_vocabulary(Lib, "same.gguf", Vocab([b"a", b"b", b"c"]), ours)
    with pytest.raises(LoaderError, match=r"other\.gguf has another vocabulary \(4 tokens"):
        _check_vocabulary(Lib, "other.gguf", Vocab([b"a", b"b", b"c", b"d"]), ours)
    with pytest.raises(LoaderError, match="token 1 differs"):
        _check_vocabulary(Lib, "other.gguf", Vocab([b"a", b"x", b"c"]), ours)


@pytest.mark.parametrize(("key", "value"), [("q8_0", "q8_0"), ("q4_0", "q4_0"), ("f16", "q8_0")])
def test_a_quantized_kv_cache_loads_and_answers(
    tmp_path: Path, default_model_path: Path, key: str, value: str
) -> None:
    service = _service(tmp_path, default_model_path, cache_type_k=key, cache_type_v=value)
    try:
        text = service.stream_completion(COPY, GenerationParams(temperature=0, max_new_tokens=24)).text()
        assert "import json" in text  # the copy begins as it should
        settings = service.engine.require_model().settings
        assert (settings.cache_type_k, settings.cache_type_v) == (key, value)
    finally:
        service.close()


def test_drafting_through_the_api_with_the_openai_client(
    tmp_path: Path, default_model_path: Path, plain_text: str
) -> None:
    args = ["--setting", "draft_model=prompt-lookup", "--setting", "n_threads=1"]
    with Server(tmp_path, model=default_model_path, extra_args=args).running() as server:
        client = openai.OpenAI(base_url=f"{server.url}v1", api_key="none")
        streamed = client.completions.create(
            model="default", prompt=COPY, max_tokens=160, temperature=0, stream=True
        )
        assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == plain_text
        # Not the same prompt again: its last token would be evaluated alone after the cached rest, and
        # llama.cpp's one-token and batched kernels round differently (a near tie could go the other way).
        reply = client.completions.create(model="default", prompt=f"Hi. {COPY}", max_tokens=40, temperature=0)
        assert "import json" in reply.choices[0].text


def test_flash_attention_is_auto_and_on_for_quantized_values() -> None:
    from loaders.llama_cpp import LlamaCppSettings

    assert LlamaCppSettings().flash_attention() == -1  # llama.cpp decides, as llama-server does
    assert LlamaCppSettings(flash_attn="off").flash_attention() == 0
    assert LlamaCppSettings(flash_attn="off", cache_type_v="q8_0").flash_attention() == 1  # required
    assert LlamaCppSettings(flash_attn=True).flash_attn == "on"  # settings saved before it had three values
    assert LlamaCppSettings.model_validate({"flash_attn": "false"}).flash_attn == "off"


def test_greedy_drafting_stays_exact_where_batches_round_differently(
    tmp_path: Path, default_model_path: Path
) -> None:
    """With flash attention off, llama.cpp's batched rows differ from one-token decoding on this model: the load
    measures it, and a greedy reply is then not drafted (the batch's rounding would stay in the cache and could
    move a later near tie), so it is the undrafted one; a sampled reply still drafts."""
    from loaders.llama_drafting import CLOSE_CALL

    plain = _service(tmp_path / "plain", default_model_path, flash_attn="off")
    try:
        expected = plain.stream_completion(COPY, GREEDY).text()
    finally:
        plain.close()
    service = _service(
        tmp_path / "drafting", default_model_path, flash_attn="off", draft_model="prompt-lookup"
    )
    try:
        exactness = service.engine.require_model().model._require_slots().exactness
        assert exactness.exact_rows == 1 and exactness.margin >= CLOSE_CALL
        assert service.stream_completion(COPY, GREEDY).text() == expected
        stats = service.engine.last_stats
        assert stats is not None and stats.drafted_tokens == 0
        sampled = GenerationParams(temperature=0.3, seed=3, max_new_tokens=80)
        assert service.stream_completion(COPY, sampled).text()
        stats = service.engine.last_stats
        assert stats is not None and stats.accepted_tokens > 0
    finally:
        service.close()


def test_greedy_drafting_on_a_model_whose_larger_batches_round_differently(
    tmp_path: Path, gemma_model_path: Path
) -> None:
    """gemma-3-270m (Q4_K_M): llama.cpp's kernels for batches of 4 rows and more round differently here, so
    greedy drafts stay within the rows measured exact at load; the reply is still the undrafted one."""
    prompt = f"Copy this Python module exactly.\n\n{MODULE}\n\nCopy:\n```python\n"
    replies = []
    for name, settings in (("plain", {}), ("drafting", {"draft_model": "prompt-lookup"})):
        service = _service(tmp_path / name, gemma_model_path, **settings)
        try:
            replies.append(service.stream_completion(prompt, GREEDY).text())
            if settings:
                exactness = service.engine.require_model().model._require_slots().exactness
                assert 1 <= exactness.exact_rows <= 9 and exactness.margin >= 1.5
                stats = service.engine.last_stats
                assert stats is not None and stats.accepted_tokens > 0
        finally:
            service.close()
    assert replies[0] == replies[1]
