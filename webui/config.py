"""AppConfig: parsed once at the edge (CLI) and passed down; nothing reads globals."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_user_data_dir() -> Path:
    """``$PALABRE_USER_DATA`` if set, else ``user_data/`` next to the bundled folders."""
    env = os.environ.get("PALABRE_USER_DATA")
    return Path(env).expanduser() if env else PROJECT_ROOT / "user_data"


@dataclass(frozen=True)
class AppConfig:
    """Paths, network settings and start-up choices for one Palabre process."""

    user_data_dir: Path = field(default_factory=default_user_data_dir)
    bundled_dir: Path = PROJECT_ROOT
    host: str = "127.0.0.1"
    port: int = 7860
    model: str | None = None
    loader: str | None = None
    loader_settings: dict[str, str] = field(default_factory=dict)
    autoload_default_model: bool = True
    # Access (webui/api/auth.py). Secrets stay out of repr so a printed config never shows them.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    page_auth: tuple[str, str] | None = field(default=None, repr=False)  # (user, password)
    cors_origins: tuple[str, ...] = ()
    # Host names (NAME or NAME:PORT, '*' for any) the server answers to besides its addresses and localhost:
    # any other Host is refused, the defence against DNS rebinding (webui/api/web_policy.py).
    allowed_hosts: tuple[str, ...] = ()
    open_page: bool = False  # admin keys set, yet the page (which loads and unloads) has no password
    insecure: bool = False  # serve on a non-loopback address without keys / page password
    idle_unload_minutes: float | None = None  # unload the model after this long idle (fractions allowed)
    # Extensions to enable (``--extensions a b``, in hook order); None = those saved in settings.yaml.
    extensions: tuple[str, ...] | None = None
    max_queue: int = 16  # generations that may wait behind the running one; more are refused (HTTP 429)
    # Several models loaded at once: the memory they may hold together (None: what the fit check says the
    # machine holds) and how many (as Ollama's OLLAMA_MAX_LOADED_MODELS).
    model_memory_budget: int | None = None
    max_loaded_models: int = 3
    # The embedding model (/v1/embeddings, /api/embed) to load at start and use when a request names none.
    embedding_model: str | None = None
    max_upload_mb: float = 50.0  # the largest file the page accepts; bigger uploads get HTTP 413
    # Hosts the API may fetch http(s) image URLs from (``--allow-image-host``; ``*.example.com``, ``*``);
    # empty: image URLs are refused, only base64 images are taken. Private addresses are refused whatever.
    image_hosts: tuple[str, ...] = ()

    @property
    def models_dir(self) -> Path:
        return self.user_data_dir / "models"

    @property
    def user_presets_dir(self) -> Path:
        return self.user_data_dir / "presets"

    @property
    def user_templates_dir(self) -> Path:
        return self.user_data_dir / "instruction-templates"

    @property
    def user_characters_dir(self) -> Path:
        return self.user_data_dir / "characters"

    @property
    def user_extensions_dir(self) -> Path:
        return self.user_data_dir / "extensions"

    @property
    def bundled_extensions_dir(self) -> Path:
        return self.bundled_dir / "extensions"

    @property
    def bundled_presets_dir(self) -> Path:
        return self.bundled_dir / "presets"

    @property
    def bundled_templates_dir(self) -> Path:
        return self.bundled_dir / "instruction-templates"

    @property
    def bundled_characters_dir(self) -> Path:
        return self.bundled_dir / "characters"
