"""The engine's value types: its errors, what is loaded, what the queue and the status show, and one queued
generation (GenerationJob). webui.core.engine re-exports them all."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from webui.core.loader import (
    CancelToken,
    Chunk,
    FinishReason,
    GenerationStats,
    LoadedModel,
    LoaderCapabilities,
)
from webui.core.media import Image
from webui.core.model_lane import END as _END
from webui.core.model_lane import Activity
from webui.core.models.discovery import ModelEntry
from webui.core.params import GenerationParams
from webui.core.prompts import ChatMessage
from webui.core.reply_reader import ReplyFormat
from webui.core.tools.request import ToolRequest


class EngineError(RuntimeError):
    """Something the user asked for cannot be done; the message is meant for them."""


class QueueFull(EngineError):
    """Too many generations already wait: the caller should try again after ``retry_after_s`` seconds."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(
            f"The server is busy: {waiting} requests are already waiting. Try again in {retry_after_s} s."
        )
        self.waiting = waiting
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LoadedState:
    """What is loaded, and how."""

    entry: ModelEntry
    loader: str
    settings: BaseModel
    capabilities: LoaderCapabilities
    model: LoadedModel
    load_seconds: float
    # The fit estimate for this file and these settings (weights + KV cache + overhead): what it holds of the
    # memory budget, and of that the part on a GPU (0 when it cannot be judged, e.g. a server's model).
    memory_bytes: int = 0
    gpu_bytes: int = 0


JobSource = Literal["api", "page"]


@dataclass(frozen=True)
class QueuedJob:
    """One generation as the queue shows it: position 0 is running, 1, 2, ... wait in that order."""

    id: str
    source: JobSource
    request_id: str | None  # the API request it belongs to (the id POST /v1/internal/stop takes)
    position: int
    state: Literal["running", "queued"]
    waited_s: float  # since it was submitted
    model: str = ""  # the model it runs on


@dataclass(frozen=True)
class QueueSnapshot:
    """What the engine is doing now and which generations wait, in the order they were submitted."""

    activity: Activity
    running: QueuedJob | None  # the oldest running generation (the only one, unless the model is parallel)
    queued: tuple[QueuedJob, ...]
    running_jobs: tuple[QueuedJob, ...] = ()  # every running generation, oldest first (position 0 each)


@dataclass(frozen=True)
class IdleUnload:
    """The model the idle watcher unloaded, after ``idle_s`` seconds with nothing to do."""

    model: str
    idle_s: float
    # How it was loaded, so that the next generation loads it again the same way (not part of equality:
    # the page compares unloads by model and time).
    loader: str = field(default="", compare=False)
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Its files, so that one loaded by path from outside the models folder (``serve --model /x.gguf``)
    # is still found by name: listed and loaded again like the others (None for a server's model).
    entry: ModelEntry | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LoadedModelStatus:
    """One loaded model as the lists show it (equal values: nothing changed)."""

    name: str
    loader: str
    activity: Activity
    memory_bytes: int
    gpu_bytes: int
    page: bool  # the page's model (the Model tab's choice)


@dataclass(frozen=True)
class EngineStatus:
    """What is loaded and what the engine does, read without waiting (equal values: nothing changed).

    ``model``, ``loader`` and ``activity`` are the page's model's; ``models`` lists every loaded model.
    """

    model: str | None
    loader: str | None
    activity: Activity
    loading: str | None  # the model a load in progress is loading
    loads: int  # successful loads so far: a reload of the same model with other settings changes it
    idle_unload: IdleUnload | None  # set while the page's model is unloaded because the idle watcher did it
    models: tuple[LoadedModelStatus, ...] = ()
    evictions: int = 0  # models unloaded to make room for another (the memory budget or the count limit)


class GenerationJob:
    """One queued generation: iterate it for Chunks; ``cancel()`` stops it (and only it)."""

    def __init__(
        self,
        prompt: str,
        params: GenerationParams,
        stops: Sequence[str],
        messages: Sequence[ChatMessage] | None = None,
        *,
        reply_format: ReplyFormat | None = None,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        job_id: str = "",
        source: JobSource = "page",
        request_id: str | None = None,
        withdraw: Callable[[GenerationJob], None] | None = None,
        images: Sequence[Image] = (),
        model: str = "",
    ) -> None:
        self.id = job_id
        self.source: JobSource = source
        self.request_id = request_id
        self.model = model  # the name of the model it runs on
        self.submitted_at = time.monotonic()
        self._withdraw = withdraw  # the engine's: a job cancelled while queued leaves the queue at once
        self.prompt = prompt
        self.messages = tuple(messages) if messages is not None else None  # for a model with its own template
        # The images whose markers the prompt holds, in prompt order (a vision model's stream_images gets them).
        self.images = tuple(images)
        self.reply_format = reply_format  # how to tell reasoning and tool calls from the answer (None: plain)
        # For a model with its own template: the tools and template variables its server gets.
        self.tools = tools
        self.template_kwargs = dict(template_kwargs or {})
        self.params = params
        self.stops = tuple(s for s in (*params.stop, *stops) if s)
        self.token = CancelToken()
        self._chunks: queue.SimpleQueue[Chunk | BaseException | object] = queue.SimpleQueue()
        self.stats: GenerationStats | None = None
        self.finish_reason: FinishReason | None = None
        self.stop_string: str | None = None  # the stop string that ended the reply, if one did

    def cancel(self) -> None:
        self.token.cancel()
        if self._withdraw is not None:
            self._withdraw(self)

    def _put(self, item: Chunk | BaseException | object) -> None:
        self._chunks.put(item)

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Chunk)
            yield item

    def text(self) -> str:
        """Run to the end and return the whole reply (non-streaming output is just the joined stream)."""
        return "".join(chunk.text for chunk in self)
