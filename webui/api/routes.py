"""HTTP routes only: every API router is installed here, before the page is mounted at ``/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from webui.config import AppConfig
    from webui.core.agent import Toolbox
    from webui.core.service import Service


def install_api(app: FastAPI, service: Service, config: AppConfig, toolbox: Toolbox | None = None) -> None:
    """Add the internal, OpenAI-compatible and Ollama-compatible routers to ``app``, each with its serving
    object built here once on one shared Serving (the Service, models by name, the API's running requests).
    ``toolbox``: the page's tools, which chat requests get when the user lets API clients use them."""
    from webui.api.fallback_routes import install_fallback_routes
    from webui.api.internal_routes import install_internal_routes
    from webui.api.ollama_routes import install_ollama_routes
    from webui.api.openai_routes import install_openai_routes
    from webui.api.serving import Serving
    from webui.core.image_fetch import ImageSources

    idle_s = config.idle_unload_minutes * 60 if config.idle_unload_minutes else None
    serving = Serving(service, idle_s, ImageSources.for_hosts(config.image_hosts), toolbox)
    app.state.idle_unloader = serving.idle  # create_app starts it, run_server stops it
    install_internal_routes(app, serving)  # /v1/internal/*
    install_openai_routes(app, serving)  # /v1/models, /v1/completions, /v1/chat/completions
    install_ollama_routes(app, serving)  # /api/*
    from webui.api.anthropic_routes import install_anthropic_routes

    install_anthropic_routes(app, serving)  # /v1/messages, /v1/messages/count_tokens
    from webui.api.responses_routes import install_responses_routes

    install_responses_routes(app, serving)  # /v1/responses
    from webui.api.embeddings_routes import install_embeddings_routes

    install_embeddings_routes(app, serving)  # /v1/embeddings, /api/embed, /api/embeddings
    install_extension_routes(app, service)
    install_fallback_routes(app)  # last: what no route above takes


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
