"""Instruction templates: the template store, rendering, and detection for a loaded model.

Every template (bundled, the user's, one from model metadata, one pasted or sent in a request) is untrusted
input and renders only in the sandbox of :mod:`webui.core.templates.sandbox`, with a time limit
(:data:`MAX_RENDER_SECONDS`), an output-size limit and a memory budget; whatever goes wrong becomes a
TemplateError that names the template, and a failed render gives its memory back at once.
"""

from __future__ import annotations

import ctypes
import gc
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, MappingProxyType
from typing import Any, Literal

import jinja2
import yaml

from webui.core.paths import atomic_write_text, files_by_stem, path_in
from webui.core.safe_load import load_yaml
from webui.core.templates.sandbox import (
    MAX_RENDER_SECONDS,
    LimitExceeded,
    RaisedByTemplate,
    Sandbox,
)

MAX_SOURCE_CHARS = 1024 * 1024
MAX_ERROR_CHARS = 2000  # an error message quotes values (a KeyError its key): never a megabyte of them
TEMPLATE_SUFFIXES = (".yaml", ".yml", ".jinja")  # earlier wins when one folder holds several
FALLBACK_TEMPLATE = "Alpaca"
METADATA_CUSTOM_NAME = "Custom (obtained from model metadata)"
Origin = Literal["bundled", "user", "model metadata", "custom"]
Reason = Literal["user choice", "model metadata", "file name", "fallback"]


class TemplateError(ValueError):
    """A template that cannot be read, parsed or rendered; the message names the template."""


class TemplateNotFoundError(TemplateError, KeyError):
    """No template of that name in the store."""

    def __str__(self) -> str:
        # KeyError would quote the message; show it as written.
        return str(self.args[0]) if self.args else ""


class TemplateOutputTooLargeError(TemplateError):
    """Rendering would produce more than template_sandbox.MAX_OUTPUT_CHARS characters."""


# ---------------------------------------------------------------------------------------------------------
# The sandbox


