"""HTTP routes only: every API router is installed here, before the page is mounted at ``/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from webui.config import AppConfig
    from webui.core.service import Service


def install_api(app: FastAPI, service: Service, config: AppConfig) -> None:
    """Add the OpenAI-compatible, Ollama-compatible and internal routers to ``app``."""
    from webui.api.internal_routes import install_internal_routes  # /v1/internal/*, app.state.api_jobs

    install_internal_routes(app, service)
    from webui.api.ollama_routes import install_ollama_routes  # /api/* (Ollama)
    from webui.api.openai_routes import install_openai_routes  # /v1/models, completions, chat (OpenAI)
    from webui.api.serving import Serving

    idle_s = config.idle_unload_minutes * 60 if config.idle_unload_minutes else None
    serving = Serving(service, idle_s)
    app.state.idle_unloader = serving.idle  # create_app starts it, run_server stops it
    install_openai_routes(app, serving)
    install_ollama_routes(app, serving)
    install_extension_routes(app, service)
    from webui.api.fallback_routes import install_fallback_routes  # last: what no route above takes

    install_fallback_routes(app)


def install_extension_routes(app: FastAPI, service: Service) -> None:
    """Each enabled extension's ``palabre_routes`` under ``/v1/extensions/<name>`` (at start: a restart
    applies extensions enabled later); a failing hook is logged with the extension's name and skipped."""
    from fastapi import APIRouter

    extensions = service.extensions
    problems: list[str] = []
    for name in extensions.enabled:
        router = APIRouter(prefix=f"/v1/extensions/{name}", tags=[f"extension {name}"])
        if extensions.add_routes(name, router, problems):
            app.include_router(router)
