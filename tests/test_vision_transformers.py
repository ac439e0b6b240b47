"""Images reach a Transformers vision model (AutoModelForImageTextToText + AutoProcessor): the tiny Idefics3
model of tests/support/vision_models.py, loaded through the real Service and the loader its folder picks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.vision_models import HF_NAME, IMAGE_TOKENS, VisionModels, solid_image
from webui.core.loader import GenerationStats, sees_images
from webui.core.media import Image
from webui.core.params import GenerationParams
from webui.core.prompt_builder import ChatSettings
from webui.core.prompts import ChatMessage
from webui.core.service import Service

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0.0, max_new_tokens=8, seed=1)
SETTINGS = ChatSettings(mode="instruct")
RED = solid_image((220, 30, 30))
BLUE = solid_image((30, 30, 220), (90, 60))


@pytest.fixture(scope="module")
def hf_vision_service(
    tmp_path_factory: pytest.TempPathFactory, vision_models: VisionModels
) -> Iterator[Service]:
    from webui.app import build_service
    from webui.config import AppConfig

    user_data = tmp_path_factory.mktemp("ud")
    (user_data / "models").mkdir()
    (user_data / "models" / HF_NAME).symlink_to(vision_models.hf)
    service = build_service(AppConfig(user_data_dir=user_data))
    service.load_model(HF_NAME)  # the loader is the one the folder's files pick
    yield service
    service.close()


def _reply(service: Service, history: list[ChatMessage]) -> tuple[str, GenerationStats]:
    stream = service.stream_chat_reply(history, SETTINGS, GREEDY)
    text = "".join(chunk.text for chunk in stream)
    stats = stream.job.stats
    assert stats is not None
    return text, stats


def _image_tokens(service: Service, image: Image) -> int:
    state = service.loaded
    assert state is not None and sees_images(state.model)
    return state.model.image_tokens(image)


def test_an_image_text_to_text_folder_loads_with_the_vision_loader(hf_vision_service: Service) -> None:
    state = hf_vision_service.loaded
    assert state is not None
    assert state.loader == "transformers-vision"
    assert sees_images(state.model)
    assert "image-text-to-text" in state.model.facts.extra["vision"]
    assert state.model.media_marker not in ("<image>", "<__media__>")  # random per load


def test_the_processor_gets_the_image(hf_vision_service: Service) -> None:
    per_image = _image_tokens(hf_vision_service, RED)
    # The processor's expansion: the 16 image embeddings between <fake_token_around_image><global-img> ...
    assert per_image == IMAGE_TOKENS + 3
    question = "What is in this picture?"
    text_only, text_stats = _reply(hf_vision_service, [ChatMessage("user", question)])
    seeing, image_stats = _reply(hf_vision_service, [ChatMessage("user", question, images=(RED,))])
    grown = image_stats.prompt_tokens - text_stats.prompt_tokens
    assert abs(grown - per_image) <= 2, (grown, per_image)  # the placeholder splits the text differently
    assert seeing != text_only
    again, _ = _reply(hf_vision_service, [ChatMessage("user", question, images=(RED,))])
    assert again == seeing  # greedy replies are deterministic
    other, _ = _reply(hf_vision_service, [ChatMessage("user", question, images=(BLUE,))])
    assert other != seeing  # the pixels themselves reach the model


def test_two_images_in_order_and_typed_placeholders_stay_text(hf_vision_service: Service) -> None:
    both = [ChatMessage("user", "Compare them.", images=(RED, BLUE))]
    _, stats = _reply(hf_vision_service, both)
    assert stats.prompt_tokens >= 2 * IMAGE_TOKENS
    swapped, _ = _reply(hf_vision_service, [ChatMessage("user", "Compare them.", images=(BLUE, RED))])
    first, _ = _reply(hf_vision_service, both)
    assert swapped != first  # the order of the images is the order the model sees
    # "<image>" is the processor's own placeholder: typed by a user it must neither add an image nor break the
    # pairing of images and placeholders.
    typed = "<image> <__media__> what is this?"
    _, with_image = _reply(hf_vision_service, [ChatMessage("user", typed, images=(RED,))])
    _, without = _reply(hf_vision_service, [ChatMessage("user", typed)])
    grown = with_image.prompt_tokens - without.prompt_tokens
    assert abs(grown - _image_tokens(hf_vision_service, RED)) <= 2  # exactly one image: the one sent


def test_a_text_model_says_it_cannot_see(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from webui.app import build_service
    from webui.config import AppConfig
    from webui.core.media import ModelCannotSeeError

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-llama").symlink_to(tiny_llama_dir)
    service = build_service(AppConfig(user_data_dir=tmp_path))
    try:
        service.load_model("tiny-llama")
        state = service.loaded
        assert state is not None and state.loader == "transformers" and not sees_images(state.model)
        with pytest.raises(
            ModelCannotSeeError, match=r"tiny-llama cannot see images: it is a text-only model"
        ):
            service.stream_chat_reply([ChatMessage("user", "What is this?", images=(RED,))], SETTINGS, GREEDY)
    finally:
        service.close()
