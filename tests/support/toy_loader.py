"""A loader package from outside Palabre, "installed" into a folder for the tests that put it on the path.

``install_toy_loader(folder)`` writes the package ``palabre_toy_loader`` and its ``*.dist-info`` (METADATA and
an entry_points.txt declaring ``[palabre.loaders] toy``) into ``folder``: with ``folder`` on ``sys.path`` or
PYTHONPATH, ``importlib.metadata`` finds it as any pip-installed distribution. The toy loader opens ``*.toy``
files, whose text is the reply it streams word by word (upper-cased with the ``shout`` setting). It uses only
the contract third-party loaders use (``webui.core.loader``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "palabre_toy_loader"
LOADER_NAME = "toy"

_MODULE = '''"""A third-party Palabre loader: *.toy files hold the reply the model streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
    PromptUsage,
)
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams

CAPABILITIES = LoaderCapabilities(honoured_params=frozenset({"max_new_tokens", "stop"}))


class ToySettings(BaseModel):
    """Toy load settings."""

    model_config = ConfigDict(extra="forbid")

    shout: bool = Field(False, description="Reply in capitals.")
    context_length: int = Field(2048, ge=16, description="Context length in tokens.")


class ToyModel:
    def __init__(self, path: Path, settings: ToySettings) -> None:
        reply = path.read_text(encoding="utf-8").strip()
        self.words = (reply.upper() if settings.shout else reply).split()
        self.facts = ModelFacts(
            name=path.name, path=path, loader="toy", context_length=settings.context_length
        )
        self.capabilities = CAPABILITIES
        self.settings = settings

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        usage = PromptUsage(len(self.tokenize(prompt)))
        for number, word in enumerate(self.words[: params.max_new_tokens]):
            if cancel.cancelled:
                yield Chunk(finish_reason="cancelled", prompt=usage)
                return
            yield Chunk(word if number == 0 else " " + word, tokens=1, prompt=usage)
        finish = "stop" if len(self.words) <= params.max_new_tokens else "length"
        yield Chunk(finish_reason=finish, prompt=usage)

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("x" * token for token in tokens)

    def unload(self) -> None:
        self.words = []


class ToyLoader:
    """*.toy files."""

    name: ClassVar[str] = "toy"
    capabilities: ClassVar[LoaderCapabilities] = CAPABILITIES
    settings_model = ToySettings
    loads: ClassVar[list[ToySettings]] = []  # what each load received (a test reads it in-process)

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        return Claim.MADE_FOR if entry.kind == "file" and entry.path.suffix == ".toy" else Claim.NONE

    def load(self, path: Path, settings: ToySettings) -> ToyModel:
        if not path.is_file():
            raise LoaderError(f"{path} does not exist.")
        self.loads.append(settings)
        return ToyModel(path, settings)
'''


def install_loader_package(folder: Path, package: str, module: str, entry_point: str) -> Path:
    """Write a loader package (``module`` as its ``__init__.py``) and its distribution metadata, with the
    ``palabre.loaders`` entry point ``entry_point`` ("name = package:Class"), into ``folder``; return it."""
    target = folder / package
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text(module, encoding="utf-8")
    dist_info = folder / f"{package}-0.1.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(f"[palabre.loaders]\n{entry_point}\n", encoding="utf-8")
    (dist_info / "RECORD").write_text("", encoding="utf-8")
    return folder


def install_toy_loader(folder: Path) -> Path:
    """Write the toy loader package and its distribution metadata into ``folder``; return ``folder``."""
    return install_loader_package(folder, PACKAGE, _MODULE, f"{LOADER_NAME} = {PACKAGE}:ToyLoader")