def _compile(name: str, source: str) -> CodeType:
    """Parse ``source``; a syntax error becomes a TemplateError naming the template and the line."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f'Template "{name}" is longer than {MAX_SOURCE_CHARS:,} characters.')
    env = Sandbox()
    try:
        return env.compile(source, name=name)
    except jinja2.TemplateSyntaxError as exc:
        message = f'Template "{name}" has a syntax error on line {exc.lineno}: {exc.message}'
        raise TemplateError(message) from exc
    except (jinja2.TemplateError, RecursionError, MemoryError, SyntaxError, ValueError) as exc:
        # SyntaxError/ValueError: Python's own compiler refusing what Jinja generated (too deeply nested).
        raise TemplateError(f'Template "{name}" could not be parsed: {exc}') from exc
    finally:
        env.release()  # what Jinja computed while compiling (it folds expressions on constants)


def _render_code(code: CodeType, variables: dict[str, Any]) -> str:
    """Run compiled template code in a sandbox of its own: its own deadline and memory budget."""
    env = Sandbox(deadline=time.monotonic() + MAX_RENDER_SECONDS)
    try:
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        pieces: list[str] = []
        total = checked = 0
        wide = False
        for piece in template.generate(variables):
            total += len(piece)
            if total > checked:  # the output cap, and room for the joined text, every 64k characters
                env.check_size(total)
                checked = total + 65536
            wide = wide or not piece.isascii()
            pieces.append(piece)
        env.check_size(total)
        if wide:
            env.reserve(4 * total)  # the joined text may take four bytes a character
        return "".join(pieces)
    finally:
        env.release()


def _failure(name: str, exc: Exception) -> TemplateError:
    """The TemplateError, naming the template, that a render's exception becomes."""
    detail = str(exc)
    if len(detail) > MAX_ERROR_CHARS:
        detail = detail[:MAX_ERROR_CHARS] + "..."
    if isinstance(exc, RaisedByTemplate):
        return TemplateError(f'Template "{name}" refused the conversation: {detail}')
    if isinstance(exc, LimitExceeded):
        kind = TemplateOutputTooLargeError if exc.too_large else TemplateError
        return kind(f'Template "{name}" was stopped: {detail}.')
    if isinstance(exc, MemoryError):
        return TemplateOutputTooLargeError(f'Template "{name}" ran out of memory.')
    if isinstance(exc, RecursionError):
        return TemplateError(f'Template "{name}" nests or recurses too deeply.')
    if isinstance(exc, jinja2.sandbox.SecurityError):
        return TemplateError(f'Template "{name}" tried an unsafe operation: {detail}')
    # Anything the template's own logic raises (type errors, undefined names, ...).
    return TemplateError(f'Template "{name}" failed to render: {detail}')


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def _give_memory_back() -> None:
    """After a failed render: free what still sits in reference cycles (the sandbox, macros and the error's
    traceback make some) and hand freed pages back to the system, so the process shrinks now, not later."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)  # glibc keeps freed heap memory otherwise, most of all in the threads' arenas


# ---------------------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class InstructionTemplate:
    """A named Jinja chat template; building one parses it, so an instance always compiles."""

    name: str
    source: str
    origin: Origin = "custom"
    _code: CodeType = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_code", _compile(self.name, self.source))

    def render(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        add_generation_prompt: bool = True,
        bos_token: str = "",
        eos_token: str = "",
        **extra: object,
    ) -> str:
        """Render ``messages`` (dicts with role and content) the way HF ``apply_chat_template`` does."""
        # ``tools`` stays undefined unless given: templates test ``tools is defined`` and then iterate it.
        variables: dict[str, Any] = {**extra}
        variables.update(
            messages=[dict(message) for message in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
        try:
            return _render_code(self._code, variables)
        except Exception as exc:
            failure = _failure(self.name, exc)
            # The traceback holds the render's frames and, through their variables, its values (up to the
            # memory budget): clear them now rather than whenever the garbage collector gets to them.
            traceback.clear_frames(exc.__traceback__)
        # Raised out here, after the except clause, so that the error does not keep ``exc`` (and its frames)
        # as its context.
        _give_memory_back()
        raise failure


def _read_template_file(path: Path, origin: Origin) -> InstructionTemplate:
    """Load ``<name>.yaml`` (key ``instruction_template``) or ``<name>.jinja``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"Cannot read the template file {path}: {exc}") from exc
    if path.suffix != ".jinja":
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"The template file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("instruction_template"), str):
            raise TemplateError(f"The template file {path} has no 'instruction_template' text.")
        text = data["instruction_template"]
    return InstructionTemplate(path.stem, text, origin)


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as ``|`` blocks so saved templates stay readable and diffable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_LiteralDumper.add_representer(str, _represent_str)


