"""Builds the core Service from an AppConfig (the one place where configuration meets the core)."""

from __future__ import annotations

from webui.config import AppConfig
from webui.core.characters import CharacterStore
from webui.core.chats import ChatStore
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.templates import TemplateStore


def build_templates(config: AppConfig) -> TemplateStore:
    return TemplateStore(config.bundled_templates_dir, config.user_templates_dir)


def build_characters(config: AppConfig, templates: TemplateStore | None = None) -> CharacterStore:
    """The personality store (it saves templates converted from Modelfiles into the user's templates)."""
    return CharacterStore(
        config.bundled_characters_dir, config.user_characters_dir, templates or build_templates(config)
    )


def build_service(config: AppConfig, registry: LoaderRegistry | None = None) -> Service:
    """A Service wired to the bundled folders and the user's data folder."""
    config.models_dir.mkdir(parents=True, exist_ok=True)
    templates = build_templates(config)
    return Service(
        registry or LoaderRegistry.from_entry_points(),
        models_dir=config.models_dir,
        presets=PresetStore(config.bundled_presets_dir, config.user_presets_dir),
        templates=templates,
        chats=ChatStore(config.user_data_dir / "palabre.db"),
        characters=build_characters(config, templates),
    )
