"""Builds the core Service from an AppConfig (the one place where configuration meets the core)."""

from __future__ import annotations

from webui.config import AppConfig
from webui.core.chats import ChatStore
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.templates import TemplateStore


def build_service(config: AppConfig, registry: LoaderRegistry | None = None) -> Service:
    """A Service wired to the bundled folders and the user's data folder."""
    config.models_dir.mkdir(parents=True, exist_ok=True)
    return Service(
        registry or LoaderRegistry.from_entry_points(),
        models_dir=config.models_dir,
        presets=PresetStore(config.bundled_presets_dir, config.user_presets_dir),
        templates=TemplateStore(config.bundled_templates_dir, config.user_templates_dir),
        chats=ChatStore(config.user_data_dir / "palabre.db"),
    )
