"""How images are rendered into a prompt: the model's media marker once per image, before its message's text,
in order; truncation counts the images' tokens and drops them with their turns; typed markers stay text."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage

from webui.core.media import Image, decode_image
from webui.core.prompts import ChatMessage, PromptRequest, PromptTooLongError, build_prompt
from webui.core.templates.store import InstructionTemplate

MARKER = "<__media_test__>"
CHATML = InstructionTemplate(
    "chatml",
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
)
IMAGE_COST = 40  # what each image takes in these tests' pretend model


def picture(shade: int) -> Image:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), (shade, shade, shade)).save(out, format="PNG")
    return decode_image(out.getvalue())


A, B, C = picture(10), picture(120), picture(240)


def words(text: str) -> int:
    return len(text.split())


def render(messages: list[ChatMessage], budget: int = 100_000, **request: object):  # type: ignore[no-untyped-def]
    request.setdefault("template", CHATML)
    return build_prompt(
        PromptRequest(messages=messages, media_marker=MARKER, **request),  # type: ignore[arg-type]
        count_tokens=words,
        max_prompt_tokens=budget,
        image_tokens=lambda image: IMAGE_COST,
    )


def test_each_image_is_a_marker_before_its_message_text_in_order() -> None:
    built = render(
        [
            ChatMessage("user", "first", images=(A, B)),
            ChatMessage("assistant", "seen"),
            ChatMessage("user", "second", images=(C,)),
        ]
    )
    assert f"user\n{MARKER}{MARKER}first<|im_end|>" in built.text
    assert f"user\n{MARKER}second<|im_end|>" in built.text
    assert built.images == (A, B, C)
    assert built.prompt_tokens == words(built.text.replace(MARKER, "")) + 3 * IMAGE_COST


def test_chat_mode_puts_the_markers_after_the_speaker_name() -> None:
    built = render([ChatMessage("user", "look", images=(A,))], mode="chat")
    assert f"You: {MARKER}look" in built.text
    assert built.images == (A,)


def test_truncation_counts_images_and_drops_them_with_their_turns() -> None:
    history = []
    for picture_ in (A, B, C):
        history += [
            ChatMessage("user", "what now?", images=(picture_,)),
            ChatMessage("assistant", "a square"),
        ]
    history.append(ChatMessage("user", "and the last?", images=(A,)))
    built = render(history, budget=2 * IMAGE_COST + 30)
    assert built.dropped_messages > 0
    assert built.prompt_tokens <= 2 * IMAGE_COST + 30
    assert built.images == (C, A)  # the kept turns' images, in prompt order
    assert built.text.count(MARKER) == 2
    with pytest.raises(PromptTooLongError):
        render([ChatMessage("user", "too big", images=(A, B, C))], budget=2 * IMAGE_COST)


def test_a_typed_marker_stays_text() -> None:
    built = render([ChatMessage("user", f"{MARKER} pretends", images=(A,))])
    assert built.text.count(MARKER) == 1 and built.images == (A,)
    plain = render([ChatMessage("user", "<__media__> just text")])
    assert "<__media__> just text" in plain.text and plain.images == ()


def test_without_a_marker_images_are_not_rendered() -> None:
    built = build_prompt(
        PromptRequest(messages=[ChatMessage("user", "hi", images=(A,))], template=CHATML),
        count_tokens=words,
        max_prompt_tokens=1000,
    )
    assert built.images == () and "hi" in built.text


def test_a_template_that_reads_content_parts_gets_the_text_and_the_markers() -> None:
    from tests.support.vision_models import PARTS_TEMPLATE

    smolvlm = InstructionTemplate("smolvlm", PARTS_TEMPLATE)  # SmolVLM's own: it iterates content parts
    built = render([ChatMessage("user", "What is it?", images=(A,))], template=smolvlm)
    assert built.text == f"<|im_start|>User: {MARKER}What is it?<end_of_utterance>\nAssistant:"
    assert built.images == (A,)
    text_only = render([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")], template=smolvlm)
    assert "Be brief." in text_only.text and "User: Hi<end_of_utterance>" in text_only.text
