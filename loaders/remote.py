"""Remote loader: generation handed to an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's server).

A remote "model" is not a file: loading checks that the server answers and serves the model, reads its
context length and tokenizer endpoints (``loaders.remote_server`` does the probing), and keeps a client.
``openai`` and ``httpx`` are imported only inside functions. The API key is kept as a secret: never logged,
never shown back, never written to disk.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from loaders.remote_server import (
    APPROX_BYTES_PER_TOKEN,
    FALLBACK_CONTEXT,
    Describer,
    ServerFacts,
    approximate_detokenize,
    approximate_tokenize,
    display_url,
    fetch_json,
    normalise_base_url,
    probe,
    server_root,
)
from webui.core.loader import (
    CancelToken,
    Chunk,
    Claim,
    FinishReason,
    Loader,
    LoaderCapabilities,
    LoaderError,
    ModelFacts,
    PromptUsage,
    ToolCallDelta,
)
from webui.core.models.discovery import ModelEntry
from webui.core.params import PARAM_NAMES, GenerationParams
from webui.core.prompts import ChatMessage

if TYPE_CHECKING:
    import httpx
    import openai

    from webui.core.tools.request import ToolRequest

# Server probing and error wording live in loaders.remote_server; these names stay importable from here.
__all__ = [
    "APPROX_BYTES_PER_TOKEN",
    "FALLBACK_CONTEXT",
    "HONOURED",
    "RemoteLoader",
    "RemoteModel",
    "RemoteSettings",
    "approximate_detokenize",
    "approximate_tokenize",
    "display_url",
    "normalise_base_url",
    "request_fields",
    "tool_fields",
    "wire_messages",
]

_MASK = re.compile(r"^\**$")


class RemoteSettings(BaseModel):
    """Where the server is and how to talk to it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="The server's OpenAI-compatible address, with or without /v1 (e.g. http://host:8000/v1).",
    )
    api_key: SecretStr = Field(
        SecretStr(""),
        description="API key. Empty = $OPENAI_API_KEY, or none. Never shown back nor saved.",
    )
    model: str = Field("", description="The server's model name. Empty = the first model it lists.")
    endpoint: Literal["completions", "chat"] = Field(
        "completions",
        description="completions: Palabre renders the prompt with its instruction template; "
        "chat: the server applies its own chat template to the messages.",
    )
    context_length: int = Field(
        0, ge=0, le=10_000_000, description="Context length in tokens. 0 = ask the server (else 4096)."
    )
    timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="Seconds to wait for the server before giving up."
    )
    send_extras: bool = Field(
        True,
        description="Send samplers beyond the OpenAI API (top_k, min_p, repetition penalty, DRY, ...) as "
        "vLLM and llama.cpp name them. Turn off for servers that reject unknown fields.",
    )

    @field_validator("base_url")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_base_url(value)

    @field_validator("api_key", mode="before")
    @classmethod
    def _unmask(cls, value: Any) -> Any:
        # A saved or shown key reads "**********": that is no key, so the environment's applies.
        if isinstance(value, str) and _MASK.match(value.strip()):
            return ""
        return value


# The engine handles max_new_tokens / truncation_length / stop for every loader; the rest is sent.
# add_bos_token is not: the servers add BOS by their own rule.
HONOURED = frozenset(PARAM_NAMES) - {"add_bos_token"}


