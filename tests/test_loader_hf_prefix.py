"""Prompt-prefix reuse in the Transformers, GPTQ and AWQ loaders: the next prompt evaluates only what it does not
share with the last prompt and reply, and greedy output is exactly what a full evaluation gives."""

from __future__ import annotations

import gc
import itertools
import json
import shutil
import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loaders.awq import AwqLoader, AwqSettings
from loaders.gptq import GptqLoader, GptqSettings
from loaders.transformers import HfModel, TransformersLoader, TransformersSettings
from tests.support.config import make_config
from webui.app import build_service
from webui.core.loader import CancelToken, Chunk, LoaderError
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0, max_new_tokens=24)
# Penalties and DRY read the token history: they must see the whole prompt when most of it comes from the cache.
PENALIZED = GREEDY.overlay({"repetition_penalty": 1.3, "presence_penalty": 0.3, "dry_multiplier": 0.8})
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
STORY = "Once upon a time there was a small robot who lived in a quiet village by the sea."


def user_turn(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class Reply:
    """What a user sees of one generation, and how much of its prompt came from the cache."""

    text: str
    tokens: int
    finish: str | None
    prompt_tokens: int
    reused: int


def reply_of(chunks: list[Chunk]) -> Reply:
    last = chunks[-1]
    assert last.prompt is not None
    return Reply(
        text="".join(chunk.text for chunk in chunks),
        tokens=sum(chunk.tokens for chunk in chunks),
        finish=last.finish_reason,
        prompt_tokens=last.prompt.tokens,
        reused=last.prompt.reused,
    )


def generate(model: HfModel, prompt: str, params: GenerationParams = GREEDY) -> Reply:
    return reply_of(list(model.stream(prompt, params, CancelToken())))


def same_output(reused: Reply, fresh: Reply) -> None:
    """Token for token: the same text, the same number of tokens, the same ending."""
    assert (reused.text, reused.tokens, reused.finish) == (fresh.text, fresh.tokens, fresh.finish)
    assert reused.prompt_tokens == fresh.prompt_tokens
    assert fresh.reused == 0


def chat(model: HfModel, fresh: HfModel, questions: list[str], params: GenerationParams) -> list[Reply]:
    """A growing chat: each turn's prompt is the last prompt, its reply and a new question."""
    prompt = SYSTEM
    replies = []
    for question in questions:
        prompt += user_turn(question)
        reply = generate(model, prompt, params)
        same_output(reply, generate(fresh, prompt, params))
        replies.append(reply)
        prompt += reply.text + "<|im_end|>\n"
    return replies


@pytest.fixture(scope="module")
def model(tiny_llama_dir: Path) -> Iterator[HfModel]:
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    yield loaded
    loaded.unload()


@pytest.fixture(scope="module")
def fresh(tiny_llama_dir: Path) -> Iterator[HfModel]:
    """The same checkpoint with reuse turned off: every prompt is evaluated in full."""
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings(prompt_cache=False))
    yield loaded
    loaded.unload()


@pytest.mark.parametrize("params", [GREEDY, PENALIZED], ids=["greedy", "penalties"])
def test_growing_chat_reuses_the_history(model: HfModel, fresh: HfModel, params: GenerationParams) -> None:
    questions = ["What is the capital of France?", "What is the capital of Italy?", "What do cats like?"]
    replies = chat(model, fresh, questions, params)
    assert "Paris" in replies[0].text and "Rome" in replies[1].text
    for previous, reply in itertools.pairwise(replies):
        # Everything up to the end of the last reply comes from the cache; only the new message is evaluated.
        assert previous.prompt_tokens + previous.tokens <= reply.reused < reply.prompt_tokens


def test_prompt_sharing_part_of_the_prefix(model: HfModel, fresh: HfModel) -> None:
    first = SYSTEM + user_turn("What is the capital of Spain?")
    second = SYSTEM + user_turn("How many legs does a spider have?")
    generate(model, first)
    reply = generate(model, second)
    same_output(reply, generate(fresh, second))
    shared = len(model.tokenize(SYSTEM + "<|im_start|>user\n", add_bos=True))
    assert shared <= reply.reused < reply.prompt_tokens - 5
    assert "eight" in reply.text


