"""Ollama Modelfiles: parse and write them, map PARAMETERs onto GenerationParams, convert Go TEMPLATEs to Jinja.

Parsing follows Ollama's own parser: instructions are case-insensitive (``FROM``, ``PARAMETER``, ``TEMPLATE``,
``SYSTEM``, ``MESSAGE``, ``LICENSE``, ``ADAPTER``, and the newer ``DRAFT``, ``RENDERER``, ``PARSER``,
``REQUIRES``); ``#`` starts a comment only where an instruction could start; a value runs to the end of its
line unless it is quoted with ``"..."`` or ``\"\"\"...\"\"\"``, which may span lines and are taken verbatim
(there are no escapes).

A Go ``TEMPLATE`` is converted to Jinja by ``go_template.convert_go_template``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

INSTRUCTIONS = tuple(
    [
        "from",
        "parameter",
        "template",
        "system",
        "message",
        "license",
        "adapter",
        "draft",
        "renderer",
        "parser",
        "requires",
    ]
)
MESSAGE_ROLES = ("system", "user", "assistant")

# Ollama PARAMETER -> GenerationParams field.
OLLAMA_TO_PARAM: dict[str, str] = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repetition_penalty",
    "repeat_last_n": "repetition_penalty_range",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat_mode",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "seed": "seed",
    "num_predict": "max_new_tokens",
    "stop": "stop",
}
PARAM_TO_OLLAMA = {palabre: ollama for ollama, palabre in OLLAMA_TO_PARAM.items()}
# Ollama PARAMETER -> llama.cpp loader setting (the character's ``loader_settings``), with its type.
OLLAMA_TO_LOADER: dict[str, tuple[str, type]] = {
    "num_ctx": ("n_ctx", int),
    "num_batch": ("n_batch", int),
    "num_gpu": ("n_gpu_layers", int),
    "num_thread": ("n_threads", int),
    "use_mmap": ("use_mmap", bool),
    "use_mlock": ("use_mlock", bool),
}
LOADER_TO_OLLAMA = {setting: ollama for ollama, (setting, _) in OLLAMA_TO_LOADER.items()}
# Parameters Ollama knows (some deprecated) that Palabre has no setting for: kept as written, reported.
OLLAMA_UNMAPPED = frozenset(
    [
        "num_keep",
        "tfs_z",
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "main_gpu",
        "numa",
        "num_gqa",
        "rope_frequency_base",
        "rope_frequency_scale",
        "embedding_only",
    ]
)


class ModelfileError(ValueError):
    """A Modelfile that cannot be read or written; the message names the line."""


@dataclass
class Modelfile:
    """The instructions of a Modelfile, in the order they appeared (per kind)."""

    model: str | None = None
    parameters: list[tuple[str, str, int]] = field(default_factory=list)  # (name, value, line)
    system: str | None = None
    template: str | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)  # (role, content)
    licenses: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # DRAFT / RENDERER / PARSER / REQUIRES
    comments: list[str] = field(default_factory=list)  # written at the top by format_modelfile


def looks_like_modelfile(text: str) -> bool:
    """True when the first instruction line of ``text`` starts with a Modelfile instruction."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word = stripped.split(None, 1)[0].lower()
            return word in INSTRUCTIONS
    return False


# ---------------------------------------------------------------------------------------------------------
# Parsing and writing


def _complete(value: str) -> str | None:
    """Ollama's ``unquote``: the value if ``value`` is a finished (possibly quoted) value, else None."""
    if value.startswith('"""'):
        return value[3:-3] if len(value) >= 6 and value.endswith('"""') else None
    if value.startswith('"'):
        return value[1:-1] if len(value) >= 2 and value.endswith('"') else None
    return value


