"""The Jinja sandbox every instruction template renders in (see webui.core.templates).

A template can come from a GGUF file or from anything a user pastes, so it is untrusted input. It is rendered
in Jinja's ``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of lists/dicts),
with extra guards so that a hostile template cannot exhaust memory or spin forever: every operation that can
amplify data (``*``, ``+``, ``~``, ``%``, ``**``, amplifying filters and ``str`` methods) is checked before it
allocates, everything the template prints is capped at :data:`MAX_OUTPUT_CHARS`, and loops, calls and
attribute lookups check a per-render deadline. Any private or dunder attribute is refused outright.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from functools import wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.filters import do_format, do_indent, do_replace, do_wordwrap, sync_do_join
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_environment, pass_eval_context
from jinja2.visitor import NodeTransformer

MAX_OUTPUT_CHARS = 8 * 1024 * 1024  # about 2M tokens: above any real context window, far below harm
MAX_RENDER_SECONDS = 5.0
_MAX_INT_BITS = 1 << 20  # big-int arithmetic past this is an attack, not a chat template


class RaisedByTemplate(Exception):
    """Raised by the template's own ``raise_exception``."""


class LimitExceeded(Exception):
    def __init__(self, message: str, *, too_large: bool) -> None:
        super().__init__(message)
        self.too_large = too_large


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
    """Route ``for`` iterables and ``~`` through checks on the environment (see Sandbox)."""

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


class Sandbox(ImmutableSandboxedEnvironment):
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
            raise LimitExceeded(f"it ran past the time limit of {MAX_RENDER_SECONDS:g} s", too_large=False)

    def check_size(self, estimate: int) -> None:
        """Raise if a value of ``estimate`` characters would pass the output cap."""
        if estimate > MAX_OUTPUT_CHARS:
            raise LimitExceeded(f"it builds more than {MAX_OUTPUT_CHARS:,} characters", too_large=True)

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

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Refuse an unsafe attribute at once; Jinja's default Undefined would print "" and hide the attempt."""
        raise jinja2.sandbox.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Sandboxed ``obj.attribute`` that also checks the deadline."""
        self.tick()
        value = super().getattr(obj, attribute)
        if isinstance(value, jinja2.Undefined) and str(attribute).startswith("_"):
            # A private name that only failed to resolve (e.g. on a namespace) is still an attempt: say so.
            self.unsafe_undefined(obj, str(attribute))
        return value

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
            raise LimitExceeded("it computes an integer with more than a million bits", too_large=True)

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
    raise RaisedByTemplate(str(message))


def _strftime_now(fmt: str) -> str:
    if len(fmt) > 200 or re.search(r"\d{3}", fmt):
        raise ValueError("strftime_now: format too long or with a huge field width")
    return datetime.now().strftime(fmt)
