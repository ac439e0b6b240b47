"""What a model can do, read from its files without loading it: think, call tools, see images.

Thinking and tools come from the model's own chat template (``abilities_of``): a GGUF file's
``tokenizer.chat_template`` (and ``tokenizer.chat_template.tool_use``), a Transformers folder's
``chat_template.jinja`` / ``tokenizer_config.json``. Vision comes from a projector: a GGUF model sees when an
``mmproj`` GGUF (a vision projector, read from its own header) lies beside it; a Transformers folder sees when its
config.json has a ``vision_config``. Nothing is guessed from a model's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from webui.core.abilities import abilities_of
from webui.core.models.discovery import ModelEntry, ModelFileError, folder_metadata, read_model_config
from webui.core.models.gguf_header import GGUFHeaderError, SkippedArray, read_gguf_header
from webui.core.safe_load import load_json

__all__ = [
    "ModelCapabilities",
    "capabilities_from_templates",
    "entry_capabilities",
    "folder_capabilities",
    "gguf_capabilities",
    "is_projector_name",
    "projector_beside",
    "projector_sees",
]

_PROJECTOR = re.compile(r"mmproj", re.IGNORECASE)


@dataclass(frozen=True)
class ModelCapabilities:
    """Thinking, tools and vision, with where each answer came from."""

    thinking: bool = False
    tools: bool = False
    vision: bool = False
    template_found: bool = False  # False: no chat template was readable, so thinking and tools are unknown
    projector: str | None = None  # the mmproj file that gives a GGUF model its sight

    @property
    def labels(self) -> tuple[str, ...]:
        """The capabilities it has, as words: ("thinking", "tools", "vision")."""
        return tuple(
            name
            for name, has in (("thinking", self.thinking), ("tools", self.tools), ("vision", self.vision))
            if has
        )

    @property
    def summary(self) -> str:
        """One short cell: ``thinking,tools`` / ``-`` / ``?`` (no template to read)."""
        if self.labels:
            return ",".join(self.labels)
        return "-" if self.template_found else "?"

    def with_vision(self, vision: bool, projector: str | None = None) -> ModelCapabilities:
        return ModelCapabilities(self.thinking, self.tools, vision, self.template_found, projector)


def capabilities_from_templates(
    template: str | None,
    tool_template: str | None = None,
    *,
    vision: bool = False,
    projector: str | None = None,
) -> ModelCapabilities:
    """Capabilities implied by a chat template (and the separate tool-use template some models carry)."""
    main = abilities_of(template) if template else None
    tools_only = abilities_of(tool_template) if tool_template else None
    return ModelCapabilities(
        thinking=bool(main and main.thinks),
        tools=bool((main and main.tools) or (tools_only and tools_only.tools)),
        vision=vision,
        template_found=bool(template or tool_template),
        projector=projector,
    )


def is_projector_name(name: str) -> bool:
    """Whether a GGUF file name is a multimodal projector's (``mmproj-…gguf``), not a language model's."""
    return name.lower().endswith(".gguf") and bool(_PROJECTOR.search(name))


def projector_sees(path: Path) -> bool:
    """Whether a projector GGUF encodes images (a clip header with a vision encoder; audio-only ones do not)."""
    try:
        header = read_gguf_header(path)
    except GGUFHeaderError:
        return False
    return header_sees(header)


def header_sees(header: dict[str, object]) -> bool:
    """Whether a projector's header says it encodes images."""
    if header.get("clip.has_vision_encoder") is True:
        return True
    if "clip.has_vision_encoder" in header or "clip.has_audio_encoder" in header:
        return False
    return header.get("general.architecture") == "clip"  # older projectors: vision was the only kind


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value and not isinstance(value, SkippedArray) else None


def header_capabilities(header: dict[str, object]) -> ModelCapabilities:
    """Thinking and tools from a GGUF header's chat templates (vision comes from a projector file, not here)."""
    return capabilities_from_templates(
        _text(header.get("tokenizer.chat_template")), _text(header.get("tokenizer.chat_template.tool_use"))
    )


_QUANT_SUFFIX = re.compile(r"[-._](?:I?Q\d.*|[BF]F?16|F32|MXFP4.*)$", re.IGNORECASE)


def projector_beside(path: Path, own_folder: bool) -> Path | None:
    """A vision projector next to the GGUF at ``path`` (the one the llama.cpp loader opens).

    Projectors whose name holds the model's name without its quantization come first, the longest shared
    name first ("mmproj-SmolVLM-256M" before "mmproj-SmolVLM" for SmolVLM-256M-Q8_0). In a model's own folder
    (as a Hub download lays it out) any other projector there is this model's too; loose among other models,
    only a named one is.
    """
    stem = _QUANT_SUFFIX.sub("", path.stem).lower()
    try:
        siblings = sorted(p for p in path.parent.iterdir() if p.is_file() and is_projector_name(p.name))
    except OSError:
        return None
    siblings = [p for p in siblings if p != path]
    named = [p for p in siblings if stem and stem in p.name.lower()]
    named.sort(key=lambda p: -_shared_prefix(stem, _projector_stem(p)))
    others = [p for p in siblings if p not in named] if own_folder else []
    return next((p for p in (*named, *others) if projector_sees(p)), None)


def _projector_stem(path: Path) -> str:
    name = _QUANT_SUFFIX.sub("", path.stem).lower()
    return re.sub(r"(?:^|[-._])mmproj(?:[-._]|$)", "", name)


def _shared_prefix(a: str, b: str) -> int:
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


def gguf_capabilities(path: Path, *, own_folder: bool = True) -> ModelCapabilities:
    """A GGUF model's capabilities from its header and a projector beside it; ModelFileError if unreadable."""
    try:
        header = read_gguf_header(path)
    except GGUFHeaderError as exc:
        raise ModelFileError(str(exc)) from exc
    projector = projector_beside(path, own_folder)
    return header_capabilities(header).with_vision(
        projector is not None, projector.name if projector else None
    )


def _folder_tool_template(folder: Path) -> str | None:
    """A tokenizer's named ``tool_use`` template (Hermes, Command R), when it has one."""
    candidate = folder / "tokenizer_config.json"
    if not candidate.is_file():
        return None
    try:
        data = load_json(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    templates = data.get("chat_template") if isinstance(data, dict) else None
    if not isinstance(templates, list):
        return None
    named = {t.get("name"): t.get("template") for t in templates if isinstance(t, dict)}
    found = named.get("tool_use")
    return found if isinstance(found, str) else None


def config_sees(config: dict[str, object]) -> bool:
    """Whether a Transformers config.json describes a vision tower."""
    return isinstance(config.get("vision_config"), dict)


def folder_capabilities(folder: Path) -> ModelCapabilities:
    """A Transformers folder's capabilities from its chat template and config.json."""
    metadata = folder_metadata(folder)
    sees = config_sees(read_model_config(folder))
    return capabilities_from_templates(metadata.chat_template, _folder_tool_template(folder), vision=sees)


def entry_capabilities(entry: ModelEntry) -> ModelCapabilities:
    """Capabilities of a discovered model (nothing known for other formats and servers' models)."""
    try:
        if entry.kind == "gguf":
            return gguf_capabilities(entry.path, own_folder="/" in entry.name)
        if entry.kind == "folder":
            return folder_capabilities(entry.path)
    except (ModelFileError, OSError):
        pass
    return ModelCapabilities()
