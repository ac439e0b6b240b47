"""One FastAPI app: the HTTP API routes plus the Gradio page mounted at ``/``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from webui.config import AppConfig
from webui.core.service import Service

# The largest file the page accepts by default (character cards, chat imports; `serve --max-upload-mb`):
# bigger uploads get HTTP 413 before they are stored, so nobody can fill the disk through the page.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def max_upload_bytes(config: AppConfig) -> int:
    return int(config.max_upload_mb * 1024 * 1024)


# Gradio's queue looks for new events every 1 ms while idle (on Linux): ~5% of a core and a thousand GIL
# hand-overs a second taken from generation on a small machine. 10 ms adds at most 10 ms to a click.
GRADIO_QUEUE_POLL_S = 0.01


def _prepare_gradio_env(config: AppConfig) -> None:
    """Keep gradio's temporary files inside user_data and its analytics off (set before importing gradio)."""
    temp = config.user_data_dir / "cache" / "gradio"
    temp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # After every event gradio's queue rebuilds a pandas summary of up to 10,000 past events (for its
    # monitoring page, which Palabre does not use): each click then costs more the longer the server runs.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")


def _calm_gradio_queue(blocks: Any) -> None:
    """Make gradio's idle queue poll every GRADIO_QUEUE_POLL_S instead of every millisecond."""
    queue = getattr(blocks, "_queue", None)  # gradio's attribute; left alone if a gradio release renames it
    if queue is not None and getattr(queue, "sleep_when_free", 0) < GRADIO_QUEUE_POLL_S:
        queue.sleep_when_free = GRADIO_QUEUE_POLL_S


def create_app(service: Service, config: AppConfig) -> Any:
    """The FastAPI application serving the page and the API."""
    _prepare_gradio_env(config)
    from webui.ui.gradio_import import skip_stub_regeneration

    skip_stub_regeneration()
    import gradio as gr
    from fastapi import FastAPI

    from webui.api.auth import install_access_control
    from webui.api.routes import install_api
    from webui.core.agent import Toolbox
    from webui.ui.app import UI_CSS, build_ui
    from webui.ui.extensions_panel import extension_assets
    from webui.ui.uploads import UploadJanitor

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
    # The page's tools (MCP servers from user_data/mcp.json only), shared with the API: chat requests get
    # them only when the user turns on "API clients may use these tools too" in the Tools panel.
    toolbox = Toolbox(config.user_data_dir)
    install_api(app, service, config, toolbox)
    app.state.idle_unloader.start()
    blocks = build_ui(service, config, toolbox)
    _calm_gradio_queue(blocks)
    extension_css, _ = extension_assets(service.extensions)
    app.state.upload_janitor = UploadJanitor(blocks.upload_file_set)
    app.state.upload_janitor.start()
    mounted = gr.mount_gradio_app(
        app, blocks, path="/", css=UI_CSS + extension_css, max_file_size=max_upload_bytes(config)
    )
    _stop_with_the_server(mounted, app.state.upload_janitor.stop)
    return mounted


def _stop_with_the_server(app: Any, stop: Callable[[], None]) -> None:
    """Run ``stop`` when the server shuts down. In the app's lifespan, not after ``uvicorn.run``: uvicorn
    raises the SIGTERM it caught again once it has shut down, which ends the process before a ``finally``."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        try:
            async with inner(app_) as state:
                yield state
        finally:
            stop()

    app.router.lifespan_context = lifespan


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
