"""One FastAPI app: the HTTP API routes plus the Gradio page mounted at ``/``."""

from __future__ import annotations

import os
from typing import Any

from webui.config import AppConfig
from webui.core.service import Service


def _prepare_gradio_env(config: AppConfig) -> None:
    """Keep gradio's temporary files inside user_data and its analytics off (set before importing gradio)."""
    temp = config.user_data_dir / "cache" / "gradio"
    temp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def create_app(service: Service, config: AppConfig) -> Any:
    """The FastAPI application serving the page and the API."""
    _prepare_gradio_env(config)
    import gradio as gr
    from fastapi import FastAPI

    from webui.api.auth import install_access_control
    from webui.api.routes import install_api
    from webui.ui.app import UI_CSS, build_ui

    app = FastAPI(title="Palabre", docs_url="/api-docs")

    @app.get("/health")
    def health() -> dict[str, Any]:
        state = service.engine.state
        return {
            "status": "ok",
            "model": state.entry.name if state else None,
            "loader": state.loader if state else None,
        }

    install_access_control(app, config)
    install_api(app, service, config)
    app.state.idle_unloader.start()
    blocks = build_ui(service, config)
    return gr.mount_gradio_app(app, blocks, path="/", css=UI_CSS)


def run_server(service: Service, config: AppConfig) -> int:
    """Serve until interrupted."""
    import uvicorn

    app = create_app(service, config)
    print(f"Palabre is serving on http://{config.host}:{config.port}/", flush=True)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    finally:
        app.state.idle_unloader.stop()
    return 0