def request_fields(params: GenerationParams, *, send_extras: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """GenerationParams -> (OpenAI API arguments, extra_body fields for vLLM / llama.cpp servers)."""
    standard: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.seed >= 0:
        standard["seed"] = params.seed
    if params.stop:
        standard["stop"] = list(params.stop)
    if params.logit_bias:
        standard["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if not send_extras:
        return standard, {}
    extra: dict[str, Any] = {
        "top_k": params.top_k,
        "min_p": params.min_p,
        # Always sent: llama-cpp-python's server otherwise applies its own 1.1.
        "repetition_penalty": params.repetition_penalty,  # vLLM, SGLang, TGI
        "repeat_penalty": params.repetition_penalty,  # llama.cpp
    }
    penalties = params.repetition_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
    if penalties:
        extra["repeat_last_n"] = params.repetition_penalty_range
    if params.typical_p < 1.0:
        extra["typical_p"] = params.typical_p
    if params.ban_eos_token:
        extra["ignore_eos"] = True
    if not params.skip_special_tokens:
        extra["skip_special_tokens"] = False
    if params.mirostat_mode:
        extra.update(
            mirostat=params.mirostat_mode,  # llama.cpp
            mirostat_mode=params.mirostat_mode,  # llama-cpp-python
            mirostat_tau=params.mirostat_tau,
            mirostat_eta=params.mirostat_eta,
        )
    if params.grammar.strip():
        extra["grammar"] = params.grammar
    if params.dry_multiplier > 0:
        extra.update(
            dry_multiplier=params.dry_multiplier,
            dry_base=params.dry_base,
            dry_allowed_length=params.dry_allowed_length,
            dry_penalty_last_n=params.repetition_penalty_range,
            dry_sequence_breakers=list(params.dry_sequence_breakers),
        )
    if params.xtc_probability > 0:
        extra.update(xtc_probability=params.xtc_probability, xtc_threshold=params.xtc_threshold)
    if params.top_n_sigma > 0:
        extra["top_n_sigma"] = params.top_n_sigma
    if params.dynatemp_range > 0:
        extra.update(dynatemp_range=params.dynatemp_range, dynatemp_exponent=params.dynatemp_exponent)
    return standard, extra


def wire_messages(messages: Sequence[ChatMessage], *, send_extras: bool) -> list[dict[str, Any]]:
    """The conversation in OpenAI's shape: a message's images as ``image_url`` parts holding PNG data: URLs
    (after its text), an assistant's tool calls (arguments as JSON text), tool results with the id of the
    call they answer; with ``send_extras`` an assistant's reasoning as ``reasoning_content`` (llama.cpp and
    vLLM pass it to the template)."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.images:  # checked and re-encoded by Palabre: the server gets PNG data: URLs only
            item["content"] = [
                {"type": "text", "text": message.content},
                *({"type": "image_url", "image_url": {"url": image.data_url}} for image in message.images),
            ]
        if message.tool_calls:
            item["content"] = message.content or None
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        if message.role == "tool":
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning and message.role == "assistant" and send_extras:
            item["reasoning_content"] = message.reasoning
        wire.append(item)
    return wire


def _vision_fact(endpoint: str, server_sees: bool | None) -> str:
    """How the server's model takes images (or why it cannot), in words for the model's facts."""
    if endpoint != "chat":
        return (
            "Palabre renders its prompt as text (endpoint completions): load it with endpoint=chat so that "
            "images are sent to the server."
        )
    if server_sees is False:
        return "the server says it takes no images (llama.cpp's /props): serve a vision model there."
    if server_sees:
        return "sent to the server as image_url data: URLs (it says it takes images)."
    return "sent to the server as image_url data: URLs (the server answers whether it takes them)."


def tool_fields(tools: ToolRequest | None) -> dict[str, Any]:
    """A tool request as OpenAI's request fields (nothing without tools)."""
    if tools is None:
        return {}
    choice: str | dict[str, Any] = tools.choice
    if tools.choice not in ("none", "auto", "required"):
        choice = {"type": "function", "function": {"name": tools.choice}}
    return {
        "tools": [dict(tool) for tool in tools.definitions],
        "tool_choice": choice,
        "parallel_tool_calls": tools.parallel,
    }


# -- the loader --------------------------------------------------------------------------------------------


class RemoteLoader(Loader[RemoteSettings]):
    """Any OpenAI-compatible server; the model name is the server's."""

    name: ClassVar[str] = "remote"
    capabilities: ClassVar[LoaderCapabilities] = LoaderCapabilities(
        honoured_params=HONOURED, streams_logprobs=False, can_tokenize=True, parallel=True, needs_files=False
    )
    settings_model = RemoteSettings

    @classmethod
    def claims(cls, entry: ModelEntry) -> int:
        """A server's model (listed while it is loaded); files are never the server's."""
        return Claim.MADE_FOR if entry.kind == "remote" else Claim.NONE

    def load(self, path: Path, settings: RemoteSettings) -> RemoteModel:
        """Connect: check the server answers and serves the model; LoaderError with the reason if not.

        ``path`` carries the name the user gave (the engine passes names for remote loaders): it picks
        the server's model when the server serves one of that name; otherwise the ``model`` setting
        does, else the first model the server lists. A ``model`` setting the server lacks is an error.
        """
        try:
            import httpx
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LoaderError(
                "The remote loader needs the openai client: pip install 'palabre[remote]'."
            ) from exc
        given = str(path) if str(path) not in ("", ".") else ""
        requested = settings.model.strip()
        secret = settings.api_key.get_secret_value().strip() or os.environ.get("OPENAI_API_KEY", "").strip()
        describe = Describer(settings.base_url, secret, settings.timeout_s)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        http = httpx.Client(timeout=settings.timeout_s, headers=headers, follow_redirects=True)
        try:
            server = probe(http, settings, requested, describe, hint=given)
        except BaseException:
            http.close()
            raise
        client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=secret or "none",  # the client insists on one; servers without auth ignore it
            timeout=settings.timeout_s,
            max_retries=0,  # a refused connection is reported at once, not after retries
        )
        return RemoteModel(client, http, settings, server, describe)


class RemoteModel:
    """A model on a server: completions or chat streaming through the openai client."""

    def __init__(
        self,
        client: openai.OpenAI,
        http: httpx.Client,
        settings: RemoteSettings,
        server: ServerFacts,
        describe: Describer,
    ) -> None:
        self._client: openai.OpenAI | None = client
        self._http = http
        self._settings = settings
        self._server = server
        self._describe = describe
        self._root = server_root(settings.base_url)
        self.renders_chat_template = settings.endpoint == "chat"
        self.capabilities: LoaderCapabilities = RemoteLoader.capabilities
        if server.route is None:
            # Counting still works (approximately), but the ids are not the model's.
            self.capabilities = LoaderCapabilities(
                honoured_params=HONOURED, can_tokenize=False, parallel=True, needs_files=False
            )
        self.facts = ModelFacts(
            name=server.model,
            path=Path(server.model),
            loader=RemoteLoader.name,
            context_length=server.context_length,
            chat_template=server.chat_template,
            bos_token=server.bos_token,
            eos_token=server.eos_token,
            extra={
                "server": describe.url,
                "endpoint": settings.endpoint,
                "tokenizer": server.route.name if server.route else "approximate (the server has none)",
                "served_models": ", ".join(server.served),
                # How images reach the model, or why they cannot (webui.core.media's VISION_FACT).
                "vision": _vision_fact(settings.endpoint, server.vision),
            },
        )

    # -- tokens -------------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        route = self._server.route
        if route is None:
            return approximate_tokenize(text)
        body: dict[str, Any] = {"model": self._server.model, route.text_field: text}
        if route.add_special_field:
            body[route.add_special_field] = add_bos
        data = self._post(f"{self._root}{route.tokenize_path}", body)
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise LoaderError(f"The server at {self._describe.url} sent no tokens for /tokenize.")
        # llama.cpp may answer pieces with ids ({"id": ..}) when asked; plain ids otherwise.
        return [int(t["id"]) if isinstance(t, Mapping) else int(t) for t in tokens]

    def detokenize(self, tokens: list[int]) -> str:
        route = self._server.route
        if route is None:
            return approximate_detokenize(tokens)
        data = self._post(
            f"{self._root}{route.detokenize_path}", {"model": self._server.model, "tokens": tokens}
        )
        for key in ("prompt", "content", "text"):  # vLLM, llama.cpp, llama-cpp-python
            if isinstance(data.get(key), str):
                return str(data[key])
        raise LoaderError(f"The server at {self._describe.url} sent no text for /detokenize.")

    def _post(self, url: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        data = fetch_json(self._http, url, self._describe, self._server.model, body)
        return data if isinstance(data, Mapping) else {}

    def unload(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._http.close()

    # -- generation ---------------------------------------------------------------------------------------

    def _open(self) -> openai.OpenAI:
        if self._client is None:
            raise LoaderError("The remote model was unloaded.")
        return self._client

    def stream(self, prompt: str, params: GenerationParams, cancel: CancelToken) -> Iterator[Chunk]:
        """Raw completion of ``prompt`` (Palabre rendered any template) through /completions."""
        client = self._open()
        if not prompt:
            raise LoaderError("The prompt is empty.")
        prompt_tokens = 0
        max_tokens = params.max_new_tokens
        if self._server.route is not None:
            # With the server's own tokenizer the budget is exact: never ask past the context.
            prompt_tokens = len(self.tokenize(prompt, add_bos=params.add_bos_token))
            room = self.facts.context_length - prompt_tokens
            if room <= 0:
                raise LoaderError(
                    f"The prompt is {prompt_tokens} tokens long, but the context holds only "
                    f"{self.facts.context_length}. Shorten it (or set context_length if the server has more)."
                )
            max_tokens = min(max_tokens, room)
        standard, extra = request_fields(params, send_extras=self._settings.send_extras)

        request = {**self._common(standard, extra), "prompt": prompt, "max_tokens": max_tokens}

        def start() -> Any:
            return client.completions.create(**request)

        yield from self._relay(start, cancel, lambda: prompt_tokens or len(self.tokenize(prompt)))

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: CancelToken,
        *,
        tools: ToolRequest | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> Iterator[Chunk]:
        """The reply to ``messages`` through /chat/completions (the server applies its chat template).

        ``tools`` go as OpenAI's tools, tool_choice and parallel_tool_calls; ``template_kwargs`` (the
        thinking controls and a request's own) as ``chat_template_kwargs`` (llama.cpp, vLLM, SGLang) when
        extras are sent, and a reasoning effort as ``reasoning_effort``. The server's reasoning and tool
        calls stream back in their own parts."""
        client = self._open()
        if not messages:
            raise LoaderError("There is no message to reply to.")
        send_extras = self._settings.send_extras
        wire = wire_messages(messages, send_extras=send_extras)
        standard, extra = request_fields(params, send_extras=send_extras)
        standard.update(tool_fields(tools))
        if params.reasoning_effort:
            standard["reasoning_effort"] = params.reasoning_effort
        if template_kwargs and send_extras:
            extra["chat_template_kwargs"] = dict(template_kwargs)
        if messages[-1].role == "assistant" and not messages[-1].tool_calls:
            # Continue that reply instead of starting a new one (vLLM's names; llama.cpp does it by itself).
            extra.update(continue_final_message=True, add_generation_prompt=False)

        request = {**self._common(standard, extra), "messages": wire, "max_tokens": params.max_new_tokens}

        def start() -> Any:
            return client.chat.completions.create(**request)

        text = "".join(m.content for m in messages)
        yield from self._relay(start, cancel, lambda: len(self.tokenize(text)))

    def _common(self, standard: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """The request arguments both endpoints share."""
        return {
            **standard,
            "model": self._server.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": dict(extra) or None,
        }

    def _relay(
        self, start: Callable[[], Any], cancel: CancelToken, count_prompt: Callable[[], int]
    ) -> Iterator[Chunk]:
        """Stream the server's events as Chunks; cancelling (or closing this generator) closes the stream."""
        import httpx
        import openai

        model = self._server.model
        try:
            stream = start()
        except openai.OpenAIError as exc:
            raise self._describe.openai_error(exc, model) from exc
        counted = 0
        finish: FinishReason = "length"
        usage: Any = None
        calls = _CallRelay()
        try:
            for event in stream:
                if cancel.cancelled:
                    finish = "cancelled"
                    break
                if getattr(event, "usage", None) is not None:
                    usage = event.usage
                for choice in event.choices or ():
                    delta = getattr(choice, "delta", None)
                    text = (delta.content if delta is not None else getattr(choice, "text", None)) or ""
                    reasoning = _reasoning_of(delta)
                    pieces = calls.relay(getattr(delta, "tool_calls", None) or ())
                    if text or reasoning or pieces:
                        counted += 1  # servers send one event per token (or per few): usage corrects it
                        yield Chunk(text, tokens=1, reasoning=reasoning, tool_calls=pieces)
                    if choice.finish_reason:
                        finish = _finish_reason(choice.finish_reason)
        except openai.OpenAIError as exc:
            raise self._describe.openai_error(exc, model) from exc
        except httpx.HTTPError as exc:
            raise self._describe.connection(exc) from exc
        finally:
            stream.close()  # tells the server to stop generating (it sees the connection close)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion = getattr(usage, "completion_tokens", 0) or 0
        if not prompt_tokens and finish != "cancelled":
            prompt_tokens = count_prompt()
        yield Chunk(
            tokens=max(0, completion - counted), finish_reason=finish, prompt=PromptUsage(prompt_tokens)
        )


def _finish_reason(reason: str) -> FinishReason:
    if reason == "length":
        return "length"
    return "tool_calls" if reason in ("tool_calls", "function_call") else "stop"


def _reasoning_of(delta: Any) -> str:
    """A delta's reasoning, under the name the server gives it (llama.cpp: reasoning_content; vLLM, Ollama
    and LM Studio: reasoning)."""
    if delta is None:
        return ""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


class _CallRelay:
    """A server's streamed tool-call deltas as the core's: each call's id and name once (the server's id,
    or one made up if it sends none), then its arguments in pieces. Servers that repeat the name or id on
    every delta, or send a call whole (Ollama), come out the same."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def relay(self, deltas: Sequence[Any]) -> tuple[ToolCallDelta, ...]:
        pieces: list[ToolCallDelta] = []
        for position, delta in enumerate(deltas):
            index = getattr(delta, "index", None)
            index = position if index is None else int(index)
            function = getattr(delta, "function", None)
            name = (getattr(function, "name", None) or "") if function is not None else ""
            arguments = getattr(function, "arguments", None) if function is not None else None
            if isinstance(arguments, Mapping):
                arguments = json.dumps(arguments, ensure_ascii=False)
            if index not in self._seen:
                self._seen.add(index)
                call_id = getattr(delta, "id", None) or f"call_{uuid.uuid4().hex[:24]}"
                pieces.append(ToolCallDelta(index, id=str(call_id), name=name))
            if arguments:
                pieces.append(ToolCallDelta(index, arguments=str(arguments)))
        return tuple(pieces)
