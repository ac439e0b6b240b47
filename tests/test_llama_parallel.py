"""Parallel slots in the llama.cpp loader (``parallel`` setting), through the real engine and a real server."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.config import make_config
from tests.support.servers import Server
from tests.support.vision_models import VisionModels
from tests.support.waiting import eventually
from webui.app import build_service
from webui.core.engine import GenerationJob, QueueSnapshot
from webui.core.grammar import json_grammar
from webui.core.loader import Chunk, sees_images
from webui.core.params import GenerationParams
from webui.core.service import Service
from webui.provision import DEFAULT_MODEL_FILE

pytestmark = pytest.mark.slow

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "def fibonacci(n):",
]
GREEDY = GenerationParams(temperature=0, max_new_tokens=40)
LONG = GenerationParams(temperature=0, max_new_tokens=400, ban_eos_token=True)


def _service(root: Path, model: Path, **settings: object) -> Service:
    service = build_service(make_config(root / "user_data", model))
    service.load_model(model.name, settings={"n_ctx": 2048, "n_threads": 1, **settings})
    return service


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    service = _service(tmp_path_factory.mktemp("parallel"), default_model_path, parallel=4)
    yield service
    service.close()


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> list[str]:
    """Each prompt's greedy text from the one-at-a-time loader (parallel=1)."""
    # The same attention as the slots (flash attention is on by default with parallel slots).
    service = _service(tmp_path_factory.mktemp("alone"), default_model_path, flash_attn="on", parallel=1)
    try:
        return [service.stream_completion(prompt, GREEDY).text() for prompt in PROMPTS]
    finally:
        service.close()


def _collect(jobs: list[GenerationJob]) -> list[list[Chunk]]:
    """Read every job's stream in its own thread, as concurrent clients do."""
    out: list[list[Chunk]] = [[] for _ in jobs]

    def read(index: int) -> None:
        out[index] = list(jobs[index])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def _stop(jobs: list[GenerationJob]) -> None:
    """Cancel ``jobs`` and read to the end those whose stream nobody read yet."""
    for job in jobs:
        job.cancel()
    _collect([job for job in jobs if job.finish_reason is None])


def _running(service: Service) -> int:
    return len(service.engine.queue_snapshot().running_jobs)


def test_the_loaded_model_says_it_is_parallel(parallel: Service) -> None:
    state = parallel.engine.require_model()
    assert state.capabilities.parallel
    assert state.model.facts.context_length == 2048  # per slot
    assert state.model.facts.extra["parallel"] == "4"
    assert "4 slots: up to 4 replies generate together." in parallel.status_line()


def test_automatic_slots_fit_the_memory_budget(tmp_path: Path, default_model_path: Path) -> None:
    """No parallel setting: 4 slots where they fit the budget, else 1; the fit line says what a load would get."""
    settings = {"n_ctx": 2048, "n_threads": 1}
    name = default_model_path.name
    roomy = build_service(make_config(tmp_path / "roomy", default_model_path))
    try:
        assert roomy.with_slots(name, None, settings) == {**settings, "parallel": 4}
        assert roomy.with_slots(name, None, {**settings, "parallel": 2}) == {**settings, "parallel": 2}
        assert roomy.with_slots(name, None, {**settings, "parallel": "0"}) == {**settings, "parallel": 4}
        roomy.load_model(name, settings=settings)
        state = roomy.engine.require_model()
        assert state.model.facts.extra["parallel"] == "4" and state.capabilities.parallel
        assert state.settings.parallel == 0  # kept as asked: a reload chooses again
        four = state.memory_bytes
    finally:
        roomy.close()
    config = make_config(tmp_path / "snug", default_model_path)
    snug = build_service(dataclasses.replace(config, model_memory_budget=four - 2**20))
    try:
        assert snug.with_slots(name, None, settings) == {**settings, "parallel": 1}
        snug.load_model(name, settings=settings)  # one slot fits the budget: loaded, not refused
        state = snug.engine.require_model()
        assert state.model.facts.extra["parallel"] == "1" and not state.capabilities.parallel
        assert state.memory_bytes < four
        assert "slots" not in snug.status_line()
    finally:
        snug.close()


