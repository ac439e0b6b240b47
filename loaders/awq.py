"""AWQ loader: AWQ checkpoints through transformers' own AWQ integration, backed by gptqmodel (CPU or CUDA).

Everything but the kernel choice is shared with the GPTQ loader (``loaders.quantized``) and transformers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from loaders.quantized import QuantizedLoader
from loaders.transformers import HfSettings

# transformers' AwqBackend values a user may force; "auto" lets gptqmodel pick (a torch kernel on CPU).
AwqBackend = Literal[
    "auto",
    "torch_awq",
    "torch_fused_awq",
    "gemm",
    "gemm_triton",
    "gemv",
    "gemv_fast",
    "marlin",
    "exllama_v2",
    "machete",
]


class AwqSettings(HfSettings):
    """AWQ load settings."""

    backend: AwqBackend = Field(
        "auto", description="gptqmodel kernel. auto = the fastest one that runs here (torch kernels on CPU)."
    )


class AwqLoader(QuantizedLoader[AwqSettings]):
    """AWQ-quantized Transformers folders (quantization_config.quant_method == "awq")."""

    name: ClassVar[str] = "awq"
    method: ClassVar[str] = "awq"
    settings_model = AwqSettings

    def quantization_kwargs(
        self, settings: AwqSettings, config: dict[str, Any], device: str
    ) -> dict[str, Any]:
        if settings.backend == "auto":
            return {}
        from transformers import AwqConfig
        from transformers.utils.quantization_config import AwqBackend as HfAwqBackend

        quant = config.get("quantization_config", {})
        return {
            "quantization_config": AwqConfig(
                bits=int(quant.get("bits", 4)),
                group_size=int(quant.get("group_size", 128)),
                backend=HfAwqBackend(settings.backend),
            )
        }

    def describe(self, settings: AwqSettings) -> dict[str, str]:
        return {"backend": settings.backend}
