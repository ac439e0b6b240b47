"""Memory accounting for the template sandbox: what a value a render creates costs in bytes, and which objects
inside a new value are new (see the sandbox's docstring; the counting reads CPython's reference counts)."""

from __future__ import annotations

import sys
from collections.abc import ItemsView, Mapping, Sequence, Sized
from types import MappingProxyType
from typing import Any

from jinja2.utils import Namespace

MAX_RENDER_BYTES = 64 * 1024 * 1024  # the bytes one render may create and hold


SLOT = 8  # one reference in a list, tuple or dict
# A reference in a list that grows by appending (output pieces, a generator collected): the list is reallocated
# as it grows, and the allocator keeps the blocks it left behind for a while.
GROWING_SLOT = 2 * SLOT
HELD_OVERHEAD = 3 * SLOT  # the budget's own reference to a counted object, its size, and spare capacity
SWEEP_EVERY = MAX_RENDER_BYTES // 8  # new bytes between two sweeps: how much dropped data may wait for one
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on
GONE = object()  # marks a swept entry


def refs_at(items: list[Any], index: int) -> int:
    """The reference count of ``items[index]``, always read through this same call (see ONE_HOLDER)."""
    return sys.getrefcount(items[index])


# What refs_at reads for an object that nothing but ``items`` refers to (2 on CPython 3.11): measured, not
# assumed, because the temporary references it includes depend on the interpreter.
ONE_HOLDER = refs_at([object()], 0)
# ... and for an object with exactly one holder besides ``items``: its parent container.
NEW = ONE_HOLDER + 1


def refs_of(value: Any) -> int:
    """The reference count of an argument, the way Sandbox._charged reads it (see ARGUMENT_ONLY)."""
    return sys.getrefcount(value)


# What a function reads for an argument that nobody else refers to: a new object passed as a temporary.
ARGUMENT_ONLY = refs_of(object())


CONTAINERS = (list, tuple, dict, set, frozenset, Namespace)


def contents(obj: Any) -> list[Any]:
    """The objects a built-in container refers to (a namespace: its dict of attributes)."""
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, dict):
        return [*obj, *obj.values()]
    if isinstance(obj, Namespace):
        return [object.__getattribute__(obj, "_Namespace__attrs")]
    return []


def new_objects(box: list[Any]) -> list[Any]:
    """``box``'s one item, a new container, and inside it, every object that did not exist before, parents
    before children: an item is new when only its container holds it.

    Data that existed before (the conversation, values already counted) has other holders and is left out. An
    object held twice inside the new value is taken for an old one (no operation here builds such values).
    """
    found: list[Any] = []
    pending = [box]
    while pending:
        candidates = pending.pop()
        for index in range(len(candidates)):
            if candidates is box or refs_at(candidates, index) <= NEW:
                found.append(candidates[index])
                children = contents(candidates[index])
                if children:
                    pending.append(children)
    return found


def width(text: str) -> int:
    """Bytes per character that ``text`` may take (str.isascii is O(1); other strings count as the widest)."""
    return 1 if text.isascii() else 4


def copy_bytes(value: Sized, per_item: int = SLOT) -> int:
    """Bytes of a list or tuple made from ``value``'s items: its slots, and the objects that iterating creates
    (one-character strings outside ASCII, integers of a range, dict entries of a mapping)."""
    if isinstance(value, str) and not value.isascii():
        per_item += 80
    elif isinstance(value, range):
        per_item += 32
    elif isinstance(value, Mapping):
        per_item += 100
    elif isinstance(value, ItemsView):
        per_item += 64  # a new (key, value) tuple each
    return 64 + len(value) * per_item


def pieces_bytes(text: str, pieces: int) -> int:
    """Bytes of a list of ``pieces`` new strings that together hold ``text``'s characters."""
    return 64 + pieces * (SLOT + sys.getsizeof("")) + len(text) * width(text)


def whitespace_runs(text: str) -> int:
    """At most how many pieces ``text.split()`` returns."""
    if not text.isascii():
        return len(text) // 2 + 1  # other alphabets have their own spaces: every other character may be one
    return sum(text.count(space) for space in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f") + 1


def str_method_bytes(s: str, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """Bytes that ``s.method(...)`` allocates, for the methods that return lists of pieces or bytes."""
    if method in {"split", "rsplit"}:
        sep = args[0] if args else kwargs.get("sep")
        pieces = s.count(sep) + 1 if isinstance(sep, str) and sep else whitespace_runs(s)
        return pieces_bytes(s, pieces)
    if method == "splitlines":
        return pieces_bytes(s, sum(s.count(brk) for brk in LINE_BREAKS) + 1)
    if method in {"partition", "rpartition"}:
        return pieces_bytes(s, 3)
    if method == "encode":
        return 40 + 10 * len(s)  # 'unicode_escape' writes up to 10 bytes for one character
    return 0


# Filters that build a list (or a set) of their input's items in one C call, with what each item costs on top
# of its slot: a pair (dictsort, groupby), an entry in the set of those seen (unique).
MATERIALISING = MappingProxyType(
    {
        "list": 0,
        "sort": 0,
        "reverse": 0,
        "join": 0,
        "slice": 0,
        "sum": 0,
        "dictsort": 64,
        "groupby": 64,
        "unique": 48,
    }
)
# Filters that cut their text into a list of words or lines before joining it again.
SPLITTING = frozenset({"wordcount", "title", "striptags", "urlize", "indent", "wordwrap"})
ESCAPING = MappingProxyType({"e": 6, "escape": 6, "forceescape": 6, "xmlattr": 6, "urlencode": 12})  # growth
STRINGIFYING = frozenset({"string", "pprint"})
INPUT_CHECKED = MATERIALISING.keys() | SPLITTING | ESCAPING.keys() | STRINGIFYING