def test_four_concurrent_greedy_requests_give_the_text_each_gives_alone(
    parallel: Service, alone: list[str]
) -> None:
    jobs = [parallel.engine.submit(prompt, GREEDY) for prompt in PROMPTS]
    results = _collect(jobs)
    assert ["".join(c.text for c in chunks) for chunks in results] == alone
    for prompt, chunks in zip(PROMPTS, results, strict=True):
        stats = chunks[-1].stats
        assert stats is not None
        # Per-request stats add up: tokens streamed, prompt tokens as the model counts them.
        assert stats.new_tokens == sum(c.tokens for c in chunks)
        assert stats.prompt_tokens == len(parallel.engine.require_model().model.tokenize(prompt))
        assert 0 <= stats.reused_prompt_tokens < stats.prompt_tokens


def test_all_four_run_at_once(parallel: Service) -> None:
    jobs = [parallel.engine.submit(prompt, LONG) for prompt in PROMPTS]
    try:
        eventually(lambda: _running(parallel) == 4, "four generations running together")
        snapshot = parallel.engine.queue_snapshot()
        assert snapshot.activity == "generating" and snapshot.queued == ()
        assert {job.id for job in snapshot.running_jobs} == {job.id for job in jobs}
    finally:
        _stop(jobs)
    eventually(lambda: parallel.engine.queue_snapshot().running is None, "every slot free again")


def test_each_request_keeps_its_own_sampler_params(parallel: Service) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    seeded = GenerationParams(temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=30, seed=77)
    requests = [
        (PROMPTS[2], GenerationParams(temperature=0, max_new_tokens=5)),
        (PROMPTS[0], GenerationParams(temperature=0, max_new_tokens=40, stop=["Paris"])),
        (PROMPTS[0], GenerationParams(temperature=0, max_new_tokens=60, grammar=json_grammar(schema))),
        ("Once upon a time", seeded),
    ]
    seeded_alone = parallel.stream_completion("Once upon a time", seeded).text()
    jobs = [parallel.engine.submit(prompt, params) for prompt, params in requests]
    short, stopped, shaped, sampled = _collect(jobs)

    assert short[-1].stats is not None and short[-1].stats.new_tokens == 5
    assert short[-1].finish_reason == "length"
    stopped_text = "".join(c.text for c in stopped)
    assert stopped[-1].finish_reason == "stop" and "Paris" not in stopped_text
    assert jobs[1].stop_string == "Paris"
    reply = json.loads("".join(c.text for c in shaped))
    assert set(reply) == {"city", "population"} and isinstance(reply["population"], int)
    assert "".join(c.text for c in sampled) == seeded_alone


def test_cancelling_one_frees_its_slot_while_the_others_go_on(parallel: Service) -> None:
    jobs = [parallel.engine.submit(prompt, LONG) for prompt in PROMPTS]
    try:
        eventually(lambda: _running(parallel) == 4, "four generations running")
        late = parallel.engine.submit(PROMPTS[0], GREEDY)
        assert [job.id for job in parallel.engine.queue_snapshot().queued] == [late.id]
        cancelled = jobs[1]
        cancelled.cancel()
        chunks = list(cancelled)
        assert chunks[-1].finish_reason == "cancelled"
        # Its slot goes to the waiting request, which runs to the end while three long ones still run.
        assert "Paris" in late.text() and late.finish_reason == "stop"
        assert all(job.finish_reason is None for job in (jobs[0], jobs[2], jobs[3]))
        assert _running(parallel) == 3
    finally:
        _stop(jobs)


