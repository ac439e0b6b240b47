"""The loader contract: what every backend implements, and the typed chunks a generation streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeGuard, runtime_checkable

from pydantic import BaseModel

from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage


class LoaderError(RuntimeError):
    """A model could not be loaded or run; the message is meant for the user."""


class CancelToken:
    """Set by whoever wants *this* generation to stop; checked by the loader between tokens."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class GenerationStats:
    """Timing and counts of one finished generation."""

    prompt_tokens: int
    new_tokens: int
    reused_prompt_tokens: int
    time_to_first_token_s: float
    total_s: float

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token (the decode rate users compare)."""
        decode_time = self.total_s - self.time_to_first_token_s
        if self.new_tokens <= 1 or decode_time <= 0:
            return 0.0
        return (self.new_tokens - 1) / decode_time

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.reused_prompt_tokens
        if evaluated <= 0 or self.time_to_first_token_s <= 0:
            return 0.0
        return evaluated / self.time_to_first_token_s


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation: a text delta, never the cumulative string."""

    text: str
    tokens: int = 0
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the last chunk
    stats: GenerationStats | None = None  # on the last chunk
    prompt_tokens: int = 0  # set by loaders on the last chunk
    reused_prompt_tokens: int = 0


@dataclass(frozen=True)
class LoaderCapabilities:
    """What a loader can do; the page marks sampler fields outside ``honoured_params`` as not applicable."""

    honoured_params: frozenset[str]
    streams_logprobs: bool = False
    can_tokenize: bool = True
    parallel: bool = False
    # False for a model that is not a file (a remote server's model): any name is accepted, no file lookup.
    needs_files: bool = True


@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model tells about itself."""

    name: str
    path: Path
    loader: str
    context_length: int
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory, ready to generate."""

    facts: ModelFacts

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        """Generate from ``prompt``; the last chunk carries finish_reason and prompt token counts."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def unload(self) -> None:
        """Free the model's memory; the object must not be used afterwards."""
        ...


@runtime_checkable
class ChatTemplatedModel(LoadedModel, Protocol):
    """A loaded model that applies its own chat template (a server's chat endpoint): it takes messages.

    ``renders_chat_template`` may be False on an instance that could, but was loaded to take raw prompts.
    """

    renders_chat_template: bool

    def stream_chat(
        self, messages: Sequence[ChatMessage], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        """Generate the reply to ``messages``; chunks as from ``stream``."""
        ...


def renders_own_template(model: LoadedModel) -> TypeGuard[ChatTemplatedModel]:
    """True when ``model`` wants the structured conversation rather than a rendered prompt."""
    return isinstance(model, ChatTemplatedModel) and bool(model.renders_chat_template)


class Loader(Protocol):
    """A backend: declares capabilities and settings, and turns a path into a LoadedModel.

    A loader whose capabilities say ``needs_files=False`` receives ``Path(name)`` with the name the user
    gave (possibly empty); the loaded model's ``facts.name`` then names it. A loaded model may carry a
    ``capabilities`` attribute of its own that narrows its loader's (e.g. a server without /tokenize).
    """

    name: ClassVar[str]
    capabilities: ClassVar[LoaderCapabilities]
    settings_model: ClassVar[type[BaseModel]]

    def load(self, path: Path, settings: BaseModel) -> LoadedModel: ...
