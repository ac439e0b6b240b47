"""Images reach a GGUF vision model through llama.cpp's libmtmd: the tiny vision model converted by llama.cpp's
own converter (tests/support/vision_models.py), its mmproj projector beside it, through the real Service."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.vision_models import GGUF_NAME, IMAGE_TOKENS, MMPROJ_NAME, VisionModels, solid_image
from webui.core.loader import GenerationStats, sees_images
from webui.core.media import ImageError, ModelCannotSeeError
from webui.core.models.capabilities import entry_capabilities
from webui.core.params import GenerationParams
from webui.core.prompt_builder import ChatSettings
from webui.core.prompts import ChatMessage
from webui.core.service import EngineError, Service

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0.0, max_new_tokens=8, seed=1)
SETTINGS = ChatSettings(mode="instruct")
RED = solid_image((220, 30, 30))
BLUE = solid_image((30, 30, 220), (90, 60))


def _service(user_data: Path, *files: Path, **settings: object) -> Service:
    from webui.app import build_service
    from webui.config import AppConfig

    models = user_data / "models"
    models.mkdir(parents=True)
    for file in files:
        (models / file.name).symlink_to(file)
    service = build_service(AppConfig(user_data_dir=user_data))
    service.load_model(GGUF_NAME, settings={"n_ctx": 1024, **settings})
    return service


@pytest.fixture
def vision_service(tmp_path: Path, vision_models: VisionModels) -> Iterator[Service]:
    """The tiny vision GGUF loaded with the projector lying beside it."""
    # One slot: another chat's request then moves the cache on (with several, it takes another slot).
    service = _service(tmp_path / "ud", vision_models.gguf, vision_models.mmproj, parallel=1)
    yield service
    service.close()


def _reply(service: Service, history: list[ChatMessage]) -> tuple[str, GenerationStats]:
    stream = service.stream_chat_reply(history, SETTINGS, GREEDY)
    text = "".join(chunk.text for chunk in stream)
    stats = stream.job.stats
    assert stats is not None
    return text, stats


def _model(service: Service) -> object:
    state = service.loaded
    assert state is not None
    return state.model


def test_the_projector_beside_the_model_is_found_and_listed_as_vision(vision_service: Service) -> None:
    state = vision_service.loaded
    assert state is not None and sees_images(state.model)
    assert state.model.facts.extra["vision"] == f"projector {MMPROJ_NAME}"
    entry = next(e for e in vision_service.models() if e.name == GGUF_NAME)
    capabilities = entry_capabilities(entry)  # what `webui models list` and the Model tab show
    assert capabilities.vision and capabilities.projector == MMPROJ_NAME
    assert "vision" in capabilities.labels
    assert [e.name for e in vision_service.models()] == [GGUF_NAME]  # the projector is not a model


def test_an_image_reaches_the_model_as_image_tokens(vision_service: Service) -> None:
    model = _model(vision_service)
    assert sees_images(model)  # for the type checker
    per_image = model.image_tokens(RED)
    # One tile and the overview, each the projector's 16 embeddings, plus the text libmtmd writes around them.
    assert per_image >= 2 * IMAGE_TOKENS
    question = "What is in this picture?"
    text_only, text_stats = _reply(vision_service, [ChatMessage("user", question)])
    seeing, image_stats = _reply(vision_service, [ChatMessage("user", question, images=(RED,))])
    grown = image_stats.prompt_tokens - text_stats.prompt_tokens
    assert abs(grown - per_image) <= 2, (grown, per_image)  # the marker splits the text: a token either way
    assert seeing != text_only
    again, _ = _reply(vision_service, [ChatMessage("user", question, images=(RED,))])
    assert again == seeing  # greedy replies are deterministic
    other, _ = _reply(vision_service, [ChatMessage("user", question, images=(BLUE,))])
    assert other != seeing  # the model sees which image it was given


def test_the_next_turn_reuses_the_prefix_with_its_image(vision_service: Service) -> None:
    model = _model(vision_service)
    assert sees_images(model)
    first = [ChatMessage("user", "Describe the image in one sentence.", images=(RED,))]
    reply, stats = _reply(vision_service, first)
    assert stats.reused_prompt_tokens == 0
    encoded = model.images_encoded  # type: ignore[attr-defined]
    assert encoded >= 1
    second = [*first, ChatMessage("assistant", reply), ChatMessage("user", "What colour is it?")]
    answer, stats = _reply(vision_service, second)
    assert stats.reused_prompt_tokens > model.image_tokens(RED)
    assert model.images_encoded == encoded  # type: ignore[attr-defined]  # the image was not encoded again
    _reply(vision_service, [ChatMessage("user", "Something else entirely.")])  # the cache moves on
    fresh, stats = _reply(vision_service, second)
    assert stats.reused_prompt_tokens < model.image_tokens(RED)
    assert fresh == answer  # what the reused prefix gave is what evaluating it again gives
    # A new image in the next turn is encoded; the earlier one still comes from the cache.
    third = [*second, ChatMessage("assistant", "ok"), ChatMessage("user", "And this one?", images=(BLUE,))]
    _, stats = _reply(vision_service, third)
    assert stats.reused_prompt_tokens > model.image_tokens(RED)
    assert model.images_encoded > encoded  # type: ignore[attr-defined]


def test_typed_markers_are_just_text(vision_service: Service) -> None:
    model = _model(vision_service)
    assert sees_images(model)
    typed = "<__media__> what is this?"
    _, stats = _reply(vision_service, [ChatMessage("user", typed)])
    prompt = vision_service.build_chat_prompt([ChatMessage("user", typed)], SETTINGS, GREEDY)
    # No image was made of it: the loader counts the text the builder counted (and the BOS it puts first).
    assert stats.prompt_tokens - prompt.prompt_tokens in (0, 1)
    assert "<__media__>" in prompt.text and prompt.images == ()
    # Even the loaded model's own (random) marker, typed into a message, does not open an image slot.
    forged = [ChatMessage("user", f"{model.media_marker} look", images=(RED,))]
    built = vision_service.build_chat_prompt(forged, SETTINGS, GREEDY)
    assert built.text.count(model.media_marker) == 1 and built.images == (RED,)
    _, stats = _reply(vision_service, forged)  # one image for one marker: libmtmd took the pair
    assert abs(stats.prompt_tokens - built.prompt_tokens) <= 3  # text split at the marker: a token or two


def test_truncation_counts_image_tokens(tmp_path: Path, vision_models: VisionModels) -> None:
    service = _service(tmp_path / "ud", vision_models.gguf, vision_models.mmproj, n_ctx=256)
    try:
        model = _model(service)
        assert sees_images(model)
        history: list[ChatMessage] = []
        for turn in range(6):
            colour = (40 * turn, 200 - 30 * turn, 90)
            history += [
                ChatMessage("user", f"Picture {turn}?", images=(solid_image(colour),)),
                ChatMessage("assistant", "A square."),
            ]
        history.append(ChatMessage("user", "Which was first?", images=(RED,)))
        params = GREEDY.model_copy(update={"max_new_tokens": 16})
        built = service.build_chat_prompt(history, SETTINGS, params)
        budget = service.prompt_budget(params)
        assert built.dropped_messages > 0
        assert built.prompt_tokens <= budget.prompt_tokens
        assert 0 < len(built.images) < 7 and built.images[-1] == RED
        assert built.text.count(model.media_marker) == len(built.images)
        stream = service.stream_chat_reply(history, SETTINGS, params)
        "".join(chunk.text for chunk in stream)
        assert stream.job.stats is not None
        # The loader counted what was budgeted (give or take the BOS and the text split at each marker).
        assert abs(stream.job.stats.prompt_tokens - built.prompt_tokens) <= 2 * len(built.images) + 1
    finally:
        service.close()


def test_a_model_without_projector_says_what_is_missing(tmp_path: Path, vision_models: VisionModels) -> None:
    service = _service(tmp_path / "ud", vision_models.gguf)  # the projector is not beside it
    try:
        model = _model(service)
        assert not sees_images(model)
        with pytest.raises(ModelCannotSeeError) as caught:
            service.stream_chat_reply([ChatMessage("user", "What is this?", images=(RED,))], SETTINGS, GREEDY)
        message = str(caught.value)
        assert isinstance(caught.value, ImageError)
        assert GGUF_NAME in message and "no projector" in message and "mmproj" in message
        with pytest.raises(ModelCannotSeeError, match="no projector"):  # the engine checks too
            service.engine.submit("What is this?", GREEDY, images=(RED,))
        text, _ = _reply(service, [ChatMessage("user", "Hello")])  # text still works
        assert isinstance(text, str)
    finally:
        service.close()


def test_the_mmproj_setting_names_a_projector_elsewhere(tmp_path: Path, vision_models: VisionModels) -> None:
    service = _service(tmp_path / "ud", vision_models.gguf, mmproj=str(vision_models.mmproj))
    try:
        assert sees_images(_model(service))
        _, stats = _reply(service, [ChatMessage("user", "What is this?", images=(RED,))])
        assert stats.prompt_tokens > 2 * IMAGE_TOKENS
        with pytest.raises(EngineError, match=r"nowhere-mmproj\.gguf.*\(mmproj setting\) was not found"):
            service.load_model(GGUF_NAME, settings={"mmproj": "nowhere-mmproj.gguf"})
    finally:
        service.close()


def test_the_projector_sharing_the_model_name_wins(tmp_path: Path, vision_models: VisionModels) -> None:
    from loaders.llama_vision import find_projector

    folder = tmp_path / "SmolVLM-256M-Instruct-GGUF"
    folder.mkdir()
    model = folder / "SmolVLM-256M-Instruct-Q8_0.gguf"
    model.symlink_to(vision_models.gguf)
    for name in (
        "mmproj-SmolVLM-Instruct-f16.gguf",
        "mmproj-SmolVLM-256M-Instruct-f16.gguf",
        "mmproj-F16.gguf",
    ):
        shutil.copy(vision_models.mmproj, folder / name)
    assert find_projector(model, "") == folder / "mmproj-SmolVLM-256M-Instruct-f16.gguf"
    assert find_projector(model, "mmproj-F16.gguf") == folder / "mmproj-F16.gguf"  # the setting wins
    # Loose among other models, a projector named for none of them belongs to none.
    (folder / "mmproj-SmolVLM-256M-Instruct-f16.gguf").unlink()
    (folder / "mmproj-SmolVLM-Instruct-f16.gguf").unlink()
    assert find_projector(model, "") == folder / "mmproj-F16.gguf"  # the only model in its folder
    (folder / "Other-Model-Q4_K_M.gguf").symlink_to(vision_models.gguf)
    assert find_projector(model, "") is None


def test_an_m_rope_model_sees_and_reuses_its_images(tmp_path: Path, vision_models: VisionModels) -> None:
    """Qwen-VL's images take fewer positions than tokens: evaluation and reuse follow positions."""
    from webui.app import build_service
    from webui.config import AppConfig

    models = tmp_path / "models"
    models.mkdir()
    for file in (vision_models.mrope_gguf, vision_models.mrope_mmproj):
        (models / file.name).symlink_to(file)
    service = build_service(AppConfig(user_data_dir=tmp_path))
    try:
        service.load_model(vision_models.mrope_gguf.name, settings={"n_ctx": 1024})
        model = _model(service)
        assert sees_images(model)
        small, large = model.image_tokens(RED), model.image_tokens(BLUE)
        assert large > small  # the projector sizes images dynamically
        question = "What is in this picture?"
        _, text_stats = _reply(service, [ChatMessage("user", question)])
        first = [ChatMessage("user", question, images=(BLUE,))]
        reply, stats = _reply(service, first)
        assert abs(stats.prompt_tokens - text_stats.prompt_tokens - large) <= 2
        assert _reply(service, first)[0] == reply  # deterministic, and served from the cache
        encoded = model.images_encoded  # type: ignore[attr-defined]
        second = [*first, ChatMessage("assistant", reply), ChatMessage("user", "What colour is it?")]
        again, stats = _reply(service, second)
        assert stats.reused_prompt_tokens > large
        assert model.images_encoded == encoded  # type: ignore[attr-defined]
        service.unload_model()
        service.load_model(vision_models.mrope_gguf.name, settings={"n_ctx": 1024})
        fresh, stats = _reply(service, second)
        assert stats.reused_prompt_tokens == 0
        assert fresh == again  # the reused prefix gives what evaluating everything gives
    finally:
        service.close()