def _instructions(text: str) -> Iterator[tuple[str, str, str, int]]:
    """(instruction, name/role word, value, line) for each instruction; a quoted value may span lines."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    index = 0
    while index < len(lines):
        start = index
        line = lines[index].lstrip(" \t")
        index += 1
        if not line.strip() or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z]+)(?:[ \t]+(.*))?$", line, re.S)
        word = match.group(1).lower() if match else ""
        if not match or word not in INSTRUCTIONS:
            raise ModelfileError(
                f"Modelfile line {start + 1}: unknown instruction {line.split(None, 1)[0]!r}; expected one "
                f"of {', '.join(name.upper() for name in INSTRUCTIONS)}."
            )
        head, value = "", match.group(2) or ""
        if word in ("parameter", "message"):
            parts = re.match(r"(\S*)[ \t]*(.*)$", value, re.S)
            head, value = (parts.group(1), parts.group(2)) if parts else ("", "")
        # A value that opens a quote goes on over the next lines until the quote closes (Ollama's rule).
        while _complete(value.strip()) is None:
            if index >= len(lines):
                raise ModelfileError(
                    f"Modelfile line {start + 1}: the quoted {word.upper()} value never closes."
                )
            value += "\n" + lines[index]
            index += 1
        yield word, head, value, start + 1


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile ``text``; ModelfileError names the line of the first problem."""
    result = Modelfile()
    for word, head, raw, line in _instructions(text):
        value = _complete(raw.strip()) or ""
        if word == "parameter":
            name = head.lower()
            if not re.fullmatch(r"[a-z0-9_]+", name) or not raw.strip():
                raise ModelfileError(f"Modelfile line {line}: expected 'PARAMETER <name> <value>'.")
            result.parameters.append((name, value, line))
        elif word == "message":
            if head not in MESSAGE_ROLES:
                raise ModelfileError(
                    f"Modelfile line {line}: MESSAGE role must be one of system, user or assistant, "
                    f"not {head!r}."
                )
            result.messages.append((head, value))
        elif word == "from":
            if not value:
                raise ModelfileError(f"Modelfile line {line}: FROM needs a model name or path.")
            result.model = value
        elif word == "system":
            result.system = value
        elif word == "template":
            result.template = value
        elif word == "license":
            result.licenses.append(value)
        elif word == "adapter":
            result.adapters.append(value)
        else:
            result.other.append((word, value))
    if result.model is None:
        raise ModelfileError("The Modelfile has no FROM line (Ollama requires one).")
    return result


def quote_value(value: str, *, triple: bool = False) -> str:
    """``value`` written so that Ollama's parser reads it back unchanged."""
    if '"""' in value:
        raise ModelfileError('A value containing three double quotes (""") cannot be written to a Modelfile.')
    plain = value and value == value.strip() and "\n" not in value and not value.startswith('"')
    if plain and not triple:
        return value
    return f'"""{value}"""'


def format_modelfile(modelfile: Modelfile) -> str:
    """The Modelfile text: comments, FROM, ADAPTER, PARAMETERs, TEMPLATE, SYSTEM, MESSAGEs, LICENSEs."""
    out = [f"# {line}" if line else "#" for comment in modelfile.comments for line in comment.split("\n")]
    out.append(f"FROM {quote_value(modelfile.model or '')}")
    out.extend(f"ADAPTER {quote_value(adapter)}" for adapter in modelfile.adapters)
    out.extend(f"{word.upper()} {quote_value(value)}" for word, value in modelfile.other)
    out.extend(f"PARAMETER {name} {quote_value(value)}" for name, value, _ in modelfile.parameters)
    if modelfile.template is not None:
        out.append(f"TEMPLATE {quote_value(modelfile.template, triple=True)}")
    if modelfile.system is not None:
        out.append(f"SYSTEM {quote_value(modelfile.system, triple=True)}")
    out.extend(f"MESSAGE {role} {quote_value(content, triple=True)}" for role, content in modelfile.messages)
    out.extend(f"LICENSE {quote_value(text, triple=True)}" for text in modelfile.licenses)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# PARAMETER values


def _parse_bool(text: str) -> bool:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _parse_number(text: str, kind: type) -> Any:
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{text!r} is not {what}") from None


@dataclass
class MappedParameters:
    """PARAMETER lines sorted into sampler settings, loader settings and the ones Palabre keeps unused."""

    sampler: dict[str, Any] = field(default_factory=dict)
    loader: dict[str, Any] = field(default_factory=dict)
    unmapped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def map_parameters(
    modelfile: Modelfile, field_types: dict[str, type], check: Callable[[str, Any], None]
) -> MappedParameters:
    """Sort the PARAMETER lines; ``field_types`` gives the Python type of each GenerationParams field and
    ``check(field, value)`` raises ValueError for a value out of its bounds.

    Raises ModelfileError naming the line for an unknown parameter or a bad value.
    """
    mapped = MappedParameters()
    for name, value, line in modelfile.parameters:
        where = f"Modelfile line {line} (PARAMETER {name} {value})"
        try:
            if name in OLLAMA_TO_PARAM:
                target = OLLAMA_TO_PARAM[name]
                if target == "stop":
                    mapped.sampler.setdefault("stop", []).append(value)
                elif name == "num_predict" and _parse_number(value, int) <= 0:
                    mapped.unmapped.append((name, value))
                    mapped.notes.append(
                        f"PARAMETER num_predict {value} (no limit) has no Palabre equivalent; kept for export."
                    )
                else:
                    mapped.sampler[target] = _parse_number(value, field_types[target])
                    check(target, mapped.sampler[target])
            elif name in OLLAMA_TO_LOADER:
                setting, kind = OLLAMA_TO_LOADER[name]
                mapped.loader[setting] = _parse_bool(value) if kind is bool else _parse_number(value, kind)
            elif name in OLLAMA_UNMAPPED:
                mapped.unmapped.append((name, value))
                mapped.notes.append(f"PARAMETER {name} is not used by Palabre; kept for export.")
            else:
                raise ModelfileError(f"{where}: unknown parameter {name!r}.")
        except ValueError as exc:
            if isinstance(exc, ModelfileError):
                raise
            raise ModelfileError(f"{where}: {exc}.") from None
    return mapped


