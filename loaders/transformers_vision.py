"""Transformers vision loader: image-text-to-text folders (Gemma 3, SmolVLM / Idefics3, LLaVA, Qwen-VL, ...)
through ``AutoModelForImageTextToText`` and ``AutoProcessor``.

Everything else is the Transformers loader's: the checks (safetensors only unless allowed, no remote code
unless allowed), the sampler chain and the streaming. The prompt holds a marker that is random per load once
per image; before the processor sees the text each marker becomes the processor's own image placeholder (the
text the family's chat template writes for an image: ``<image>``, Gemma 3's ``<start_of_image>``, Qwen-VL's
``<|vision_start|><|image_pad|><|vision_end|>``), and a placeholder a user typed is broken up so it stays
text. Images reach the processor as decoded Pillow images only, never as URLs or paths it would open.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from loaders.transformers import HfLoader, HfModel, HfSettings
from webui.core.loader import CancelToken, Chunk, Claim, LoaderError
from webui.core.media import VISION_FACT, Image
from webui.core.models.capabilities import config_sees
from webui.core.models.discovery import ModelEntry, ModelFileError, read_model_config
from webui.core.params import GenerationParams

_COUNT_CACHE = 256  # images whose token count is remembered (the context meter asks on every redraw)
# Claimed above the Transformers loader (a plain model folder) but below a quantization loader's claim.
VISION_CLAIM = (Claim.MADE_FOR + Claim.NARROWER) // 2
_CUT = "\ue000palabre-image-cut\ue000"


class TransformersVisionLoader(HfLoader[HfSettings]):
    """Transformers folders of image-text-to-text models (a vision tower, a connector and a language model)."""

    name: ClassVar[str] = "transformers-vision"
    settings_model = HfSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        if entry.kind != "folder":
            return Claim.NONE
        try:
            config = read_model_config(entry.path)
        except (ModelFileError, OSError):
            return Claim.NONE
        architectures = config.get("architectures")
        generates = isinstance(architectures, list) and any(
            isinstance(name, str) and name.endswith("ForConditionalGeneration") for name in architectures
        )
        return VISION_CLAIM if config_sees(config) and generates else Claim.NONE

    def check_checkpoint(self, path: Path, config: dict[str, Any], gguf_file: str | None) -> None:
        if gguf_file is not None:
            raise LoaderError(
                f"{path.name} is a GGUF file: load it with llama.cpp (its mmproj projector beside it)."
            )
        try:
            from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LoaderError(
                "The transformers-vision loader needs torch and transformers: pip install 'palabre[transformers]'."
            ) from exc

        model_type = config.get("model_type")
        if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise LoaderError(
                f"{path.name} (model type {model_type!r}) is not an image-text-to-text model: "
                "pick the transformers loader."
            )

    def open_checkpoint(
        self, transformers: Any, folder: Path, kwargs: dict[str, Any], model_kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        processor = transformers.AutoProcessor.from_pretrained(folder, **kwargs)
        if (
            getattr(processor, "tokenizer", None) is None
            or getattr(processor, "image_processor", None) is None
        ):
            raise LoaderError(f"{folder.name} has no image processor: it cannot take images.")
        model = transformers.AutoModelForImageTextToText.from_pretrained(folder, **model_kwargs)
        return processor, model

    def model_class(self) -> type[HfModel]:
        return HfVisionModel


def image_placeholder(processor: Any) -> str:
    """The text the processor expands into an image's tokens: what the family's chat template writes for an
    image part, else the processor's ``boi_token`` (Gemma 3) or ``image_token``."""
    token = getattr(processor, "image_token", None)
    boi = getattr(processor, "boi_token", None)
    names = [name for name in (boi, token) if isinstance(name, str) and name]
    if not names:
        raise LoaderError("The model's processor names no image token: it cannot take images.")
    written = _written_for_image(processor.chat_template)
    if written and any(name in written for name in names):
        return written
    return names[0]


