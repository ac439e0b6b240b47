"""The Jinja sandbox every instruction template renders in (see webui.core.templates.store).

A template can come from a GGUF file or from anything a user pastes, so it is untrusted input. It is rendered
in Jinja's ``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of lists/dicts),
with extra guards so that a hostile template cannot exhaust memory or spin forever: every operation that can
amplify data (``*``, ``+``, ``~``, ``%``, ``**``, amplifying filters and ``str`` methods) is checked before it
allocates, everything the template prints is capped at :data:`MAX_OUTPUT_CHARS`, and loops, calls and
attribute lookups check a per-render deadline. Any private or dunder attribute is refused outright.

Each render also has a memory budget, :data:`MAX_RENDER_BYTES`: the bytes of every value the render creates and
still holds (strings, numbers, lists, dicts, namespaces, printed pieces) are counted, so that many values each
under the per-value cap cannot add up to gigabytes. A value counts when an operation returns it (calls, filters,
operators, ``~``, slices, list/dict/tuple literals, captured blocks, printed output); it is new when nothing but
its creator refers to it (its reference count says so), which leaves out data that already existed (the
conversation, values counted before). Counted values that are no longer referenced anywhere else are given back
to the budget, so a template that builds and drops values in a loop is charged only for what it keeps.
Operations that would allocate a lot at once inside C (``*``, ``join``, ``split``, ``|list`` ...) are checked
against the budget before they run.
"""

from __future__ import annotations

import json
import re
import sys
import time
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from datetime import datetime
from functools import wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.filters import do_format, do_indent, do_replace, do_wordwrap, sync_do_join
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context, pass_environment, pass_eval_context
from jinja2.visitor import NodeTransformer

from webui.core.templates import budget
from webui.core.templates.budget import MAX_RENDER_BYTES

MAX_OUTPUT_CHARS = 8 * 1024 * 1024  # about 2M tokens: above any real context window, far below harm
MAX_RENDER_SECONDS = 5.0
# What the values one render creates may hold at once: dozens of times the text of a long chat (500 kB), far
# below what hurts a server; a render that needs more is refused.
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
    """Route ``for`` iterables and ``~`` through checks on the environment, and make what Jinja's generated code
    builds by itself visible to the memory budget: list/tuple/dict literals, slices (copies), ``*args`` and
    ``**kwargs`` unpacking, and the pieces each output statement adds to a list or to the output (see Sandbox)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("checked_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return _env_call("checked_concat", [parts], node.lineno)

    def visit_Output(self, node: nodes.Output) -> list[nodes.Node]:
        self.generic_visit(node)
        slots = nodes.Const(budget.GROWING_SLOT * len(node.nodes), lineno=node.lineno)
        return [nodes.ExprStmt(_internal_filter(slots, "~spend"), lineno=node.lineno), node]

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _internal_filter(node, "~new")

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _internal_filter(node, "~new")

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _internal_filter(node, "~new") if node.ctx == "load" else node  # not a loop's or set's target

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        # Jinja's code slices directly (environment.getitem never sees it), and a slice is a copy.
        return _internal_filter(node, "~new") if isinstance(node.arg, nodes.Slice) else node

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        self.generic_visit(node)
        return _check_unpacking(node)

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        self.generic_visit(node)
        return _check_unpacking(node)

    def visit_Test(self, node: nodes.Test) -> nodes.Node:
        self.generic_visit(node)
        return _check_unpacking(node)


def _env_call(method: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(method, lineno=lineno), args, [], None, None, lineno=lineno)


def _internal_filter(node: nodes.Expr, name: str) -> nodes.Filter:
    """``node|name`` for one of the Sandbox's internal filters (names that template syntax cannot write)."""
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def _check_unpacking(node: nodes.Call | nodes.Filter | nodes.Test) -> nodes.Node:
    # f(*x) and f(**x) copy x into a new tuple or dict before the call.
    if node.dyn_args is not None:
        node.dyn_args = _internal_filter(node.dyn_args, "~star")
    if node.dyn_kwargs is not None:
        node.dyn_kwargs = _internal_filter(node.dyn_kwargs, "~star")
    return node


