"""What a Hub repository's model can do, read before downloading it: the chat template from the first bytes of
a GGUF file (an HTTP Range request, at most ``HEADER_LIMIT`` bytes) or from a Transformers repository's small
tokenizer files, and vision from a projector (mmproj) or a ``vision_config`` in config.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from webui.core.hub.download import DownloadError, RepoListing, _endpoint, _token, hub_error
from webui.core.models.capabilities import (
    ModelCapabilities,
    capabilities_from_templates,
    config_sees,
    header_capabilities,
    header_sees,
    is_projector_name,
)
from webui.core.models.gguf_header import GGUFHeaderError, parse_gguf_prefix
from webui.core.safe_load import load_json

HEADER_LIMIT = 32 * 2**20  # a GGUF's metadata (vocabulary and merges included) is a few MB; 32 MB is generous
SMALL_FILE_LIMIT = 4 * 2**20  # tokenizer_config.json, chat_template.jinja, config.json
_TRIES = (256 * 2**10, 2 * 2**20, 8 * 2**20, HEADER_LIMIT)  # parse again once this much has arrived


@dataclass(frozen=True)
class RemoteCapabilities:
    """Capabilities of a repository's model and the file they were read from."""

    capabilities: ModelCapabilities
    source: str  # the file whose template was read


def _fetch(
    listing: RepoListing, path: str, limit: int, token: str | None, *, gguf: bool
) -> bytes | dict[str, object]:
    """The first ``limit`` bytes of ``path`` (for a GGUF: its parsed header as soon as it is complete)."""
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

    ref = listing.ref
    url = hf_hub_url(ref.repo_id, path, revision=ref.revision, endpoint=_endpoint())
    headers = build_hf_headers(token=_token(token), library_name="palabre")
    headers["Range"] = f"bytes=0-{limit - 1}"
    data = bytearray()
    tries = [t for t in _TRIES if t < limit] + [limit]
    try:
        with http_stream_backoff(
            "GET",
            url,
            headers=headers,
            follow_redirects=True,
            timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
            retry_on_exceptions=(),
            retry_on_status_codes=(429, 500, 502, 503, 504),
        ) as response:
            hf_raise_for_status(response)
            for chunk in response.iter_bytes():
                data.extend(chunk[: limit - len(data)])
                if gguf and len(data) >= tries[0]:
                    tries = tries[1:] or [limit + 1]
                    header = parse_gguf_prefix(bytes(data), path)
                    if header is not None:
                        return header
                if len(data) >= limit:
                    break
    except DownloadError:
        raise
    except Exception as exc:  # huggingface_hub and the network raise many types; each becomes one sentence
        raise hub_error(exc, ref, path) from exc
    if gguf:
        header = parse_gguf_prefix(bytes(data), path)
        if header is None:
            raise DownloadError(f"{path}: its GGUF header is longer than {limit // 2**20} MB; not read.")
        return header
    return bytes(data)


def _gguf_capabilities(listing: RepoListing, token: str | None) -> RemoteCapabilities | None:
    models = [c for c in listing.choices if not any(is_projector_name(f) for f in c.files)]
    if not models:
        return None
    first = min(models, key=lambda c: c.size).files[0]  # every quantization carries the same template
    header = _fetch(listing, first, HEADER_LIMIT, token, gguf=True)
    assert isinstance(header, dict)
    caps = header_capabilities(header)
    projectors = [f.path for f in listing.files if is_projector_name(f.path)]
    sees = False
    for projector in projectors:
        try:
            found = _fetch(listing, projector, SMALL_FILE_LIMIT, token, gguf=True)
        except (DownloadError, GGUFHeaderError):
            continue
        if isinstance(found, dict) and header_sees(found):
            sees = True
            break
    return RemoteCapabilities(caps.with_vision(sees, projector if sees else None), first)


def _json(raw: bytes | dict[str, object]) -> dict[str, object]:
    try:
        data = load_json(raw) if isinstance(raw, bytes) else raw
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _transformers_capabilities(listing: RepoListing, token: str | None) -> RemoteCapabilities | None:
    def small(path: str) -> bytes | None:
        if listing.file(path) is None:
            return None
        raw = _fetch(listing, path, SMALL_FILE_LIMIT, token, gguf=False)
        return raw if isinstance(raw, bytes) else None

    template = tool_template = None
    source = ""
    jinja = small("chat_template.jinja")
    if jinja:
        template, source = jinja.decode("utf-8", errors="replace"), "chat_template.jinja"
    tokenizer = small("tokenizer_config.json")
    found = _json(tokenizer).get("chat_template") if tokenizer else None
    if isinstance(found, str) and template is None:
        template, source = found, "tokenizer_config.json"
    elif isinstance(found, list):
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        default, tool = named.get("default"), named.get("tool_use")
        if isinstance(default, str) and template is None:
            template, source = default, "tokenizer_config.json"
        tool_template = tool if isinstance(tool, str) else None
    config = small("config.json")
    sees = config_sees(_json(config)) if config else False
    if template is None and not sees:
        return None
    caps = capabilities_from_templates(template, tool_template, vision=sees)
    return RemoteCapabilities(caps, source or "config.json")


def repo_capabilities(listing: RepoListing, token: str | None = None) -> RemoteCapabilities | None:
    """What the listed repository's model can do (None when it carries no template to read).

    DownloadError when the Hub cannot be reached or the file is not a readable GGUF.
    """
    try:
        if listing.kind == "gguf":
            return _gguf_capabilities(listing, token)
        if listing.kind == "transformers":
            return _transformers_capabilities(listing, token)
    except GGUFHeaderError as exc:
        raise DownloadError(str(exc)) from exc
    return None
