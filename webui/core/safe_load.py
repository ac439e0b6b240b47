"""YAML and JSON from strangers: parsed with limits, so a small file cannot become a huge or endless structure.

``yaml.safe_load`` runs no code, but it does expand aliases: a "billion laughs" document of a few hundred bytes
(nine levels of anchors, each listing the previous one ten times) becomes 10^9 references, which any code that
walks it (validation, saving, JSON export) then spends forever on. Recursive anchors make an endless structure.
Deep nesting overflows the parsers' recursion, and Python refuses integers of more than 4300 digits. Each of
these becomes an :class:`UnsafeDocumentError` here, a ValueError (and, for YAML, a ``yaml.YAMLError``) with a
message meant for the user, so callers that already handle bad YAML or JSON handle these too.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_NODES = (
    200_000  # a personality, preset or template has a few dozen nodes; a card with a lorebook a few thousand
)
MAX_DEPTH = 200


class UnsafeDocumentError(yaml.YAMLError, ValueError):
    """A document that would expand beyond the limits (or cannot be parsed at all)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand to more than MAX_NODES nodes, nest too deeply, or loop."""
    done: dict[int, int] = {}  # id(node) -> expanded size
    visiting: set[int] = set()  # the nodes whose children are being counted: a node's ancestors
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, children_counted = stack.pop()
        key = id(node)
        if children_counted:
            visiting.discard(key)
            size = 1 + sum(done[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise UnsafeDocumentError(
                    f"The document expands to more than {MAX_NODES:,} values (aliases repeating aliases)."
                )
            done[key] = size
            continue
        if key in done:
            continue
        if depth > MAX_DEPTH:
            raise UnsafeDocumentError(f"The document nests more than {MAX_DEPTH} levels deep.")
        visiting.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in visiting:
                raise UnsafeDocumentError("The document refers to itself (a recursive alias).")
            if id(child) not in done:
                stack.append((child, depth + 1, False))


def _check_flow_depth(text: str) -> None:
    """Refuse deeply nested ``[`` / ``{`` before PyYAML sees them: its scanner takes time quadratic in the
    depth (10,000 brackets, a 20 KB file, kept it busy for minutes). Brackets inside strings count too; real
    documents (Jinja's ``{{ }}`` included) stay far below the limit."""
    depth = deepest = 0
    for bracket in re.sub(r"[^\[\]{}]+", "", text):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise UnsafeDocumentError(f"The document nests more than {MAX_DEPTH} levels deep.")


def load_yaml(text: str) -> Any:
    """Like ``yaml.safe_load(text)``, but UnsafeDocumentError for bombs, loops, deep nesting and huge numbers."""
    _check_flow_depth(text)
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise UnsafeDocumentError(f"The document nests more than {MAX_DEPTH} levels deep.") from None
        if node is None:
            return None
        _check_expansion(node)
        try:
            return loader.construct_document(node)
        except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an integer of 5000 digits
            raise UnsafeDocumentError(f"The document holds a value that cannot be read: {exc}") from None
    finally:
        loader.dispose()


def load_json(raw: str | bytes) -> Any:
    """Like ``json.loads(raw)``, but a ValueError (never RecursionError) for deep nesting and huge numbers."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise UnsafeDocumentError("The JSON nests too deeply.") from None
    # What Python's parser accepts (~1000 levels) still breaks code that walks it later (pydantic stops
    # serializing at a few hundred): refuse it here, with one message.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafeDocumentError("The JSON nests too deeply.")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return value
