"""The loader contract: what every backend implements, and the typed chunks a generation streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeGuard, TypeVar, runtime_checkable

from pydantic import BaseModel

from webui.core.params import GenerationParams

if TYPE_CHECKING:
    from webui.core.media import Image
    from webui.core.models.discovery import ModelEntry
    from webui.core.prompts import ChatMessage
    from webui.core.tools.request import ToolRequest

# Why a generation ended. The API names "cancelled" "stop" (only a client that left ever sees it);
# "tool_calls": the reply ended after calling tools (the engine's reader sets it, or a server's chat endpoint).
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


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
class PromptUsage:
    """The prompt of one generation as the loader counted it: its tokens, and how many were reused from the
    cache of the previous generation instead of evaluated again."""

    tokens: int
    reused: int = 0


@dataclass(frozen=True)
class GenerationStats:
    """Timing and counts of one finished generation."""

    prompt: PromptUsage
    new_tokens: int
    time_to_first_token_s: float
    total_s: float
    # Speculative decoding: tokens drafted, and how many of them the model kept.
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        """The share of drafted tokens the model kept (0 without drafting)."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def tokens_per_decode(self) -> float:
        """Tokens each decoding step gave: 1 without drafting, more as drafts are kept (the speed-up bound)."""
        steps = self.new_tokens - self.accepted_tokens
        return self.new_tokens / steps if steps > 0 else 1.0

    @property
    def prompt_tokens(self) -> int:
        return self.prompt.tokens

    @property
    def reused_prompt_tokens(self) -> int:
        return self.prompt.reused

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token (the decode rate users compare)."""
        decode_time = self.total_s - self.time_to_first_token_s
        if self.new_tokens <= 1 or decode_time <= 0:
            return 0.0
        return (self.new_tokens - 1) / decode_time

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt.tokens - self.prompt.reused
        if evaluated <= 0 or self.time_to_first_token_s <= 0:
            return 0.0
        return evaluated / self.time_to_first_token_s


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of one tool call as it streams: its first piece names it, later ones add to its arguments."""

    index: int  # which call of the reply it belongs to (a reply may make several)
    id: str = ""
    name: str = ""
    arguments: str = ""  # the next piece of the JSON arguments text


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability: the log-softmax of the model's own logits at that position, before any
    sampler transform (temperature, penalties, top-k ...), as llama.cpp's server reports it. ``top`` holds the
    most likely tokens at that position (each with an empty ``top``), most likely first."""

    token_id: int
    token: str  # its text; a token that is part of a UTF-8 character shows as replacement characters
    token_bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation: deltas, never the cumulative string.

    ``text`` is the answer, ``reasoning`` a thinking model's reasoning and ``tool_calls`` the tool calls, each
    a delta of its own part. Loaders set ``prompt`` once they know it (the last one given counts); the engine
    puts the ``stats`` on the last chunk, which also carries the ``finish_reason``.
    """

    text: str = ""
    _: KW_ONLY
    tokens: int = 0
    finish_reason: FinishReason | None = None
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    prompt: PromptUsage | None = None
    stats: GenerationStats | None = None
    # Speculative decoding: tokens drafted for this chunk's step(s), and how many the model kept.
    drafted: int = 0
    accepted: int = 0
    # With params.logprobs >= 0: one entry per generated token of this chunk, in order.
    logprobs: tuple[TokenLogprob, ...] = ()
    # With params.prompt_logprobs: the prompt's tokens (the first has no logprob: None), on the first chunk.
    prompt_logprobs: tuple[TokenLogprob | None, ...] = ()
    # Each generated token's text, in order, when the loader gives it (``len(pieces) == tokens``): a chunk of
    # several tokens (drafts kept, pieces that waited for a busy reader) is then still read token by token.
    pieces: tuple[str, ...] = ()
    # Of ``tokens``, how many were reasoning (set by the reply reader).
    reasoning_tokens: int = 0


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
    # A second template some models carry for requests with tools (GGUF tokenizer.chat_template.tool_use,
    # a tokenizer's "tool_use" named template: Hermes, Command R).
    tool_chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory, ready to generate.

    ``capabilities`` are its loader's, or narrower ones (e.g. a server without a tokenizer endpoint).
    """

    facts: ModelFacts
    capabilities: LoaderCapabilities

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        """Generate from ``prompt``; the last chunk carries the finish_reason."""
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
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: CancelToken,
        *,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> Iterator[Chunk]:
        """Generate the reply to ``messages``; chunks as from ``stream``, with the reply's reasoning and tool
        calls in their own parts. ``tools`` and ``template_kwargs`` go to the server's template."""
        ...


@runtime_checkable
class SeeingModel(LoadedModel, Protocol):
    """A loaded model that takes images (a projector beside a GGUF, a Transformers vision model).

    The prompt holds ``media_marker`` once per image, in the order of ``images``. The marker is random per
    load, so text a user types can never open an image slot.
    """

    media_marker: str

    def stream_images(
        self, prompt: str, images: Sequence[Image], params: GenerationParams, cancel: CancelToken
    ) -> Iterator[Chunk]:
        """Generate from ``prompt`` with ``images`` in place of its markers; chunks as from ``stream``."""
        ...

    def image_tokens(self, image: Image) -> int:
        """How many context tokens ``image`` takes (the context meter and truncation count them)."""
        ...


def sees_images(model: LoadedModel) -> TypeGuard[SeeingModel]:
    """True when ``model`` takes images (a vision model whose projector is loaded)."""
    return isinstance(model, SeeingModel) and bool(getattr(model, "media_marker", ""))


def renders_own_template(model: LoadedModel) -> TypeGuard[ChatTemplatedModel]:
    """True when ``model`` wants the structured conversation rather than a rendered prompt."""
    return isinstance(model, ChatTemplatedModel) and bool(model.renders_chat_template)


class Claim(IntEnum):
    """How well a loader fits a model's files (``Loader.claims``): the highest claim wins, NONE never.

    Loaders may answer any number in between (e.g. 25 to beat a format's own loader but not a narrower one).
    """

    NONE = 0
    CAN_OPEN = 10  # it reads these files, but a loader made for them should win
    MADE_FOR = 20  # the format it is made for (GGUF files for llama.cpp, model folders for transformers)
    NARROWER = 30  # a narrower case of a format (a GPTQ folder among Transformers folders)


SettingsT = TypeVar("SettingsT", bound=BaseModel)


class Loader(Protocol[SettingsT]):
    """A backend: declares capabilities and settings, says which files it opens, turns a path into a model.

    The engine validates the settings against ``settings_model`` once and passes the validated model to
    ``load``. A loader whose capabilities say ``needs_files=False`` receives ``Path(name)`` with the name the
    user gave (possibly empty); the loaded model's ``facts.name`` then names it.
    """

    name: ClassVar[str]
    capabilities: ClassVar[LoaderCapabilities]
    settings_model: type[SettingsT]

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        """How well this loader fits ``entry``'s files (a ``Claim``); ModelFileError if they cannot be read."""
        ...

    def load(self, path: Path, settings: SettingsT) -> LoadedModel: ...