def _pass_marker(decorator: Callable[[Callable[..., Any]], Callable[..., Any]]) -> object:
    """The marker a Jinja ``pass_*`` decorator sets, to tell what a filter wants as its first argument."""
    return decorator(lambda: None).jinja_pass_arg  # type: ignore[attr-defined]


_PASS_CONTEXT = _pass_marker(pass_context)
_PASS_EVAL_CONTEXT = _pass_marker(pass_eval_context)
_PASS_ENVIRONMENT = _pass_marker(pass_environment)


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
        # The memory budget of this render (one Sandbox renders once): bytes counted, and the counted objects
        # (oldest first) with the bytes each was counted for, so that a sweep can give back what was dropped.
        self._used = 0
        self._since_sweep = 0
        self._held: list[Any] = []
        self._sizes = array("q")
        self.globals.pop("lipsum", None)  # lipsum(n) allocates n paragraphs: no template needs it
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        # Filters that can grow their input without bound get versions that estimate the size first.
        amplifiers = ("tojson", "replace", "indent", "format", "join", "wordwrap")
        overrides: dict[str, Callable[..., Any]] = {name: getattr(self, f"_{name}") for name in amplifiers}
        for name, original in list(self.filters.items()):
            self.filters[name] = self._guarded_filter(name, overrides.get(name, original))
        # Used by the code _GuardLoopsAndConcat inserts; "~" keeps templates from naming them.
        self.filters.update({"~new": self._new_value, "~spend": self._spend_slots, "~star": self._unpacked})

    # -- limits
    def tick(self) -> None:
        """Raise once the render has run past its deadline."""
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"it ran past the time limit of {MAX_RENDER_SECONDS:g} s", too_large=False)

    def check_size(self, estimate: int) -> None:
        """Raise if a value of ``estimate`` characters would pass the output cap or the memory budget."""
        self._check_cap(estimate)
        self.reserve(estimate)  # a character takes at least a byte

    def _check_cap(self, estimate: int) -> None:
        if estimate > MAX_OUTPUT_CHARS:
            raise LimitExceeded(f"it builds more than {MAX_OUTPUT_CHARS:,} characters", too_large=True)

    # -- memory budget
    def reserve(self, nbytes: int) -> None:
        """Raise unless ``nbytes`` more fit the render's memory budget (checked before a big allocation)."""
        if self._used + nbytes > MAX_RENDER_BYTES:
            self._sweep()
            if self._used + nbytes > MAX_RENDER_BYTES:
                raise self._over_budget()

    def spend(self, nbytes: int) -> None:
        """Count ``nbytes`` that are never given back (list slots, pieces of output: they are not tracked)."""
        self._used += nbytes
        if self._used > MAX_RENDER_BYTES:
            self._sweep()
            if self._used > MAX_RENDER_BYTES:
                raise self._over_budget()

    def _charged(self, value: Any, extra_holders: int = 0) -> Any:
        """Count what ``value`` newly holds (see budget.new_objects) and return it.

        Pass the value as a temporary: the parameter must be its only reference, other than ``extra_holders``
        that the caller knows of.
        """
        if sys.getrefcount(value) > budget.ARGUMENT_ONLY + extra_holders:
            return value  # held elsewhere too: it existed before (the render's input, or counted already)
        if isinstance(value, budget.CONTAINERS):
            found = budget.new_objects([value])
            found.reverse()  # children before parents, so that a sweep (newest first) meets a parent first
            # Sizes through map, not a list: a list of a million sizes would leave a million int objects
            # scattered among the render's own values when it is freed (memory the allocator cannot return).
            self._held.extend(found)
            self._sizes.extend(map(sys.getsizeof, found))
            total = sum(map(sys.getsizeof, found)) + budget.HELD_OVERHEAD * len(found)
        else:
            size = sys.getsizeof(value)
            self._held.append(value)
            self._sizes.append(size)
            total = size + budget.HELD_OVERHEAD
        self._used += total
        self._since_sweep += total
        if self._used > MAX_RENDER_BYTES or self._since_sweep > budget.SWEEP_EVERY:
            self._sweep()
            if self._used > MAX_RENDER_BYTES:
                raise self._over_budget()
        return value

    def _sweep(self) -> None:
        """Give back the bytes of counted objects that nothing else refers to any more, and let them go."""
        held, sizes = self._held, self._sizes
        freed = 0
        first = len(held)
        # Newest first: a dropped container goes before the items that only it held, so they go too.
        for index in range(len(held) - 1, -1, -1):
            if budget.refs_at(held, index) <= budget.ONE_HOLDER:
                freed += sizes[index] + budget.HELD_OVERHEAD
                held[index] = budget.GONE
                first = index
        # Close the gaps in place (copies of two long sequences would be garbage of their own).
        keep = first
        for index in range(first, len(held)):
            if held[index] is not budget.GONE:
                held[keep] = held[index]
                sizes[keep] = sizes[index]
                keep += 1
        del held[keep:]
        del sizes[keep:]
        self._used -= freed
        self._since_sweep = 0

    def _over_budget(self) -> LimitExceeded:
        limit = f"{MAX_RENDER_BYTES // (1024 * 1024)} MiB"
        return LimitExceeded(
            f"its values take more than {limit} of memory (the limit for one render)", too_large=False
        )

    def release(self) -> None:
        """Drop the references the budget keeps. Call it once the render is over: a Sandbox sits in reference
        cycles (its filters refer to it), so without this its values would wait for the garbage collector."""
        self._held = []
        self._sizes = array("q")
        self._used = self._since_sweep = 0

    def _counted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """``iterable``'s items, counting a list slot for each as it comes (what collecting them costs), so that
        a generator is stopped before C code has turned all of it into a list."""
        for index, item in enumerate(iterable):
            if index % 256 == 0:
                self.tick()
            self.spend(budget.GROWING_SLOT)
            yield item

    @pass_context  # never run while compiling: Jinja folds filters on constants then (this one, too)
    def _new_value(self, context: jinja2.runtime.Context, value: Any) -> Any:
        """``~new``: a value Jinja's generated code built (a literal, a slice), counted."""
        return self._charged(value, extra_holders=1)  # our parameter holds it too

    @pass_context
    def _spend_slots(self, context: jinja2.runtime.Context, nbytes: int) -> str:
        """``~spend``: the references an output statement adds to the output or to a captured block."""
        self.spend(nbytes)
        return ""

    @pass_context
    def _unpacked(self, context: jinja2.runtime.Context, value: Any) -> Any:
        """``~star``: what ``f(*value)`` or ``f(**value)`` unpacks, checked before Python copies it."""
        if isinstance(value, Sized):
            self.reserve(budget.copy_bytes(value))
            return value
        return self._counted(value) if isinstance(value, Iterable) else value

    def _check_value(self, value: Any) -> Any:
        self._check_cap(_size_hint(value, MAX_OUTPUT_CHARS))  # the value exists: _charged counts its memory
        return value

    def _check_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        # An integer argument is a width, a count or a repeat factor in every amplifying callable.
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool):
                self._check_cap(abs(arg))

    # -- hooks the compiled template calls
    def checked_iter(self, iterable: Any) -> Iterator[Any]:
        """A ``for`` loop's iterable (inserted by _GuardLoopsAndConcat), checking the deadline as it goes."""
        for index, item in enumerate(iterable):
            if index % 256 == 0:
                self.tick()
            yield item

    def checked_concat(self, parts: list[Any]) -> str:
        """The ``~`` operator, checked before it allocates (call() counts the result)."""
        self.tick()
        self.check_size(sum(_size_hint(part, MAX_OUTPUT_CHARS) for part in parts))
        return "".join(str(part) for part in parts)

    def concat(self, parts: Iterable[str]) -> str:
        """Join captured output (macros, ``{% set %}`` blocks, filter blocks), checked before it allocates."""
        items = parts if isinstance(parts, list) else list(self._counted(parts))
        self.check_size(sum(len(item) for item in items))
        return self._charged("".join(items))

    def _checked_output(self, value: Any) -> Any:
        """Jinja's ``finalize``: what a ``{{ }}`` prints. A value that is not text is turned into text here (Jinja
        would call str() on it just after), so that the new string is checked and counted."""
        if isinstance(value, str):
            return value
        self.check_size(_size_hint(value, MAX_OUTPUT_CHARS))
        return self._charged(str(value))

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
            if not isinstance(left, str):
                self.reserve(64 + budget.SLOT * (len(left) + len(right)))  # a new list: a slot for each item
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, sized) and isinstance(times, int):
                    self.check_size(len(seq) * max(times, 0))
                    if not isinstance(seq, str):
                        self.reserve(64 + budget.SLOT * len(seq) * max(times, 0))
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(left.bit_length() + right.bit_length())
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            self._check_bits(max(left.bit_length(), 1) * right)
        elif operator == "%" and isinstance(left, str):
            self.check_size(_format_estimate(left, right))
        return self._charged(self._check_value(super().call_binop(context, operator, left, right)))

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
            if method == "join" and len(args) == 1 and not kwargs and not isinstance(args[0], Collection):
                # Materialise once, counted, so that the estimate does not consume a generator.
                args = (list(__self._counted(args[0])),)
            __self.check_size(_str_method_estimate(owner, method, args, kwargs))
            __self.reserve(budget.str_method_bytes(owner, method, args, kwargs))
        return __self._charged(__self._check_value(super().call(__context, __obj, *args, **kwargs)))

    # -- filters
    def _guarded_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        # What the filter takes first (a context, an eval context, the environment, or nothing).
        wants = getattr(func, "jinja_pass_arg", None)
        checks_input = name in budget.INPUT_CHECKED

        # pass_context, whatever the filter wants: Jinja never runs such a filter while compiling (it would fold
        # a filter on constants into the code then, outside any render and its budget).
        @pass_context
        @wraps(func)
        def guarded(context: jinja2.runtime.Context, *args: Any, **kwargs: Any) -> Any:
            self.tick()
            self._check_args(args, kwargs)
            if checks_input and args:
                args = (self._checked_input(name, args[0]), *args[1:])
            if wants is _PASS_CONTEXT:
                args = (context, *args)
            elif wants is _PASS_EVAL_CONTEXT:
                args = (context.eval_ctx, *args)
            elif wants is _PASS_ENVIRONMENT:
                args = (self, *args)
            return self._charged(self._check_value(func(*args, **kwargs)))

        return guarded

    def _checked_input(self, name: str, value: Any) -> Any:
        """A filter's input, checked against the budget when the filter turns it into a list in one C call; a
        generator comes back wrapped, so that it is counted as the filter collects it."""
        if name in budget.MATERIALISING:
            if isinstance(value, Sized):
                self.reserve(budget.copy_bytes(value, budget.SLOT + budget.MATERIALISING[name]))
            elif isinstance(value, Iterator):
                return self._counted(value)
        elif isinstance(value, str) and name in budget.SPLITTING:
            self.reserve(budget.pieces_bytes(value, len(value) + 1))  # word splits keep the separators too
        elif name in budget.ESCAPING:
            self.reserve(budget.ESCAPING[name] * _size_hint(value, MAX_OUTPUT_CHARS))
        elif name in budget.STRINGIFYING:
            self.reserve(2 * _size_hint(value, MAX_OUTPUT_CHARS))
        return value

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
