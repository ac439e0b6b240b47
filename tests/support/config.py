"""Configurations for tests: an AppConfig over a temporary user_data folder."""

from __future__ import annotations

from pathlib import Path

from webui.config import AppConfig


def make_config(user_data: Path, *models: Path) -> AppConfig:
    """An AppConfig over ``user_data`` whose models folder links to ``models``."""
    models_dir = user_data / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for model in models:
        link = models_dir / model.name
        if not link.exists():
            link.symlink_to(model)
    return AppConfig(user_data_dir=user_data)
