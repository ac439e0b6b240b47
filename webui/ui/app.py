"""build_ui: the whole page (Chat, Default, Notebook, Parameters, Model tabs) over one core Service.

The server mounts the returned Blocks with ``gr.mount_gradio_app(app, blocks, path="/", css=UI_CSS)``.
Everything per browser session lives in ``gr.State``; nothing here is module-level mutable state.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.config import AppConfig
from webui.core.service import Service
from webui.ui.chat_tab import ChatTab
from webui.ui.model_tab import ModelTab
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import SessionJobs, cancel_session_jobs
from webui.ui.text_tabs import TextTabs

UI_CSS = """
#chat-status, #model-status, #params-status, #default-status, #notebook-status { min-height: 1.5em; }
#chat-status p, #default-status p, #notebook-status p { font-size: 0.9em; opacity: 0.85; }
#chat-input textarea { font-size: 1em; }
#default-output textarea, #notebook-text textarea, #default-input textarea { font-family: var(--font-mono); }
"""

UI_TITLE = "Palabre"


def build_ui(service: Service, config: AppConfig) -> gr.Blocks:
    """The page: every tab wired to ``service``; ``config`` tells the page what to show (the models folder)."""
    params = ParametersTab(service)
    chat = ChatTab(service, params)
    text = TextTabs(service, params)
    model = ModelTab(service, models_dir=str(config.models_dir))

    with gr.Blocks(title=UI_TITLE, analytics_enabled=False) as blocks:
        jobs = gr.State(SessionJobs(), delete_callback=cancel_session_jobs)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                chat.build()
            with gr.Tab("Default", id="default", elem_id="tab-default"):
                text.build_default()
            with gr.Tab("Notebook", id="notebook", elem_id="tab-notebook"):
                text.build_notebook()
            with gr.Tab("Parameters", id="parameters", elem_id="tab-parameters"):
                params.build()
            with gr.Tab("Model", id="model", elem_id="tab-model"):
                load_event, unload_event = model.build(mirrors=[chat.status])

        def status_line() -> str:
            return service.status_line()

        def refresh_page() -> list[Any]:
            return [*params.refresh(), *model.refresh(), service.status_line()]

        for event in (*chat.wire(jobs), *text.wire(jobs)):  # the last reply's speed shows in the Model tab
            event.then(status_line, outputs=[model.status_md], show_progress="hidden")
        for event in (load_event, unload_event):  # not-used marks and template list follow the loaded model
            event.then(params.refresh, outputs=params.refresh_outputs, show_progress="hidden")
        blocks.load(
            refresh_page,
            outputs=[*params.refresh_outputs, *model.refresh_outputs, chat.status],
            show_progress="hidden",
        )
    return blocks
