"""The Gradio page: ``webui.ui.app.build_ui(service, config)`` returns the Blocks the server mounts."""