def test_a_second_chat_turn_reuses_its_prefix_while_other_slots_are_busy(parallel: Service) -> None:
    busy = [parallel.engine.submit(prompt, LONG) for prompt in PROMPTS[2:]]
    try:
        eventually(lambda: _running(parallel) == 2, "two other generations running")
        first_prompt = "<|im_start|>user\nWhat is the largest planet?<|im_end|>\n<|im_start|>assistant\n"
        first = parallel.engine.submit(first_prompt, GREEDY)
        answer = first.text()
        second_prompt = f"{first_prompt}{answer}<|im_end|>\n<|im_start|>user\nAnd the smallest?<|im_end|>\n"
        second = parallel.engine.submit(second_prompt + "<|im_start|>assistant\n", GREEDY)
        second.text()
        assert first.stats is not None and second.stats is not None
        assert second.stats.reused_prompt_tokens >= first.stats.prompt_tokens
        assert second.stats.reused_prompt_tokens < second.stats.prompt_tokens
        assert all(job.finish_reason is None for job in busy)  # they really ran beside it
    finally:
        _stop(busy)


def test_chats_that_open_alike_each_keep_their_own_slot(parallel: Service) -> None:
    """Four chats whose prompts share only the template's first tokens: every first turn takes a slot of its own
    (not the slot of a chat before it that shares those few tokens), so every second turn reuses its own history."""
    topics = ["the sea", "mountains", "old clocks", "bread"]
    firsts = [
        f"<|im_start|>user\nTell me about {topic}.<|im_end|>\n<|im_start|>assistant\n" for topic in topics
    ]
    answers, texts = [], []
    for prompt in firsts:  # one after another, each slot free again when the next chat starts
        answers.append(parallel.engine.submit(prompt, GREEDY))
        texts.append(answers[-1].text())
    for prompt, text, first in zip(firsts, texts, answers, strict=True):
        follow = (
            f"{prompt}{text}<|im_end|>\n<|im_start|>user\nTell me more.<|im_end|>\n<|im_start|>assistant\n"
        )
        second = parallel.engine.submit(follow, GREEDY)
        second.text()
        assert first.stats is not None and second.stats is not None
        assert second.stats.reused_prompt_tokens >= first.stats.prompt_tokens, prompt


def test_a_served_model_streams_four_openai_clients_at_once(tmp_path: Path, default_model_path: Path) -> None:
    """With no parallel setting: the caches of 4 slots of the default model fit any machine that runs the tests."""
    server = Server(tmp_path, model=default_model_path)
    with server.running():
        client = openai.OpenAI(base_url=f"{server.url}v1", api_key="unused", max_retries=0)
        queue_api = httpx.Client(base_url=f"{server.url}v1/internal", timeout=60)
        texts: list[str] = ["" for _ in PROMPTS]
        started = [threading.Event() for _ in PROMPTS]
        finished = [threading.Event() for _ in PROMPTS]
        release = threading.Event()

        def stream(index: int) -> None:
            response = client.completions.create(
                model=DEFAULT_MODEL_FILE,
                prompt=PROMPTS[index],
                max_tokens=400,
                temperature=0,
                stream=True,
                extra_body={"ban_eos_token": True},
            )
            for event in response:
                texts[index] += event.choices[0].text
                started[index].set()
                if len(texts[index]) > 20:
                    release.wait()  # hold every stream open until the queue was read
            finished[index].set()

        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(len(PROMPTS))]
        for thread in threads:
            thread.start()
        try:
            for event in started:
                assert event.wait(120)
            # One at a time, the last stream could start only after the others had finished.
            assert not any(event.is_set() for event in finished)
            queue = queue_api.get("/queue").json()
            assert queue["activity"] == "generating"
            assert queue["running"] is not None
            assert len(queue["running_jobs"]) == 4 and queue["queued"] == []  # all four run: none waits
        finally:
            release.set()
        for thread in threads:
            thread.join(300)
        assert all(len(text) > 20 for text in texts)
        eventually(lambda: queue_api.get("/queue").json()["running"] is None, "the engine is free")


