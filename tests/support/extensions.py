"""Extension test helpers: the bundled extensions as modules and managers, and a ChatContext with word counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from webui.config import PROJECT_ROOT
from webui.core.characters.store import Character
from webui.core.extensions.api import ChatContext
from webui.core.extensions.discovery import Found, discover
from webui.core.extensions.manager import ExtensionManager
from webui.core.prompts import ChatMessage

BUNDLED = PROJECT_ROOT / "extensions"


def words(text: str) -> int:
    """The stand-in tokenizer: one token per word."""
    return len(text.split())


def chat_context(
    *,
    budget: int = 10_000,
    character: Character | None = None,
    generate: Callable[[Sequence[ChatMessage], int], str] | None = None,
    user_data_dir: Path | None = None,
) -> ChatContext:
    """A ChatContext counting words as tokens; ``measure`` counts the words of all messages."""
    return ChatContext(
        mode="instruct",
        character_name="Ada",
        user_name="You",
        character=character,
        max_prompt_tokens=budget,
        count_tokens=words,
        measure=lambda messages: sum(words(m.content) + 2 for m in messages),
        generate=generate or (lambda messages, n: "summary"),
        user_data_dir=user_data_dir,
    )


def bundled(name: str) -> ModuleType:
    """The bundled extension ``name``'s module, discovered the way the app finds it."""
    found = {item.name: item for item in discover(BUNDLED, None)}
    assert found[name].error is None, found[name].error
    assert found[name].module is not None
    return found[name].module


def bundled_manager(name: str, **settings: Any) -> ExtensionManager:
    """A manager holding only the bundled extension ``name``, enabled, with ``settings`` applied."""
    manager = manager_of_found(next(item for item in discover(BUNDLED, None) if item.name == name))
    assert manager.set_enabled([name]) == []
    if settings:
        manager.update_settings(name, settings)
    return manager


def manager_of_found(found: Found) -> ExtensionManager:
    """A manager over one discovered extension."""
    return ExtensionManager(found=[found])
