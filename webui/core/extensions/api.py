"""What an extension imports: the hook marker, the types its hooks are given, and safe file helpers.

This is the one module extension authors depend on (bundled, user and packaged extensions alike); its
``__all__`` is the curated surface, kept stable while the core's own modules move. The hooks themselves,
their arguments and their order are specified in webui.core.extensions.hooks.
"""

from __future__ import annotations

from webui.core.characters.store import Character
from webui.core.extensions.hooks import ChatContext, ExtensionState, GenerationKind, hookimpl
from webui.core.params import GenerationParams, describe_validation_error
from webui.core.paths import InvalidNameError, atomic_write_text, files_by_stem, path_in
from webui.core.prompts import ChatMessage, Mode
from webui.core.safe_load import load_json, load_yaml

__all__ = [
    "Character",
    "ChatContext",
    "ChatMessage",
    "ExtensionState",
    "GenerationKind",
    "GenerationParams",
    "InvalidNameError",
    "Mode",
    "atomic_write_text",
    "describe_validation_error",
    "files_by_stem",
    "hookimpl",
    "load_json",
    "load_yaml",
    "path_in",
]
