"""What the GPTQ and AWQ loaders share: checkpoints quantized with one method, loaded through transformers.

Each claims the folders whose config.json names its method, refuses any other checkpoint by naming the loader
that claims it, and lets gptqmodel pick its kernel unless the user forces one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from loaders.transformers import HfLoader, HfSettings, quant_method, quantized_checkpoint
from webui.core.loader import Claim, LoaderError
from webui.core.models.discovery import ModelEntry, config_quant_method, loader_for_path, read_model_config

QuantizedSettingsT = TypeVar("QuantizedSettingsT", bound=HfSettings)


def wrong_quantization(name: str, found: str | None, wanted: str, better: str | None) -> str | None:
    """The message for a checkpoint that is not ``wanted``-quantized, naming ``better`` (the loader that claims
    it), or None when it is."""
    if found == wanted:
        return None
    if found is None:
        what = f"{name} is not a {wanted.upper()} checkpoint (no quantization_config)"
    elif found == better:  # a loader made for that method
        what = f"{name} is {quantized_checkpoint(found)}, not {wanted.upper()}"
    else:
        what = f"{name} is quantized with {found}, not {wanted.upper()}"
    return f"{what}: pick the {better} loader." if better else f"{what}."


class QuantizedLoader(HfLoader[QuantizedSettingsT]):
    """A transformers-based loader for checkpoints quantized with ``method``."""

    method: ClassVar[str]

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        if entry.kind != "folder":
            return Claim.NONE
        found = config_quant_method(read_model_config(entry.path))
        return Claim.NARROWER if found == cls.method else Claim.NONE

    def check_checkpoint(self, path: Path, config: dict[str, Any], gguf_file: str | None) -> None:
        if gguf_file is not None:
            better = loader_for_path(path)
            raise LoaderError(
                f"{path.name} is a GGUF file" + (f": pick the {better} loader." if better else ".")
            )
        message = wrong_quantization(path.name, quant_method(config), self.method, loader_for_path(path))
        if message:
            raise LoaderError(message)

    def default_dtype(self, device: str) -> str:
        return "auto"
