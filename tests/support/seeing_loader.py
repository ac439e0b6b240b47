"""A loader that sees images, from outside Palabre, "installed" into a folder for the API image tests.

``install_seeing_loader(folder)`` writes the package ``palabre_seeing_loader`` and its ``*.dist-info``
(entry point ``[palabre.loaders] seeing``) into ``folder``; with ``folder`` on PYTHONPATH a real
``webui serve`` finds it as any pip-installed loader. It opens ``*.see`` files, whose text is the folder it
records into: for each generation with images it writes every image it was given (the PNG bytes, named by
their SHA-256) and one line of ``record.jsonl`` saying how many media markers the prompt held and which images
came, in order. It replies ``I saw N image(s).``. It implements webui.core.loader's SeeingModel contract, as a
vision loader does, so the engine hands it the images the API decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.toy_loader import install_loader_package

PACKAGE = "palabre_seeing_loader"
LOADER_NAME = "seeing"
RECORD = "record.jsonl"

_MODULE = '''"""A third-party Palabre loader whose model "sees" images: it records what it was given."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from webui.core.loader import CancelToken, Chunk, Claim, LoaderCapabilities, LoaderError, ModelFacts, PromptUsage
from webui.core.media import Image
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams

CAPABILITIES = LoaderCapabilities(honoured_params=frozenset({"max_new_tokens", "stop"}))
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\\n{{ message['content'] }}<|im_end|>\\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
)


class SeeingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeeingModel:
    def __init__(self, path: Path) -> None:
        self.folder = Path(path.read_text(encoding="utf-8").strip())
        self.media_marker = f"<|image-{secrets.token_hex(6)}|>"
        self.facts = ModelFacts(
            name=path.name, path=path, loader="seeing", context_length=4096, chat_template=CHATML
        )
        self.capabilities = CAPABILITIES

    def _reply(self, text: str, prompt: str) -> Iterator[Chunk]:
        usage = PromptUsage(len(self.tokenize(prompt)))
        words = text.split()
        for number, word in enumerate(words):
            yield Chunk(word if number == 0 else " " + word, tokens=1, prompt=usage)
        yield Chunk(finish_reason="stop", prompt=usage)

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        yield from self._reply("I saw no image.", prompt)

    def stream_images(
        self, prompt: str, images: Sequence[Image], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        for image in images:
            (self.folder / f"{image.sha256}.png").write_bytes(image.data)
        line = {"markers": prompt.count(self.media_marker), "images": [image.sha256 for image in images]}
        with (self.folder / "record.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\\n")
        yield from self._reply(f"I saw {len(images)} image(s).", prompt)

    def image_tokens(self, image: Image) -> int:
        return 16

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("x" * token for token in tokens)

    def unload(self) -> None:
        pass


class SeeingLoader:
    """*.see files."""

    name: ClassVar[str] = "seeing"
    capabilities: ClassVar[LoaderCapabilities] = CAPABILITIES
    settings_model = SeeingSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.MADE_FOR if entry.kind == "file" and entry.path.suffix == ".see" else Claim.NONE

    def load(self, path: Path, settings: SeeingSettings) -> SeeingModel:
        if not path.is_file():
            raise LoaderError(f"{path} does not exist.")
        return SeeingModel(path)
'''


def install_seeing_loader(folder: Path) -> Path:
    """Write the seeing loader package and its distribution metadata into ``folder``; return ``folder``."""
    return install_loader_package(folder, PACKAGE, _MODULE, f"{LOADER_NAME} = {PACKAGE}:SeeingLoader")


def seeing_model(models_dir: Path, records: Path, name: str = "eye.see") -> str:
    """A ``*.see`` model in ``models_dir`` recording into ``records``; its name."""
    records.mkdir(parents=True, exist_ok=True)
    (models_dir / name).write_text(str(records), encoding="utf-8")
    return name


def recorded(records: Path) -> list[dict[str, Any]]:
    """What the seeing model was given, one entry per generation with images (oldest first)."""
    path = records / RECORD
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