def _format_number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def parameter_lines(
    sampler: dict[str, Any], loader: dict[str, Any], unmapped: list[tuple[str, str]]
) -> tuple[list[tuple[str, str, int]], list[str]]:
    """PARAMETER lines for an export, and comment lines for the settings Ollama has no PARAMETER for."""
    lines: list[tuple[str, str, int]] = []
    comments: list[str] = []
    for key, value in sampler.items():
        if key == "stop":
            lines.extend(("stop", stop, 0) for stop in value)
        elif key in PARAM_TO_OLLAMA:
            lines.append((PARAM_TO_OLLAMA[key], _format_number(value), 0))
        else:
            comments.append(f"Palabre sampler setting with no Ollama PARAMETER: {key} = {json.dumps(value)}")
    for key, value in loader.items():
        if key in LOADER_TO_OLLAMA:
            lines.append((LOADER_TO_OLLAMA[key], _format_number(value), 0))
        else:
            comments.append(f"Palabre loader setting with no Ollama PARAMETER: {key} = {json.dumps(value)}")
    lines.extend((name, value, 0) for name, value in unmapped)
    return lines, comments


# ---------------------------------------------------------------------------------------------------------
# Modelfile <-> personality fields (plain dicts; characters.Character validates them)


@dataclass
class ModelfileImport:
    """Personality fields from a Modelfile (no name yet), its Go TEMPLATE, and what the user should know."""

    fields: dict[str, Any]
    template: str | None
    notes: list[str]


def import_fields(
    text: str, field_types: dict[str, type], check: Callable[[str, Any], None]
) -> ModelfileImport:
    """Parse ``text`` and map it onto personality fields; ModelfileError names the line of a problem."""
    parsed = parse_modelfile(text)
    mapped = map_parameters(parsed, field_types, check)
    notes = list(mapped.notes)
    if parsed.adapters:
        notes.append("ADAPTER (a LoRA adapter) is not supported by Palabre; it is kept for export.")
    notes.extend(f"{word.upper()} is not used by Palabre; it is kept for export." for word, _ in parsed.other)
    fields = {
        "context": parsed.system or "",
        "parameters": mapped.sampler,
        "model": parsed.model,
        "loader_settings": mapped.loader,
        "example_messages": [{"role": role, "content": content} for role, content in parsed.messages],
        "modelfile": {
            "template": parsed.template,
            "parameters": mapped.unmapped,
            "license": parsed.licenses,
            "adapter": parsed.adapters,
            "other": parsed.other,
        },
    }
    return ModelfileImport(fields, parsed.template, notes)


def export_text(
    *,
    name: str,
    model: str | None,
    sampler: dict[str, Any],
    loader: dict[str, Any],
    extras: dict[str, Any],
    system: str,
    messages: list[dict[str, str]],
    greeting: str,
    instruction_template: str | None,
    placeholder_model: str,
) -> str:
    """The Modelfile for a personality; ``extras`` is its ``modelfile`` field (Go TEMPLATE, LICENSE, ...)."""
    comments = [f'Modelfile exported by Palabre from the personality "{name}".']
    if not model:
        comments.append("This personality names no model: put yours on the FROM line.")
    lines, unmapped = parameter_lines(sampler, loader, [tuple(p) for p in extras.get("parameters", [])])
    comments.extend(unmapped)
    template = extras.get("template")
    if instruction_template and template is None:
        comments.append(
            f'Palabre instruction template "{instruction_template}" has no Go form: no TEMPLATE is written, '
            "so Ollama uses the model's own template."
        )
    if greeting:
        comments.append("Greeting (Ollama has no greeting):\n" + greeting)
    return format_modelfile(
        Modelfile(
            model=model or placeholder_model,
            parameters=lines,
            system=system or None,
            template=template,
            messages=[(m["role"], m["content"]) for m in messages],
            licenses=list(extras.get("license", [])),
            adapters=list(extras.get("adapter", [])),
            other=[(word, value) for word, value in extras.get("other", [])],
            comments=comments,
        )
    )