def test_identical_prompt_twice(model: HfModel, fresh: HfModel) -> None:
    prompt = SYSTEM + user_turn("What is the capital of Japan?")
    first = generate(model, prompt)
    second = generate(model, prompt)
    same_output(second, generate(fresh, prompt))
    assert (second.text, second.tokens) == (first.text, first.tokens)
    assert second.reused == second.prompt_tokens - 1  # the last token is evaluated again, for fresh logits


def test_shorter_prompt_than_the_cached_one(model: HfModel, fresh: HfModel) -> None:
    generate(model, STORY)
    short = STORY[:30]
    reply = generate(model, short)
    same_output(reply, generate(fresh, short))
    assert reply.reused == reply.prompt_tokens - 1
    longer = generate(model, STORY)  # and back to the long one, after the cache was cropped
    same_output(longer, generate(fresh, STORY))
    assert reply.prompt_tokens - 1 <= longer.reused < longer.prompt_tokens


def test_after_a_cancelled_generation(model: HfModel, fresh: HfModel) -> None:
    prompt = SYSTEM + user_turn("Who are you?")
    cancel = CancelToken()
    chunks = []
    for chunk in model.stream(prompt, GREEDY.overlay({"max_new_tokens": 200, "ban_eos_token": True}), cancel):
        chunks.append(chunk)
        if len(chunks) == 3:
            cancel.cancel()
    cut = reply_of(chunks)
    assert cut.finish == "cancelled" and 0 < cut.tokens < 50
    follow_up = prompt + cut.text + "<|im_end|>\n" + user_turn("What is two plus two?")
    reply = generate(model, follow_up)
    same_output(reply, generate(fresh, follow_up))
    assert reply.reused >= cut.prompt_tokens
    again = generate(model, prompt)
    same_output(again, generate(fresh, prompt))


def test_reader_closing_early_then_continuing(model: HfModel, fresh: HfModel) -> None:
    stream = model.stream(
        STORY, GREEDY.overlay({"max_new_tokens": 200, "ban_eos_token": True}), CancelToken()
    )
    assert isinstance(stream, Generator)
    next(stream)
    stream.close()  # what the engine does when a stop string matched
    reply = generate(model, STORY + " The robot")
    same_output(reply, generate(fresh, STORY + " The robot"))
    assert reply.reused > 0


def test_seeded_sampling_is_unchanged_by_reuse(model: HfModel, fresh: HfModel) -> None:
    params = GenerationParams(temperature=1.2, top_k=40, max_new_tokens=24, seed=77, ban_eos_token=True)
    prompt = SYSTEM + user_turn("Say hello.")
    generate(model, prompt)
    reply = generate(model, prompt, params)
    assert reply.reused > 0
    same_output(reply, generate(fresh, prompt, params))


def test_failed_generation_leaves_no_cache(
    model: HfModel, fresh: HfModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = SYSTEM + user_turn("What colour is the sky?")
    generate(model, prompt)
    forward = model._model.forward
    calls = 0

    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the cache already took this generation's first tokens
            raise RuntimeError("device lost")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model._model, "forward", failing_forward)
    with pytest.raises(LoaderError, match="device lost"):
        generate(model, prompt + "The")
    monkeypatch.undo()
    reply = generate(model, prompt)
    assert reply.reused == 0  # evaluated in full: the half-filled cache was dropped
    same_output(reply, generate(fresh, prompt))


