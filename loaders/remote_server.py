"""What an OpenAI-compatible server offers: its models, context length and tokenizer endpoints, found by
probing it, and its errors as readable sentences.

``httpx`` and ``openai`` are imported inside the functions. Error messages name the server by
``display_url`` (no user:password) and scrub the API key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from webui.core.loader import LoaderError

if TYPE_CHECKING:
    import httpx

    from loaders.remote import RemoteSettings

FALLBACK_CONTEXT = 4096  # when the server does not say (the OpenAI API has no field for it)
APPROX_BYTES_PER_TOKEN = 3  # without a server tokenizer: over-counts English (~4 chars/token), so prompts fit
_VERSION_SUFFIX = re.compile(r"/v\d+$")


# -- addresses ---------------------------------------------------------------------------------------------


def normalise_base_url(url: str) -> str:
    """``host:8000``, ``http://host:8000/`` or ``http://host:8000/v1`` -> ``http://host:8000/v1``."""
    text = url.strip().rstrip("/")
    if not text:
        raise ValueError("the server address is empty (e.g. http://127.0.0.1:8000/v1)")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) address (e.g. http://127.0.0.1:8000/v1)")
    path = parts.path.rstrip("/")
    if not _VERSION_SUFFIX.search(path):
        path += "/v1"  # servers put the OpenAI routes under /v1; a custom /vN prefix is kept as given
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def display_url(url: str) -> str:
    """The address without any user:password part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``: where the non-OpenAI routes (/props, /tokenize) live."""
    return _VERSION_SUFFIX.sub("", base_url)


# -- tokenizers --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerRoute:
    """One server dialect of tokenize/detokenize."""

    name: str
    tokenize_path: str
    detokenize_path: str
    text_field: str
    add_special_field: str | None


_VLLM = TokenizerRoute("vLLM", "/tokenize", "/detokenize", "prompt", "add_special_tokens")
_LLAMA_CPP = TokenizerRoute("llama.cpp", "/tokenize", "/detokenize", "content", "add_special")
_LLAMA_CPP_PYTHON = TokenizerRoute(
    "llama-cpp-python", "/extras/tokenize", "/extras/detokenize", "input", None
)


def approximate_tokenize(text: str) -> list[int]:
    """Stand-in ids when the server has no tokenizer: each id packs up to 3 UTF-8 bytes (reversible)."""
    data = text.encode("utf-8")
    chunks = (data[i : i + APPROX_BYTES_PER_TOKEN] for i in range(0, len(data), APPROX_BYTES_PER_TOKEN))
    return [(len(chunk) << 24) | int.from_bytes(chunk, "big") for chunk in chunks]


def approximate_detokenize(tokens: Sequence[int]) -> str:
    """The text ``approximate_tokenize`` packed into ``tokens``."""
    data = b"".join((t & 0xFFFFFF).to_bytes(3, "big")[3 - ((t >> 24) & 3) :] for t in tokens)
    return data.decode("utf-8", errors="replace")


# -- errors ------------------------------------------------------------------------------------------------


class Describer:
    """Turns client errors into LoaderErrors that name the server (never the key)."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = display_url(url)
        self._secret = secret
        self._timeout = timeout

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def status(self, code: int, detail: str, model: str) -> LoaderError:
        detail = self.scrub(detail.strip())[:300]
        if code == 401:
            return LoaderError(
                f"The server at {self.url} refused the API key (401). Set api_key or $OPENAI_API_KEY."
            )
        if code == 403:
            return LoaderError(f"The server at {self.url} refused access (403): {detail}")
        if code == 404:
            return LoaderError(
                f"The server at {self.url} answered 404 for model {model!r}: {detail or 'not found'}. "
                "Check the address (it should end in /v1) and the model name."
            )
        return LoaderError(f"The server at {self.url} answered {code}: {detail}")

    def connection(self, exc: BaseException, *, timed_out: bool = False) -> LoaderError:
        if timed_out:
            return LoaderError(f"The server at {self.url} did not answer within {self._timeout:g} s.")
        cause = self.scrub(str(exc.__cause__ or exc)) or type(exc).__name__
        return LoaderError(f"Cannot reach the server at {self.url} ({cause}). Is it running?")

    def openai_error(self, exc: Exception, model: str) -> LoaderError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return self.connection(exc, timed_out=True)
        if isinstance(exc, openai.APIConnectionError):
            return self.connection(exc)
        if isinstance(exc, openai.APIStatusError):
            return self.status(exc.status_code, error_detail(exc.body) or exc.message, model)
        return LoaderError(f"The server at {self.url} sent something unexpected: {self.scrub(str(exc))}")


def error_detail(body: object) -> str:
    """The readable part of an error body ({"error": {"message": ...}}, {"detail": ...}, or text)."""
    if isinstance(body, Mapping):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, Mapping):
                return error_detail(value)
            if value:
                return str(value)
    return str(body) if body else ""


# -- probing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    """What probing found: the chosen model, its context length and the server's tokenizer dialect."""

    model: str
    context_length: int
    route: TokenizerRoute | None
    chat_template: str | None
    bos_token: str
    eos_token: str
    served: tuple[str, ...]
    vision: bool | None = None  # whether the server takes images (llama.cpp's /props says); None: unknown


def probe(
    http: httpx.Client, settings: RemoteSettings, requested: str, describe: Describer, *, hint: str = ""
) -> ServerFacts:
    """Ask the server for its models, context length and tokenizer.

    ``requested`` must be served; ``hint`` (a name picked elsewhere, e.g. the page's model list) is used
    only when it is.
    """
    listing = fetch_json(http, f"{settings.base_url}/models", describe, requested)
    entries = listing.get("data") if isinstance(listing, Mapping) else None
    models = [e for e in entries or [] if isinstance(e, Mapping) and isinstance(e.get("id"), str)]
    served = tuple(str(e["id"]) for e in models)
    if not served:
        raise LoaderError(f"The server at {describe.url} lists no models (GET /models).")
    if requested and requested not in served:
        raise LoaderError(
            f"The server at {describe.url} has no model {requested!r}. It serves: {', '.join(served)}."
        )
    model = requested or (hint if hint in served else served[0])
    entry = next(e for e in models if e["id"] == model)
    root = server_root(settings.base_url)
    props = _get_optional(http, f"{root}/props")
    context = settings.context_length or _context_from(entry, props) or FALLBACK_CONTEXT
    template = props.get("chat_template") if isinstance(props.get("chat_template"), str) else None
    return ServerFacts(
        model=model,
        context_length=context,
        route=_find_tokenizer(http, root, model),
        chat_template=template or None,
        bos_token=str(props.get("bos_token") or ""),
        eos_token=str(props.get("eos_token") or ""),
        served=served,
        vision=_vision_from(props),
    )


def _vision_from(props: Mapping[str, Any]) -> bool | None:
    """llama.cpp's server: ``modalities: {vision: bool}`` in /props; None when the server does not say."""
    modalities = props.get("modalities")
    if isinstance(modalities, Mapping) and isinstance(modalities.get("vision"), bool):
        return bool(modalities["vision"])
    return None


def fetch_json(
    http: httpx.Client, url: str, describe: Describer, model: str, body: Mapping[str, Any] | None = None
) -> Any:
    """GET (or POST ``body`` to) ``url``; LoaderError naming the server when it fails."""
    import httpx

    try:
        response = http.get(url) if body is None else http.post(url, json=dict(body))
    except httpx.TimeoutException as exc:
        raise describe.connection(exc, timed_out=True) from exc
    except httpx.HTTPError as exc:
        raise describe.connection(exc) from exc
    if response.status_code != 200:
        raise describe.status(response.status_code, _body_detail(response), model)
    try:
        return response.json()
    except ValueError as exc:
        raise LoaderError(
            f"{describe.url} did not answer with JSON: is it an OpenAI-compatible server?"
        ) from exc


def _body_detail(response: httpx.Response) -> str:
    try:
        return error_detail(response.json())
    except ValueError:
        return response.text


def _get_optional(http: httpx.Client, url: str) -> Mapping[str, Any]:
    """A JSON object from an endpoint only some servers have ({} when absent)."""
    import httpx

    try:
        response = http.get(url)
        data = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return data if isinstance(data, Mapping) else {}


def _context_from(entry: Mapping[str, Any], props: Mapping[str, Any]) -> int:
    """vLLM/SGLang: max_model_len in /models; llama.cpp: n_ctx in /props."""
    settings = props.get("default_generation_settings")
    candidates = [
        entry.get("max_model_len"),
        props.get("n_ctx"),
        settings.get("n_ctx") if isinstance(settings, Mapping) else None,
    ]
    for value in candidates:
        if isinstance(value, int) and value > 0:
            return value
    return 0


def _find_tokenizer(http: httpx.Client, root: str, model: str) -> TokenizerRoute | None:
    """The server's tokenizer dialect, found by trying each (None when it has none)."""
    # vLLM/SGLang and llama.cpp share /tokenize: one probe carries both text fields, the answer tells them
    # apart (vLLM adds count and max_model_len).
    answer = _probe_tokenize(
        http, f"{root}/tokenize", {"model": model, "prompt": "Hello", "content": "Hello"}
    )
    if answer is not None:
        return _VLLM if "count" in answer or "max_model_len" in answer else _LLAMA_CPP
    if _probe_tokenize(http, f"{root}/extras/tokenize", {"model": model, "input": "Hello"}) is not None:
        return _LLAMA_CPP_PYTHON
    return None


def _probe_tokenize(http: httpx.Client, url: str, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    import httpx

    try:
        response = http.post(url, json=dict(body))
        data = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(data, Mapping) and isinstance(data.get("tokens"), list):
        return data
    return None
