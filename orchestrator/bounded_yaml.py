"""YAML composed within limits: nesting depth, and the number of values once aliases are expanded.

PyYAML composes an alias (`*name`) as a second reference to the anchored node, so
composing is linear in the text; what explodes is whoever walks the graph after,
visiting a shared node once per reference (the "billion laughs" bomb: 9 levels of
9 aliases are 9**9 values). `compose_bounded` measures the expansion on the graph in
one pass and refuses it, and refuses deep nesting while composing, before the
composer's recursion could reach Python's limit. Pure: safe to call in a thread.

    Exception
    +-- YamlLimitError(line, message)    callers add their file name and translate it
"""

from __future__ import annotations

import functools
from typing import Any

import yaml


class YamlLimitError(Exception):
    """A document beyond a limit: where (`line`, 1-based) and which limit (`message`)."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


def compose_bounded(text: str, *, max_depth: int, max_nodes: int) -> list[yaml.Node | None]:
    """Every document in `text`, composed by SafeLoader rules. Raises YamlLimitError past
    `max_depth` levels of nesting or `max_nodes` values (both counted with aliases
    expanded) or for an alias inside the node it names; yaml.YAMLError for bad syntax."""
    loader = functools.partial(_BoundedLoader, max_depth=max_depth, max_nodes=max_nodes)
    docs: list[yaml.Node | None] = list(yaml.compose_all(text, Loader=loader))  # type: ignore[arg-type]
    for doc in docs:
        if doc is not None:
            _check_expansion(doc, max_depth, max_nodes)
    return docs


def _nodes_message(max_nodes: int) -> str:
    return f"more than {max_nodes} values once aliases (*name) are expanded: does an alias repeat a large part of the document?"


def _depth_message(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels (aliases expanded)"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts nodes and levels on the way down."""

    def __init__(self, stream: str, *, max_depth: int, max_nodes: int) -> None:
        super().__init__(stream)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise YamlLimitError(event.start_mark.line + 1, _nodes_message(self._max_nodes))
        if self._depth >= self._max_depth:
            raise YamlLimitError(event.start_mark.line + 1, _depth_message(self._max_depth))
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, max_depth: int, max_nodes: int) -> None:
    """Values and levels under each node, aliases expanded: an iterative post-order walk
    that visits each shared node once, so its cost is the graph's, not the expansion's."""
    size: dict[int, int] = {}  # id(node) -> values under it, itself included
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > max_nodes:
                raise YamlLimitError(node.start_mark.line + 1, _nodes_message(max_nodes))
            if depth[key] > max_depth:
                raise YamlLimitError(node.start_mark.line + 1, _depth_message(max_depth))
        elif key in open_nodes:
            raise YamlLimitError(node.start_mark.line + 1, "an alias (*name) refers to a mapping or list that contains it")
        elif key not in size:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
