"""GPTQ loader: GPTQ checkpoints through transformers' own GPTQ integration, backed by gptqmodel (CPU or CUDA).

Everything but the checkpoint check and the kernel choice is the transformers loader's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from loaders.transformers import HfSettings, TransformersLoader, quant_method

# gptqmodel kernels a user may force; "auto" lets gptqmodel pick the best one for the device.
GptqBackend = Literal[
    "auto", "torch", "torch_int8", "torch_fused", "triton", "exllama_v2", "marlin", "machete", "bitblas"
]


class GptqSettings(HfSettings):
    """GPTQ load settings."""

    backend: GptqBackend = Field(
        "auto", description="gptqmodel kernel. auto = the fastest one that runs here (torch kernels on CPU)."
    )


def wrong_quantization(name: str, found: str | None, wanted: str) -> str | None:
    """The message for a checkpoint that is not ``wanted``-quantized, naming the loader that fits, or None."""
    if found == wanted:
        return None
    if found in ("gptq", "awq"):
        article = "an" if found == "awq" else "a"
        return (
            f"{name} is {article} {found.upper()} checkpoint, not {wanted.upper()}: pick the {found} loader."
        )
    if found is None:
        return f"{name} is not a {wanted.upper()} checkpoint (no quantization_config): pick the transformers loader."
    return f"{name} is quantized with {found}, not {wanted.upper()}: pick the transformers loader."


class QuantizedLoader(TransformersLoader):
    """A Transformers loader for checkpoints quantized with ``method`` (the checkpoint check they share)."""

    method: ClassVar[str]

    def check_checkpoint(self, name: str, config: dict[str, Any], gguf_file: str | None) -> None:
        from webui.core.loader import LoaderError

        if gguf_file is not None:
            raise LoaderError(f"{name} is a GGUF file: pick the llama.cpp loader.")
        message = wrong_quantization(name, quant_method(config), self.method)
        if message:
            raise LoaderError(message)


class GptqLoader(QuantizedLoader):
    """GPTQ-quantized Transformers folders (quantization_config.quant_method == "gptq")."""

    name: ClassVar[str] = "gptq"
    method: ClassVar[str] = "gptq"
    settings_model: ClassVar[type[BaseModel]] = GptqSettings

    def quantization_kwargs(self, settings: BaseModel, config: dict[str, Any], device: str) -> dict[str, Any]:
        assert isinstance(settings, GptqSettings)
        if settings.backend == "auto":
            return {}
        from transformers import GPTQConfig

        bits = int(config.get("quantization_config", {}).get("bits", 4))
        return {"quantization_config": GPTQConfig(bits=bits, backend=settings.backend)}

    def default_dtype(self, device: str) -> str:
        return "auto"

    def describe(self, settings: BaseModel) -> dict[str, str]:
        return {"backend": str(getattr(settings, "backend", "auto"))}
