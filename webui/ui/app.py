"""build_ui: the whole page (Chat, Default, Notebook, Parameters, Character, Model, Session tabs) over one core Service.

The server mounts the returned Blocks with ``gr.mount_gradio_app(app, blocks, path="/", css=UI_CSS)``.
Everything per browser session lives in ``gr.State``; nothing here is module-level mutable state. The choices
the page remembers between runs are in ``<user_data>/settings.yaml`` (see webui.core.settings).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.config import AppConfig
from webui.core.agent import Toolbox
from webui.core.service import Service
from webui.core.settings import SETTINGS_FILE, SettingsFile
from webui.ui.character_tab import CharacterTab
from webui.ui.chat_tab import ChatTab
from webui.ui.download_panel import DownloadPanel
from webui.ui.extensions_panel import ExtensionsPanel, build_extension_tabs, extension_assets
from webui.ui.knowledge_tab import KnowledgeTab
from webui.ui.live_status import LiveStatus, page_status
from webui.ui.model_tab import ModelTab
from webui.ui.parameters_tab import ParametersTab
from webui.ui.session_tab import APPLY_THEME_JS, SessionTab
from webui.ui.state import SessionJobs, cancel_session_jobs
from webui.ui.text_tabs import TextTabs

UI_CSS = """
#chat-status, #chat-context, #model-status, #params-status, #default-status, #notebook-status { min-height: 1.5em; }
#chat-status p, #chat-context p, #default-status p, #notebook-status p, #default-tokens p, #notebook-tokens p {
  font-size: 0.9em; opacity: 0.85;
}
#chat-context, #default-tokens, #notebook-tokens { text-align: right; }
#chat-input textarea { font-size: 1em; }
#chat-conversations { max-height: 460px; overflow-y: auto; }
#chat-conversations .wrap { flex-direction: column; }
#chat-conversations label { width: 100%; }
#default-output textarea, #notebook-text textarea, #default-input textarea, #template-editor-preview textarea {
  font-family: var(--font-mono);
}
@media (max-width: 640px) {  /* a phone: the chat before the conversation list, the message box on a line of its own */
  #chat-sidebar { order: 1; }
  .form:has(> #chat-input) { flex-basis: 100% !important; min-width: 100% !important; }
}
"""

UI_TITLE = "Palabre"


def build_ui(service: Service, config: AppConfig, toolbox: Toolbox | None = None) -> gr.Blocks:
    """The page: every tab wired to ``service``; ``config`` tells the page where the models and the settings
    file are. ``toolbox``: the page's tools (default: one over ``config.user_data_dir``); the server may make
    it and share it with the API, which reaches it only through ``Toolbox.available_tools_for_api``."""
    settings = SettingsFile(config.user_data_dir / SETTINGS_FILE)
    params = ParametersTab(service)
    toolbox = toolbox or Toolbox(config.user_data_dir)  # MCP servers come from user_data/mcp.json only
    chat = ChatTab(service, params, settings, toolbox)
    chat.tools.start_servers()
    text = TextTabs(service, params)
    model = ModelTab(service, models_dir=str(config.models_dir), settings=settings)
    session = SessionTab(service, settings)
    character = CharacterTab(service)
    extensions = ExtensionsPanel(service.extensions, settings)
    live = LiveStatus(service)  # the status lines follow loads and unloads made elsewhere
    extension_problems: list[str] = []  # logged with the extension's name by the manager

    with gr.Blocks(title=UI_TITLE, analytics_enabled=False) as blocks:
        jobs = gr.State(SessionJobs(), delete_callback=cancel_session_jobs)
        live.build()
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                chat.build()
            with gr.Tab("Default", id="default", elem_id="tab-default"):
                text.build_default()
            with gr.Tab("Notebook", id="notebook", elem_id="tab-notebook"):
                text.build_notebook()
            with gr.Tab("Parameters", id="parameters", elem_id="tab-parameters") as parameters_tab:
                params.build()
            with gr.Tab("Character", id="character", elem_id="tab-character") as character_tab:
                character.build(character_tab)
            with gr.Tab("Model", id="model", elem_id="tab-model"):
                load_event, unload_event = model.build(mirrors=[chat.status], news=live.news)
                DownloadPanel(config.models_dir).build().then(model.refresh_models, outputs=[model.model])
            if service.knowledge is not None:
                with gr.Tab("Knowledge", id="knowledge", elem_id="tab-knowledge"):
                    KnowledgeTab(service.knowledge).build()
            with gr.Tab("Session", id="session", elem_id="tab-session"):
                session.build()
                extensions.build()
            build_extension_tabs(service.extensions, extension_problems)

        def status_line() -> tuple[Any, ...]:
            return (page_status(service), *live.remember())

        def refresh_page() -> list[Any]:
            saved = session.restore()
            return [
                *params.refresh(saved),
                *params.editor.refresh(saved.template),
                *model.refresh(saved),
                page_status(service),
                saved.mode,
                saved.theme,
                session.describe(saved),
                *text.refresh(),
            ]

        for event in (*chat.wire(jobs), *text.wire(jobs)):  # the last reply's speed shows in the Model tab
            event.then(status_line, outputs=[model.status_md, *live.remember_outputs], show_progress="hidden")
        # Loaded or unloaded elsewhere (API, idle watcher, another page): the status lines follow within seconds.
        statuses = [model.status_md, chat.status, text.default_status, text.notebook_status]
        followed = live.wire(jobs, statuses, model)
        for event in (load_event, unload_event):  # the page shows the new state itself: nothing for the timer
            event.then(live.remember, outputs=live.remember_outputs, show_progress="hidden", queue=False)
        # Not-used marks and template list follow the loaded model, however it was loaded.
        for event in (load_event, unload_event, followed):
            event.then(
                params.after_load,
                inputs=[params.template],
                outputs=params.refresh_outputs,
                show_progress="hidden",
            ).then(
                chat.handlers.meter,
                inputs=[chat.history, *chat.values],
                outputs=[chat.meter],
                show_progress="hidden",
            )
        chat.wire_load(blocks)
        for event in character.changed:  # personalities created, imported or deleted: the chat's list follows
            event.then(
                chat.refresh_characters,
                inputs=[chat.personality],
                outputs=[chat.personality],
                show_progress="hidden",
            )
        params.editor.wire(chat.history, chat.system, params.template, parameters_tab)
        _, to_notebook = chat.wire_send_to(tabs, text.prompt, text.notebook)
        to_notebook.then(
            text.handlers.notebook_counts, inputs=[text.notebook], outputs=[text.notebook_tokens]
        )

        # Remember each choice as it is made; restore them all when the page opens.
        session.wire(params.preset, chat.mode, params.template)
        for event in params.preset_events:  # picked, saved as a new one, or deleted (back to Default)
            event.then(
                session.remember_preset,
                inputs=[params.preset],
                outputs=[session.status],
                show_progress="hidden",
            )
        chat.mode.input(
            session.remember_mode, inputs=[chat.mode], outputs=[session.status], show_progress="hidden"
        )
        params.template.input(
            session.remember_template,
            inputs=[params.template],
            outputs=[session.status],
            show_progress="hidden",
        )
        blocks.load(
            refresh_page,
            outputs=[
                *params.refresh_outputs,
                *params.editor.refresh_outputs,
                *model.refresh_outputs,
                chat.status,
                chat.mode,
                session.theme,
                session.status,
                *text.refresh_outputs,
            ],
            show_progress="hidden",
        ).then(None, inputs=[session.theme], js=APPLY_THEME_JS).then(
            extensions.refresh, outputs=[extensions.enabled, extensions.status_md], show_progress="hidden"
        ).then(
            chat.handlers.meter,
            inputs=[chat.history, *chat.values],
            outputs=[chat.meter],
            show_progress="hidden",
        )
        blocks.load(live.remember, outputs=live.remember_outputs, show_progress="hidden", queue=False)
        _, extension_js = extension_assets(service.extensions)
        if extension_js:
            blocks.load(None, js=extension_js)
    return blocks
