"""Builds the core Service from an AppConfig (the one place where configuration meets the core)."""

from __future__ import annotations

import sys

from webui.config import AppConfig
from webui.core.characters.store import CharacterStore
from webui.core.chats.store import ChatStore
from webui.core.extensions.manager import ExtensionManager
from webui.core.knowledge import KNOWLEDGE_FILE
from webui.core.presets import PresetStore
from webui.core.registry import LoaderRegistry
from webui.core.service import Service
from webui.core.templates.store import TemplateStore


def build_templates(config: AppConfig) -> TemplateStore:
    return TemplateStore(config.bundled_templates_dir, config.user_templates_dir)


def build_characters(config: AppConfig, templates: TemplateStore | None = None) -> CharacterStore:
    """The personality store (it saves templates converted from Modelfiles into the user's templates)."""
    return CharacterStore(
        config.bundled_characters_dir, config.user_characters_dir, templates or build_templates(config)
    )


def build_extensions(config: AppConfig) -> tuple[ExtensionManager, list[str]]:
    """Every extension found, with ``--extensions`` (or else those saved in settings.yaml) enabled and the
    saved extension settings applied; plus the problems met (unknown or broken extensions, bad settings)."""
    from webui.core.settings import SETTINGS_FILE, load_settings

    manager = ExtensionManager(
        config.bundled_extensions_dir, config.user_extensions_dir, user_data_dir=config.user_data_dir
    )
    saved = load_settings(config.user_data_dir / SETTINGS_FILE)
    problems = manager.load_settings(saved.extension_settings)
    enabled = config.extensions if config.extensions is not None else saved.extensions
    problems += manager.set_enabled(list(enabled))
    return manager, problems


def build_service(config: AppConfig, registry: LoaderRegistry | None = None) -> Service:
    """A Service wired to the bundled folders and the user's data folder."""
    config.models_dir.mkdir(parents=True, exist_ok=True)
    templates = build_templates(config)
    extensions, problems = build_extensions(config)
    for problem in problems:  # a broken or unknown extension is reported, never fatal
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    chats = ChatStore(config.user_data_dir / "palabre.db")
    # Pictures and files no message names any more (their conversations were deleted) leave user_data; those
    # younger than an hour stay, in case a message naming them is being saved by another process.
    chats.prune_media()
    return Service(
        registry or LoaderRegistry.from_entry_points(),
        models_dir=config.models_dir,
        presets=PresetStore(config.bundled_presets_dir, config.user_presets_dir),
        templates=templates,
        chats=chats,
        characters=build_characters(config, templates),
        max_queue=config.max_queue,
        memory_budget=config.model_memory_budget,
        max_loaded_models=config.max_loaded_models,
        extensions=extensions,
        embedding_model=config.embedding_model,
        knowledge_path=config.user_data_dir / KNOWLEDGE_FILE,
    )
