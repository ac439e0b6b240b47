"""Hub references and file names: parse ``org/model`` or a Hub address, read quantization labels and split
GGUF parts from file names, and write byte sizes for the user.

Pure text work (no network, no huggingface_hub): ``webui.core.hub.download`` lists and fetches what these name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

_HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
# Quantization labels as llama.cpp, bartowski, unsloth and others write them in file names.
_QUANT = re.compile(
    r"(?:^|[-._])(?P<quant>I?Q[1-8](?:_(?:K|0|1|NL|XXS|XS|XL|S|M|L))*|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP?16|FP?32)"
    r"(?=$|[-._])",
    re.IGNORECASE,
)


class DownloadError(Exception):
    """A reference, listing or download problem; the message is meant for the user."""


@dataclass(frozen=True)
class RepoRef:
    """A model repository on the Hub, with an optional revision (branch, tag or commit) and file."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    @property
    def folder_name(self) -> str:
        """The folder it downloads into: ``org_model``."""
        return self.repo_id.replace("/", "_")

    @property
    def label(self) -> str:
        return self.repo_id + (f" ({self.revision})" if self.revision else "")


def format_size(size: int) -> str:
    """Bytes as the user reads them: 512 B, 3.2 kB, 4.7 MB, 1.2 GB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"


def _check_repo_id(repo_id: str, original: str) -> str:
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise DownloadError(
            f"{original!r} is not a Hugging Face model reference. Write it as org/model "
            "(e.g. bartowski/SmolLM2-135M-Instruct-GGUF) or paste its huggingface.co address."
        )
    return repo_id


def _hub_hosts() -> set[str]:
    hosts = set(_HUB_HOSTS)
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        hosts.add(urlsplit(endpoint).netloc.lower())
    return hosts


def parse_reference(text: str, revision: str | None = None) -> RepoRef:
    """``org/model`` or a Hub address (``/tree/BRANCH``, ``/blob/BRANCH/file``, ``/resolve/BRANCH/file``).

    ``revision``, when given, wins over the one in the address. DownloadError says what is wrong otherwise.
    """
    original = text
    text = (text or "").strip()
    if not text:
        raise DownloadError("Enter a model: org/model or a huggingface.co address.")
    revision = (revision or "").strip() or None
    bare_host = text.split("/", 1)[0].lower()
    if "://" not in text and bare_host in _hub_hosts():
        text = "https://" + text
    if "://" not in text:
        return RepoRef(_check_repo_id(text.rstrip("/"), original), revision)

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in _hub_hosts():
        raise DownloadError(
            f"{original!r} is not a Hugging Face Hub address (expected https://huggingface.co/…)."
        )
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments and segments[0] in ("datasets", "spaces", "buckets"):
        raise DownloadError(f"{original!r} is a {segments[0][:-1]}, not a model repository.")
    if segments and segments[0] == "models":  # huggingface.co/models?... is the search page
        raise DownloadError(f"{original!r} is the Hub's model search; open one model and paste its address.")
    if len(segments) < 2 or (len(segments) > 2 and segments[2] not in ("tree", "blob", "resolve")):
        if len(segments) == 1:
            return RepoRef(_check_repo_id(segments[0], original), revision)
        raise DownloadError(
            f"{original!r} is not a model address; expected https://huggingface.co/org/model[/tree/branch]."
        )
    repo_id = _check_repo_id(f"{segments[0]}/{segments[1]}", original)
    rest = segments[2:]
    if not rest:
        return RepoRef(repo_id, revision)
    if len(rest) < 2:
        raise DownloadError(f"{original!r} names no branch after /{rest[0]}/.")
    url_revision, tail = rest[1], rest[2:]
    if url_revision == "refs" and len(tail) >= 2:  # refs/pr/N and refs/convert/... contain slashes
        url_revision, tail = "/".join([url_revision, *tail[:2]]), tail[2:]
    filename = "/".join(tail) or None
    if rest[0] in ("blob", "resolve") and not filename:
        raise DownloadError(f"{original!r} names no file after the branch.")
    return RepoRef(repo_id, revision or url_revision, filename)


def gguf_quant(filename: str) -> str | None:
    """The quantization in a GGUF file name (``Q4_K_M``, ``IQ4_XS``, ``BF16``…), upper-case; None if none."""
    stem = PurePosixPath(filename).name
    split = _SPLIT.match(stem)
    stem = split["stem"] if split else re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = [m["quant"].upper() for m in _QUANT.finditer(stem)]
    if not found:
        return None
    label = found[-1]  # the last label wins: "Llama-3-8B-Q4_K_M" over an earlier "Q8" in a name
    return {"FP16": "F16", "FP32": "F32"}.get(label, label)


def split_part(filename: str) -> tuple[str, int, int] | None:
    """(stem, part, total) for a split GGUF part ``…-00001-of-00003.gguf``; None for anything else."""
    match = _SPLIT.match(filename)
    return (match["stem"], int(match["part"]), int(match["total"])) if match else None
