"""HTTP routes only: every API router is installed here, before the page is mounted at ``/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from webui.config import AppConfig
    from webui.core.service import Service


def install_api(app: FastAPI, service: Service, config: AppConfig) -> None:
    """Add the OpenAI-compatible, Ollama-compatible and internal routers to ``app``."""
