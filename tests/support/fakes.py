"""A scripted loader for unit tests of the engine at its seam (real-model tests live elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    Loader,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
    PromptUsage,
)
from webui.core.params import GenerationParams

if TYPE_CHECKING:
    from webui.core.models.discovery import ModelEntry
    from webui.core.service import Service

SCRIPTED_CAPABILITIES = LoaderCapabilities(honoured_params=frozenset({"max_new_tokens"}))


class ScriptedSettings(BaseModel):
    fail: bool = False


class ScriptedModel:
    """Streams the pieces listed in the model file, one per token; waits on ``gate`` between tokens if set."""

    def __init__(self, path: Path) -> None:
        self.pieces = path.read_text().split("|")
        self.facts = ModelFacts(name=path.name, path=path, loader="scripted", context_length=4096)
        self.capabilities = SCRIPTED_CAPABILITIES
        self.unloaded = False
        self.gate: threading.Event | None = None
        self.delay = 0.0  # seconds per token, to let a reader act mid-stream
        self.prompts: list[str] = []

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        self.prompts.append(prompt)
        usage = PromptUsage(len(prompt.split()))
        for count, piece in enumerate(self.pieces[: params.max_new_tokens], start=1):
            if self.gate is not None:
                self.gate.wait(timeout=10)
            time.sleep(self.delay)
            if cancel.cancelled:
                yield Chunk(finish_reason="cancelled", prompt=usage)
                return
            yield Chunk(piece, tokens=1, prompt=usage)
            if count == len(self.pieces):
                yield Chunk(finish_reason="stop", prompt=usage)
                return
        yield Chunk(finish_reason="length", prompt=usage)

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("w" for _ in tokens)

    def unload(self) -> None:
        self.unloaded = True


class ScriptedLoader(Loader[ScriptedSettings]):
    """Opens "GGUF" files that hold the pieces to stream (text, not a real GGUF)."""

    name: ClassVar[str] = "scripted"
    capabilities: ClassVar[LoaderCapabilities] = SCRIPTED_CAPABILITIES
    settings_model = ScriptedSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.MADE_FOR if entry.kind == "gguf" else Claim.NONE

    def load(self, path: Path, settings: ScriptedSettings) -> ScriptedModel:
        if settings.fail:
            raise LoaderError(f"{path.name} is broken")
        return ScriptedModel(path)


def scripted_service(root: Path, models: dict[str, str]) -> Service:
    """A real Service over scripted "GGUF" models (``{file name: pieces}``; GGUF files infer llama.cpp, which the
    scripted loader stands in for), with the first one loaded. The caller closes it."""
    from webui.config import PROJECT_ROOT
    from webui.core.presets import PresetStore
    from webui.core.registry import LoaderRegistry
    from webui.core.service import Service
    from webui.core.templates.store import TemplateStore

    folder = root / "models"
    folder.mkdir()
    for name, pieces in models.items():
        (folder / name).write_text(pieces)
    service = Service(
        LoaderRegistry({"llama.cpp": ScriptedLoader}),
        models_dir=folder,
        presets=PresetStore(PROJECT_ROOT / "presets", root / "presets"),
        templates=TemplateStore(PROJECT_ROOT / "instruction-templates", root / "templates"),
    )
    service.load_model(next(iter(models)))
    return service