def test_unload_drops_the_cache_and_a_new_load_starts_empty(tiny_llama_dir: Path) -> None:
    loaded = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    generate(loaded, STORY)
    entry = loaded._prefix._entry
    assert entry is not None
    cache = weakref.ref(entry.cache)
    del entry
    loaded.unload()
    gc.collect()
    assert cache() is None
    again = TransformersLoader().load(tiny_llama_dir, TransformersSettings())
    try:
        assert generate(again, STORY).reused == 0
        assert generate(again, STORY).reused > 0
    finally:
        again.unload()


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_quantized_loaders_reuse_the_prefix_too(method: str, tiny_gptq_dir: Path, tiny_awq_dir: Path) -> None:
    loader, settings, folder = {
        "gptq": (GptqLoader, GptqSettings, tiny_gptq_dir),
        "awq": (AwqLoader, AwqSettings, tiny_awq_dir),
    }[method]
    model = loader().load(folder, settings())
    fresh = loader().load(folder, settings(prompt_cache=False))
    try:
        replies = chat(model, fresh, ["What is the capital of France?", "Say hello."], GREEDY)
        assert replies[1].reused >= replies[0].prompt_tokens + replies[0].tokens
        short = SYSTEM + user_turn("What is")
        same_output(generate(model, short), generate(fresh, short))
    finally:
        model.unload()
        fresh.unload()


def test_second_chat_turn_reports_reused_tokens_through_the_service(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    service = build_service(make_config(tmp_path / "user_data", tiny_llama_dir))
    try:
        service.load_model(tiny_llama_dir.name)
        settings = ChatSettings(mode="instruct")
        history = [ChatMessage("user", "What is the capital of France?")]
        first = service.stream_chat_reply(history, settings, GREEDY)
        reply = "".join(chunk.text for chunk in first)
        assert "Paris" in reply and first.stats is not None
        assert first.stats.reused_prompt_tokens == 0
        history += [ChatMessage("assistant", reply), ChatMessage("user", "What is the capital of Italy?")]
        second = service.stream_chat_reply(history, settings, GREEDY)
        assert "Rome" in "".join(chunk.text for chunk in second)
        stats = second.stats
        assert stats is not None
        assert first.stats.prompt_tokens <= stats.reused_prompt_tokens < stats.prompt_tokens
        assert f"{stats.reused_prompt_tokens} reused" in service.status_line()
    finally:
        service.close()


def variant(tmp_path: Path, source: Path, file: str, changes: dict[str, Any]) -> Path:
    """A copy of the tiny checkpoint with ``changes`` written into one of its JSON files."""
    folder = tmp_path / f"{source.name}-variant"
    shutil.copytree(source, folder)
    data = json.loads((folder / file).read_text())
    (folder / file).write_text(json.dumps({**data, **changes}))
    return folder


def test_checkpoint_naming_a_cache_implementation_evaluates_in_full(
    tmp_path: Path, tiny_llama_dir: Path
) -> None:
    # generate() refuses a cache passed in when the checkpoint's generation_config names one, even "dynamic".
    folder = variant(tmp_path, tiny_llama_dir, "generation_config.json", {"cache_implementation": "dynamic"})
    model = TransformersLoader().load(folder, TransformersSettings())
    fresh = TransformersLoader().load(folder, TransformersSettings(prompt_cache=False))
    try:
        replies = chat(model, fresh, ["What is the capital of Spain?", "What is two plus two?"], GREEDY)
        assert [reply.reused for reply in replies] == [0, 0]
        assert "Madrid" in replies[0].text
    finally:
        model.unload()
        fresh.unload()


def test_sliding_window_model_evaluates_the_whole_prompt(tmp_path: Path, tiny_llama_dir: Path) -> None:
    # The same weights as a Mistral with an 8-token window: its cache drops old tokens, so it is never reused.
    changes = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 8}
    folder = variant(tmp_path, tiny_llama_dir, "config.json", changes)
    model = TransformersLoader().load(folder, TransformersSettings())
    fresh = TransformersLoader().load(folder, TransformersSettings(prompt_cache=False))
    try:
        replies = chat(model, fresh, ["What is the capital of Spain?", "What is two plus two?"], GREEDY)
        assert [reply.reused for reply in replies] == [0, 0]
        assert all(reply.tokens > 3 for reply in replies)
    finally:
        model.unload()
        fresh.unload()