def test_a_freed_slot_goes_to_the_page_before_more_api_requests(parallel: Service) -> None:
    engine = parallel.engine
    with engine.origin("api"):
        api = [engine.submit(prompt, LONG) for prompt in PROMPTS]
        eventually(lambda: _running(parallel) == 4, "four API generations running")
        api_waiting = engine.submit(PROMPTS[0], LONG)
    page = engine.submit(PROMPTS[1], LONG)  # submitted after the waiting API request
    try:
        assert [job.id for job in engine.queue_snapshot().queued] == [api_waiting.id, page.id]
        api[0].cancel()

        def taken_again() -> QueueSnapshot | None:
            snapshot = engine.queue_snapshot()
            running = {job.id for job in snapshot.running_jobs}
            return snapshot if api[0].id not in running and len(running) == 4 else None

        snapshot = eventually(taken_again, "the freed slot taken again")
        assert page.id in {job.id for job in snapshot.running_jobs}
        assert [job.id for job in snapshot.queued] == [api_waiting.id]
    finally:
        _stop([*api, api_waiting, page])


def test_pictures_are_read_per_slot_beside_other_requests(
    tmp_path: Path, vision_models: VisionModels
) -> None:
    """Images go through libmtmd into their own slot's sequence; the replies equal the one-at-a-time ones,
    and a second turn reuses its image from the slot."""
    from tests.support.vision_models import GGUF_NAME, solid_image
    from webui.core.prompt_builder import ChatSettings
    from webui.core.prompts import ChatMessage

    settings = ChatSettings(mode="instruct")
    params = GenerationParams(temperature=0, max_new_tokens=8, seed=1)
    red, blue = solid_image((220, 30, 30)), solid_image((30, 30, 220), (90, 60))
    chats = [
        [ChatMessage("user", "Describe the image.", images=(red,))],
        [ChatMessage("user", "What colour is this?", images=(blue,))],
        [ChatMessage("user", "Say hello.")],
    ]

    def replies(service: Service) -> list[str]:
        streams = [service.stream_chat_reply(chat, settings, params) for chat in chats]
        return ["".join(chunk.text for chunk in stream) for stream in streams]

    def vision(root: Path, **extra: object) -> Service:
        models = root / "user_data" / "models"
        models.mkdir(parents=True)
        for file in (vision_models.gguf, vision_models.mmproj):
            (models / file.name).symlink_to(file)
        service = build_service(make_config(root / "user_data"))
        service.load_model(GGUF_NAME, settings={"n_ctx": 1024, **extra})
        return service

    one = vision(tmp_path / "one")
    try:
        expected = replies(one)
    finally:
        one.close()
    slots = vision(tmp_path / "slots", parallel=3)
    try:
        assert replies(slots) == expected  # submitted together: they run at once
        first = chats[0]
        stream = slots.stream_chat_reply(first, settings, params)
        answer = "".join(chunk.text for chunk in stream)
        second = [*first, ChatMessage("assistant", answer), ChatMessage("user", "Is it red?")]
        stream = slots.stream_chat_reply(second, settings, params)
        "".join(chunk.text for chunk in stream)
        stats = stream.job.stats
        assert stats is not None and stats.reused_prompt_tokens > 0
        model = slots.engine.require_model().model
        assert sees_images(model) and stats.reused_prompt_tokens > model.image_tokens(red)
    finally:
        slots.close()


def test_merged_chunks_keep_each_tokens_text() -> None:
    """Chunks that waited for a busy reader go out as one; the reply reader still reads it token by token."""
    from loaders.llama_slots import _merged

    first = Chunk("Hel", tokens=1, pieces=("Hel",))
    second = Chunk("lo wor", tokens=2, pieces=("lo", " wor"))
    tail = Chunk("ld", finish_reason="stop")  # the decoder's last bytes, no token of its own
    merged = _merged(first, [second, tail])
    assert (merged.text, merged.tokens, merged.finish_reason) == ("Hello world", 3, "stop")
    assert merged.pieces == ("Hel", "lo", " world")
    # A chunk without pieces makes the whole merge unsplittable (never wrongly split).
    assert _merged(first, [Chunk("!", tokens=1)]).pieces == ()
