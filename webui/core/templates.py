"""Instruction templates: sandboxed Jinja rendering, the template store, and detection for a loaded model.

A template can come from a GGUF file or from anything a user pastes, so it is untrusted input. It is rendered
in Jinja's ``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of lists/dicts),
with extra guards so that a hostile template cannot exhaust memory or spin forever: every operation that can
amplify data (``*``, ``+``, ``~``, ``%``, ``**``, amplifying filters and ``str`` methods) is checked before it
allocates, everything the template prints is capped at :data:`MAX_OUTPUT_CHARS`, and loops, calls and
attribute lookups check a per-render deadline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import wraps
from pathlib import Path
from types import CodeType, MappingProxyType
from typing import Any, Literal

import jinja2
import yaml
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.filters import do_format, do_indent, do_replace, do_wordwrap, sync_do_join
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_environment, pass_eval_context
from jinja2.visitor import NodeTransformer

from webui.core.paths import atomic_write_text, files_by_stem, path_in

MAX_OUTPUT_CHARS = 8 * 1024 * 1024  # about 2M tokens: above any real context window, far below harm
MAX_SOURCE_CHARS = 1024 * 1024
MAX_RENDER_SECONDS = 5.0
_MAX_INT_BITS = 1 << 20  # big-int arithmetic past this is an attack, not a chat template
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
    """Rendering would produce more than MAX_OUTPUT_CHARS characters."""


class _RaisedByTemplate(Exception):
    """Raised by the template's own ``raise_exception``."""


class _LimitExceeded(Exception):
    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


# ---------------------------------------------------------------------------------------------------------
# The sandbox