class TemplateStore:
    """Bundled templates plus the user's own; a user file overrides a bundled one of the same name."""

    def __init__(self, bundled_dir: Path, user_dir: Path) -> None:
        self.bundled_dir = Path(bundled_dir)
        self.user_dir = Path(user_dir)

    def _files(self) -> dict[str, tuple[Path, Origin]]:
        found: dict[str, tuple[Path, Origin]] = {}
        folders: tuple[tuple[Path, Origin], ...] = ((self.bundled_dir, "bundled"), (self.user_dir, "user"))
        for folder, origin in folders:  # user files come second and override
            if not folder.is_dir():
                continue
            for stem, path in files_by_stem(folder, TEMPLATE_SUFFIXES).items():
                found[stem] = (path, origin)
        return found

    def names(self) -> list[str]:
        """All template names, sorted case-insensitively."""
        return sorted(self._files(), key=lambda name: (name.casefold(), name))

    def get(self, name: str) -> InstructionTemplate:
        """The template called ``name``; TemplateNotFoundError lists the known names otherwise."""
        files = self._files()
        if name not in files:
            known = ", ".join(sorted(files, key=str.casefold)) or "none"
            raise TemplateNotFoundError(f'No instruction template named "{name}". Known templates: {known}.')
        # Read on every call (a millisecond or two), so edits on disk show up without any cache to go stale.
        return _read_template_file(*files[name])

    def save(self, name: str, source: str) -> None:
        """Write ``source`` to ``<user_dir>/<name>.yaml`` atomically, after checking that it parses."""
        target = path_in(self.user_dir, name, ".yaml", what="template name")
        InstructionTemplate(name, source, "user")  # raises TemplateError before anything is written
        text = yaml.dump(
            {"instruction_template": source}, Dumper=_LiteralDumper, allow_unicode=True, sort_keys=False
        )
        if yaml.safe_load(text) != {"instruction_template": source}:  # never write what will not read back
            raise TemplateError(f'Template "{name}" cannot be stored as YAML without changing it.')
        atomic_write_text(target, text)
        for suffix in TEMPLATE_SUFFIXES[1:]:  # a stale .yml/.jinja of that name would be shadowed anyway
            path_in(self.user_dir, name, suffix).unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        """Delete the user's template ``name``; bundled templates cannot be deleted."""
        paths = [path_in(self.user_dir, name, suffix, what="template name") for suffix in TEMPLATE_SUFFIXES]
        existing = [path for path in paths if path.is_file()]
        if not existing:
            files = self._files()
            if name in files:
                raise TemplateError(f'"{name}" is a bundled template and cannot be deleted.')
            raise TemplateNotFoundError(f'No user template named "{name}".')
        for path in existing:
            path.unlink()


# ---------------------------------------------------------------------------------------------------------
# Detection

# Probe conversation for recognising a metadata template. It has a system message so that templates that
# inject a default one when it is missing (SmolLM2's ChatML) still match the plain bundled version; formats
# whose templates refuse a system role (Gemma 2, early Mistral) are probed again without it.
_PROBE = (
    ("system", "You are a helpful assistant."),
    ("user", "Hello! Who are you?"),
    ("assistant", "I am an assistant. How can I help?"),
    ("user", "What is the capital of France?"),
)
_PROBE_TOKENS = MappingProxyType({"bos_token": "<s>", "eos_token": "</s>"})

# Model file/folder names -> template. Checked in order on the lower-cased name with "_" turned into "-".
# Families whose releases come in base and instruct flavours need an instruct marker, so base models fall
# through to the fallback; names that say "base" or "pt" never match.
_BASE_MARKER = re.compile(r"(^|[-.])(base|pt|pretrain|pretrained)([-.]|$)")
_NAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"hermes|dolphin|chatml", "ChatML"),  # fine-tunes that switch their base family to ChatML
        (r"tinyllama.*chat", "Zephyr"),
        (r"code-?llama.*instruct|llama-?2.*chat", "Llama-2-chat"),
        (r"llama-?4.*instruct", "Llama-4"),
        (r"llama-?3.*(instruct|chat)", "Llama-3"),
        (r"(mistral|mixtral|ministral).*instruct", "Mistral"),
        (r"gemma.*(-it([-.]|$)|instruct|chat)", "Gemma"),
        (r"phi-?3", "Phi-3"),
        (r"vicuna", "Vicuna-v1.1"),
        (r"zephyr", "Zephyr"),
        (r"command-?r|c4ai-command", "Command-R"),
        (r"deepseek-coder-(?!v2)[\w.-]*instruct", "Alpaca"),  # the first coder models use ### Instruction
        (r"deepseek.*(chat|instruct|v2\.5|v3|r1)", "DeepSeek"),
        (r"granite.*(instruct|chat)", "Granite"),
        (r"qwen.*(instruct|chat)|qwq|qwen-?3|smollm.*instruct|smollm-?3", "ChatML"),
        (r"alpaca", "Alpaca"),
    )
)


