"""GPTQ loader: GPTQ checkpoints through transformers' own GPTQ integration, backed by gptqmodel (CPU or CUDA).

Everything but the kernel choice is shared with the AWQ loader (``loaders.quantized``) and transformers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from loaders.quantized import QuantizedLoader
from loaders.transformers import HfSettings

# gptqmodel kernels a user may force; "auto" lets gptqmodel pick the best one for the device.
GptqBackend = Literal[
    "auto", "torch", "torch_int8", "torch_fused", "triton", "exllama_v2", "marlin", "machete", "bitblas"
]


class GptqSettings(HfSettings):
    """GPTQ load settings."""

    backend: GptqBackend = Field(
        "auto", description="gptqmodel kernel. auto = the fastest one that runs here (torch kernels on CPU)."
    )


class GptqLoader(QuantizedLoader[GptqSettings]):
    """GPTQ-quantized Transformers folders (quantization_config.quant_method == "gptq")."""

    name: ClassVar[str] = "gptq"
    method: ClassVar[str] = "gptq"
    settings_model = GptqSettings

    def quantization_kwargs(
        self, settings: GptqSettings, config: dict[str, Any], device: str
    ) -> dict[str, Any]:
        if settings.backend == "auto":
            return {}
        from transformers import GPTQConfig

        bits = int(config.get("quantization_config", {}).get("bits", 4))
        return {"quantization_config": GPTQConfig(bits=bits, backend=settings.backend)}

    def describe(self, settings: GptqSettings) -> dict[str, str]:
        return {"backend": settings.backend}