def _size_hint(value: Any, limit: int) -> int:
    """Roughly how many characters ``str(value)`` would take; stops counting once past ``limit``."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool | float | None):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Namespace):
            total += 16
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, Collection) and not isinstance(item, range):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 16  # other objects print a short repr
        if total > limit:
            break
    return total


def _format_estimate(fmt: str, args: Any) -> int:
    """Upper bound for ``fmt % args`` or ``fmt.format(...)``: every number in it may be a field width."""
    if re.search(r"%[-#0 +]*\*|%[-#0 +\d]*\.\*", fmt):
        return MAX_OUTPUT_CHARS + 1  # widths taken from the arguments: refuse rather than guess
    widths = sum(int(digits) for digits in re.findall(r"\d{1,12}", fmt))
    fields = fmt.count("%") + fmt.count("{") + 1
    return len(fmt) + widths + fields * _size_hint(args, MAX_OUTPUT_CHARS)


class _GenerationTag(Extension):
    """Accept HF's ``{% generation %}`` marker (used for training masks) and render its body as is."""

    tags = {"generation"}  # noqa: RUF012 - Jinja's own Extension declares it this way

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _GuardLoopsAndConcat(NodeTransformer):
    """Route ``for`` iterables and ``~`` through checks on the environment (see _Sandbox)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("checked_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return _env_call("checked_concat", [parts], node.lineno)


def _env_call(method: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method, lineno=lineno), args, [], None, None, lineno=lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus HF chat-template globals and guards against memory and time abuse."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, deadline: float = float("inf")) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols", _GenerationTag],
            finalize=self._checked_output,
        )
        self.deadline = deadline
        self.globals.pop("lipsum", None)  # lipsum(n) allocates n paragraphs: no template needs it
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        # Filters that can grow their input without bound get versions that estimate the size first.
        amplifiers = ("tojson", "replace", "indent", "format", "join", "wordwrap")
        overrides: dict[str, Callable[..., Any]] = {name: getattr(self, f"_{name}") for name in amplifiers}
        for name, original in list(self.filters.items()):
            self.filters[name] = self._guarded_filter(overrides.get(name, original))

    # -- limits
    def tick(self) -> None:
        """Raise once the render has run past its deadline."""
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"it ran past the time limit of {MAX_RENDER_SECONDS:g} s", too_large=False)

    def check_size(self, estimate: int) -> None:
        """Raise if a value of ``estimate`` characters would pass the output cap."""
        if estimate > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"it builds more than {MAX_OUTPUT_CHARS:,} characters", too_large=True)

    def _check_value(self, value: Any) -> Any:
        self.check_size(_size_hint(value, MAX_OUTPUT_CHARS))
        return value

    def _check_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        # An integer argument is a width, a count or a repeat factor in every amplifying callable.
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool):
                self.check_size(abs(arg))

    # -- hooks the compiled template calls
    def checked_iter(self, iterable: Any) -> Iterator[Any]:
        """A ``for`` loop's iterable (inserted by _GuardLoopsAndConcat), checking the deadline as it goes."""
        for index, item in enumerate(iterable):
            if index % 256 == 0:
                self.tick()
            yield item

    def checked_concat(self, parts: list[Any]) -> str:
        """The ``~`` operator, checked before it allocates."""
        self.tick()
        self.check_size(sum(_size_hint(part, MAX_OUTPUT_CHARS) for part in parts))
        return "".join(str(part) for part in parts)

    def concat(self, parts: Any) -> str:
        """Join captured output (macros, ``{% set %}`` blocks, filter blocks), checked before it allocates."""
        items = list(parts)
        self.check_size(sum(len(item) for item in items))
        return "".join(items)

    def _checked_output(self, value: Any) -> Any:
        if not isinstance(value, str):
            self._check_value(value)
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Sandboxed ``obj.attribute`` that also checks the deadline."""
        self.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Sandboxed ``obj[argument]`` that also checks the deadline."""
        self.tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        """``+ * ** %`` with a size estimate before Python allocates the result."""
        self.tick()
        sized = (str, list, tuple)
        if operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            self.check_size(len(left) + len(right))
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, sized) and isinstance(times, int):
                    self.check_size(len(seq) * max(times, 0))
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(left.bit_length() + right.bit_length())
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            self._check_bits(max(left.bit_length(), 1) * right)
        elif operator == "%" and isinstance(left, str):
            self.check_size(_format_estimate(left, right))
        return self._check_value(super().call_binop(context, operator, left, right))

    def _check_bits(self, bits: int) -> None:
        if bits > _MAX_INT_BITS:
            raise _LimitExceeded("it computes an integer with more than a million bits", too_large=True)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Sandboxed call with size estimates for the ``str`` methods that can amplify."""
        __self.tick()
        __self._check_args(args, kwargs)
        target = getattr(__obj, "__wrapped__", __obj)  # str.format arrives wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            method = getattr(target, "__name__", "")
            if method == "join" and len(args) == 1 and not kwargs:
                args = (list(args[0]),)  # materialise once so a generator is not consumed by the estimate
            __self.check_size(_str_method_estimate(owner, method, args, kwargs))
        return __self._check_value(super().call(__context, __obj, *args, **kwargs))

    # -- filters
    def _guarded_filter(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)  # keeps Jinja's pass_context / pass_eval_context markers
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.tick()
            self._check_args(args, kwargs)
            return self._check_value(func(*args, **kwargs))

        return guarded

    def _tojson(self, value: Any, indent: int | None = None, **options: Any) -> str:
        # HF's tojson: no HTML escaping (unlike Jinja's), non-ASCII kept; indent bounded as it multiplies.
        if not 0 <= (indent or 0) <= 16 or set(options) - {"ensure_ascii", "separators", "sort_keys"}:
            raise ValueError("tojson accepts indent (0-16), ensure_ascii, separators and sort_keys")
        self.check_size(_size_hint(value, MAX_OUTPUT_CHARS) * (2 + (indent or 0)))
        return json.dumps(value, indent=indent, **{"ensure_ascii": False, **options})

    @pass_eval_context
    def _replace(self, eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> str:
        self.check_size(_str_method_estimate(str(s), "replace", (str(old), str(new)), {}))
        return do_replace(eval_ctx, s, old, new, count)

    def _indent(self, s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text = str(s)
        self.check_size(
            len(text) + (text.count("\n") + 2) * len(width if isinstance(width, str) else " " * width)
        )
        return do_indent(s, width, first, blank)

    def _format(self, value: Any, *args: Any, **kwargs: Any) -> str:
        self.check_size(_format_estimate(str(value), (args, kwargs)))
        return do_format(value, *args, **kwargs)

    @pass_eval_context
    def _join(self, eval_ctx: Any, value: Any, d: str = "", attribute: str | int | None = None) -> str:
        items = list(value)
        self.check_size(sum(_size_hint(item, MAX_OUTPUT_CHARS) for item in items) + len(d) * len(items))
        return sync_do_join(eval_ctx, items, d, attribute)

    @pass_environment
    def _wordwrap(self, environment: Any, s: Any, width: int = 79, *args: Any, **kwargs: Any) -> str:
        wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
        text, wrap = str(s), environment.newline_sequence if wrapstring is None else str(wrapstring)
        self.check_size(len(text) + 2 * (len(text) // max(width, 1) + 1) * len(wrap))
        return do_wordwrap(environment, s, width, *args, **kwargs)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        guarded = _GuardLoopsAndConcat().visit(tree)
        guarded.set_environment(self)
        return guarded


def _str_method_estimate(s: str, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """Upper bound for the length of ``s.method(*args)`` for the ``str`` methods that can grow a string."""
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = s.count(args[0]) if args[0] else len(s) + 1
        return len(s) + hits * len(args[1])
    if method == "join" and args:
        items = args[0] if isinstance(args[0], Collection) else ()
        return sum(_size_hint(item, MAX_OUTPUT_CHARS) for item in items) + len(s) * len(items)
    if method == "expandtabs":
        tab = (args or [kwargs.get("tabsize", 8)])[0]
        return len(s) + s.count("\t") * (tab if isinstance(tab, int) else 8)
    if method == "translate":
        return len(s) * (1 + _size_hint(args, MAX_OUTPUT_CHARS))
    if method in {"format", "format_map"}:
        return _format_estimate(s, (args, kwargs))
    return len(s)  # the rest shrink or keep the size; widths were checked as integer arguments


def _raise_exception(message: str) -> None:
    raise _RaisedByTemplate(str(message))


def _strftime_now(fmt: str) -> str:
    if len(fmt) > 200 or re.search(r"\d{3}", fmt):
        raise ValueError("strftime_now: format too long or with a huge field width")
    return datetime.now().strftime(fmt)


def _compile(name: str, source: str) -> CodeType:
    """Parse ``source``; a syntax error becomes a TemplateError naming the template and the line."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f'Template "{name}" is longer than {MAX_SOURCE_CHARS:,} characters.')
    try:
        return _Sandbox().compile(source, name=name)
    except jinja2.TemplateSyntaxError as exc:
        message = f'Template "{name}" has a syntax error on line {exc.lineno}: {exc.message}'
        raise TemplateError(message) from exc
    except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
        raise TemplateError(f'Template "{name}" could not be parsed: {exc}') from exc


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
        env = _Sandbox(deadline=time.monotonic() + MAX_RENDER_SECONDS)
        variables: dict[str, Any] = {"tools": None, **extra}
        variables.update(
            messages=[dict(message) for message in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
        pieces: list[str] = []
        total = 0
        try:
            template = env.template_class.from_code(env, self._code, env.make_globals(None), None)
            for piece in template.generate(variables):
                total += len(piece)
                env.check_size(total)
                pieces.append(piece)
        except _RaisedByTemplate as exc:
            raise TemplateError(f'Template "{self.name}" refused the conversation: {exc}') from None
        except _LimitExceeded as exc:
            kind = TemplateOutputTooLargeError if exc.too_large else TemplateError
            raise kind(f'Template "{self.name}" was stopped: {exc}.') from None
        except MemoryError:
            raise TemplateOutputTooLargeError(f'Template "{self.name}" ran out of memory.') from None
        except RecursionError:
            raise TemplateError(f'Template "{self.name}" nests or recurses too deeply.') from None
        except jinja2.sandbox.SecurityError as exc:
            raise TemplateError(f'Template "{self.name}" tried an unsafe operation: {exc}') from None
        except Exception as exc:  # anything the template's own logic raises (type errors, undefined, ...)
            raise TemplateError(f'Template "{self.name}" failed to render: {exc}') from None
        return "".join(pieces)


def _read_template_file(path: Path, origin: Origin) -> InstructionTemplate:
    """Load ``<name>.yaml`` (key ``instruction_template``) or ``<name>.jinja``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"Cannot read the template file {path}: {exc}") from exc
    if path.suffix != ".jinja":
        try:
            data = yaml.safe_load(text)
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


def template_from_metadata(source: str, store: TemplateStore) -> InstructionTemplate:
    """Name a chat template read from model metadata: after a store template that renders the probe
    conversation identically (then that template is used), else "Custom (obtained from model metadata)".

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
                return InstructionTemplate(name, known.source, "model metadata")
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