def template_name_from_file_name(model_name: str) -> str | None:
    """The bundled template name suggested by a model's file or folder name, or None."""
    stem = model_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"[_\s]+", "-", stem.lower())
    if _BASE_MARKER.search(stem):
        return None
    return next((name for pattern, name in _NAME_RULES if pattern.search(stem)), None)


# Words of what a plain conversation does not show: a template that mentions one its look-alike lacks does more.
_ABILITY_WORDS = (
    "tools",
    "tool_calls",
    "enable_thinking",
    "thinking",
    "reasoning",
    "<think>",
    "[THINK]",
    "<|channel",
)


def _does_more(source: str, known: str) -> bool:
    """Whether ``source`` handles tools or thinking that ``known`` (a look-alike on the probe) does not."""
    return any(word in source and word not in known for word in _ABILITY_WORDS)


def template_from_metadata(source: str, store: TemplateStore) -> InstructionTemplate:
    """Name a chat template read from model metadata: after a store template that renders the probe
    conversation identically (whose text is used unless the model's handles more: tools, thinking), else
    "Custom (obtained from model metadata)".

    Raises TemplateError when the metadata template does not parse or cannot render the probe.
    """
    candidate = InstructionTemplate(METADATA_CUSTOM_NAME, source, "model metadata")
    with_system = [{"role": role, "content": content} for role, content in _PROBE]
    try:
        probe = with_system
        wanted = candidate.render(probe, add_generation_prompt=True, **_PROBE_TOKENS)
    except TemplateError:
        probe = with_system[1:]
        wanted = candidate.render(probe, add_generation_prompt=True, **_PROBE_TOKENS)
    for name in store.names():
        try:
            known = store.get(name)
            if known.render(probe, add_generation_prompt=True, **_PROBE_TOKENS) == wanted:
                # The probe does not show tools, tool calls or thinking: a model whose template handles them
                # keeps its own text (under the bundled name), the others get the bundled text.
                text = source if _does_more(source, known.source) else known.source
                return InstructionTemplate(name, text, "model metadata")
        except TemplateError:
            continue  # a broken user template just does not match
    return candidate


@dataclass(frozen=True)
class TemplateDetection:
    """Which template a model gets and why; ``note`` explains a metadata template that could not be used."""

    template: InstructionTemplate
    reason: Reason
    note: str = ""

    def message(self) -> str:
        """The sentence shown on the page after a model load."""
        text = _DETECTION_MESSAGES.get(self.reason, _DETECTION_MESSAGES["found"]).format(
            name=self.template.name
        )
        return f"{self.note} {text}" if self.note else text


_DETECTION_MESSAGES = MappingProxyType(
    {
        "user choice": 'Using the instruction template "{name}" that you chose.',
        "fallback": 'No instruction template was found in the model\'s metadata or in its file name, so "{name}" is '
        "used as a fallback. This may be a base model: chat mode, or the Default and Notebook tabs, may suit it better.",
        "found": 'It seems to be an instruction-following model with template "{name}". '
        "In the Chat tab, instruct or chat-instruct modes should be used.",
    }
)


def detect_template(
    store: TemplateStore,
    *,
    model_name: str,
    explicit: str | None = None,
    metadata_template: str | None = None,
) -> TemplateDetection:
    """Pick the template for a model: the user's choice, then the model's metadata, then its file name,
    then FALLBACK_TEMPLATE. An explicit name that the store lacks raises TemplateNotFoundError."""
    if explicit:
        return TemplateDetection(store.get(explicit), "user choice")
    note = ""
    if metadata_template and metadata_template.strip():
        try:
            return TemplateDetection(template_from_metadata(metadata_template, store), "model metadata")
        except TemplateError as exc:
            note = f"The chat template in the model's metadata could not be used ({exc})."
    by_name = template_name_from_file_name(model_name)
    if by_name is not None and by_name in store.names():
        return TemplateDetection(store.get(by_name), "file name", note)
    return TemplateDetection(store.get(FALLBACK_TEMPLATE), "fallback", note)