def _written_for_image(template: object) -> str | None:
    """What ``template`` (rendered in Palabre's sandbox) writes for one image part between two text parts."""
    from webui.core.templates.store import InstructionTemplate, TemplateError

    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template:
        return None
    parts = [
        {"type": "text", "text": _CUT + "a"},
        {"type": "image"},
        {"type": "text", "text": _CUT + "b"},
    ]
    try:
        rendered = InstructionTemplate("vision", template).render(
            [{"role": "user", "content": parts}],  # type: ignore[dict-item]
            add_generation_prompt=False,
        )
    except TemplateError:
        return None
    start, end = rendered.find(_CUT + "a"), rendered.find(_CUT + "b")
    if start < 0 or end < start:
        return None
    return rendered[start + len(_CUT) + 1 : end].strip() or None


class HfVisionModel(HfModel):
    """A Transformers vision model in memory: generation as HfModel's, with the processor's image inputs."""

    def __init__(self, model: Any, processor: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, processor.tokenizer, *args, **kwargs)
        self._processor = processor
        self._placeholder = image_placeholder(processor)
        self.media_marker = f"<__palabre_media_{secrets.token_hex(8)}__>"
        names = {self._placeholder, *self._placeholder.split()}
        for attribute in ("image_token", "boi_token", "video_token"):
            value = getattr(processor, attribute, None)
            if isinstance(value, str) and value:
                names.add(value)
        self._reserved = sorted(names, key=len, reverse=True)  # what typed text must not spell out
        self._counts: dict[str, int] = {}
        self.facts.extra[VISION_FACT] = f"image-text-to-text ({type(processor).__name__})"

    def _as_text(self, text: str) -> str:
        """``text`` with any image placeholder it spells out broken up, so that it stays text."""
        for name in self._reserved:
            text = text.replace(name, name[:1] + "\u200b" + name[1:])
        return text

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """As HfModel's, but typed image placeholders are text (a prompt without images, a token count)."""
        return super().tokenize(self._as_text(text), add_bos=add_bos)

    def _text_for_processor(self, prompt: str, images: int) -> str:
        """``prompt`` with each marker as the processor's placeholder and typed placeholders broken up."""
        pieces = prompt.split(self.media_marker)
        if len(pieces) - 1 != images:
            raise LoaderError(f"The prompt holds {len(pieces) - 1} image places for {images} images.")
        return self._placeholder.join(self._as_text(piece) for piece in pieces)

    def _process(self, prompt: str, images: Sequence[Image]) -> dict[str, Any]:
        text = self._text_for_processor(prompt, len(images))
        pictures = [[image.pil() for image in images]] if images else None
        try:
            batch = self._processor(
                text=[text], images=pictures, return_tensors="pt", add_special_tokens=False
            )
        except (ValueError, TypeError, RuntimeError) as exc:
            raise LoaderError(f"The model's processor could not take the images: {exc}") from exc
        return dict(batch)

    def stream_images(
        self, prompt: str, images: Sequence[Image], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        """Generate from ``prompt`` with ``images`` in place of its markers."""
        model = self._model
        if model is None:
            raise LoaderError("The model was unloaded.")
        batch = self._process(prompt, images)
        ids = [int(token) for token in batch.pop("input_ids")[0].tolist()]
        batch.pop("attention_mask", None)
        if params.add_bos_token and self._adds_bos and self._bos_id is not None and ids[:1] != [self._bos_id]:
            ids.insert(0, self._bos_id)
        if not ids:
            raise LoaderError("The prompt is empty.")
        inputs = {
            name: value.to(model.device, dtype=model.dtype)
            if value.is_floating_point()
            else value.to(model.device)
            for name, value in batch.items()
            if hasattr(value, "to")
        }
        # The prompt's shared prefix is evaluated again: an image's keys are never kept for a later prompt.
        yield from self._generate(ids, inputs, params, cancel, reuse=False)

    def image_tokens(self, image: Image) -> int:
        """How many context tokens ``image`` takes (the processor's expansion of its placeholder)."""
        found = self._counts.get(image.sha256)
        if found is None:
            found = len(self._process(self.media_marker, [image])["input_ids"][0])
            if len(self._counts) >= _COUNT_CACHE:
                self._counts.clear()
            self._counts[image.sha256] = found
        return found
