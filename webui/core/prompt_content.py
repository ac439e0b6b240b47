"""How message contents reach a chat template: images as the model's media marker, text as a string or, for a
template that only reads content parts (SmolVLM's, some Llama 4 / Mistral 3 ones), as a text part.

While a prompt is fitted to the context each image is a numbered slot, so every candidate's count adds the
tokens of exactly the images it kept; the finished prompt gets the loaded model's marker in their place.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from webui.core.media import Image
from webui.core.templates.store import InstructionTemplate, TemplateError

if TYPE_CHECKING:
    from webui.core.prompts import ChatMessage

__all__ = ["ImageSlots", "typed_content"]

_PROBE = "\ue002palabre-probe\ue002"  # a private-use mark no tokenizer or user text produces
# What a template that reads content parts spells out: a part's type compared with "text".
_READS_PARTS = re.compile(r"""type['"]?\]?\s*==\s*['"]text['"]""")


class ImageSlots:
    """Images rendered as numbered slots while the prompt is fitted, then as the model's media marker.

    A slot names its image, so the count of a candidate prompt adds the tokens of exactly the images it kept
    (truncation drops old turns with their images; a template may leave a message out). Each message's images
    come before its text, in order. The slots carry a random nonce, and a marker a message already holds is
    broken up: typed text never becomes an image.
    """

    def __init__(self, messages: Sequence[ChatMessage], marker: str) -> None:
        self.marker = marker
        nonce = secrets.token_hex(6)
        self._pattern = re.compile(f"\ue001{nonce}:(\\d+)\ue001")
        self.images: list[Image] = []
        rendered = []
        for message in messages:
            content = message.content.replace(marker, marker[:1] + "\u200b" + marker[1:])
            slots = ""
            for image in message.images:
                slots += f"\ue001{nonce}:{len(self.images)}\ue001"
                self.images.append(image)
            rendered.append(replace(message, content=slots + content))
        self.messages = rendered

    def counter(
        self, count_tokens: Callable[[str], int], image_tokens: Callable[[Image], int]
    ) -> Callable[[str], int]:
        """Tokens of a candidate prompt: its text without the slots, plus the tokens of the images it holds."""

        def count(text: str) -> int:
            shown = [self.images[int(index)] for index in self._pattern.findall(text)]
            return count_tokens(self._pattern.sub("", text)) + sum(image_tokens(image) for image in shown)

        return count

    def finish(self, text: str) -> tuple[str, tuple[Image, ...]]:
        """The finished prompt with the model's marker for each slot, and the images in marker order."""
        shown = tuple(self.images[int(index)] for index in self._pattern.findall(text))
        return self._pattern.sub(lambda _: self.marker, text), shown


@functools.lru_cache(maxsize=64)
def typed_content(template: InstructionTemplate) -> bool:
    """Whether ``template`` shows a message's text only when the content is a list of parts.

    Such a template (SmolVLM's iterates ``message['content']`` for ``type == 'text'`` parts) drops string
    contents silently; llama.cpp's server detects the same and sends text parts. Decided once per template.
    """
    if not _READS_PARTS.search(template.source):
        return False  # most templates: no render spent on the question
    try:
        plain = template.render([{"role": "user", "content": _PROBE}], add_generation_prompt=False)
    except TemplateError:
        return False  # a template that fails on text fails anyway; it is not given parts to try again
    if _PROBE in plain:
        return False
    parts = [{"role": "user", "content": [{"type": "text", "text": _PROBE}]}]
    try:
        typed = template.render(parts, add_generation_prompt=False)  # type: ignore[arg-type]
    except TemplateError:
        return False
    return _PROBE in typed
