"""Where each key and value of a YAML file sits, so every error and every runtime review item can name a line.

Why from `yaml.compose` nodes: PyYAML's plain loaders return dicts without positions, while the node tree keeps a
start mark (line, column) for every key and value. The walk also catches duplicate keys, which `safe_load`
silently resolves by keeping the last one (an admin's second `Title:` would win without a word).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Duplicate:
    path: Path
    line: int
    column: int
    first_line: int


@dataclass(frozen=True)
class SourceMap:
    """Positions are 1-based (line, column), as editors show them."""

    filename: str
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, prefer_key: bool = False) -> tuple[int, int]:
        """The position of `path`, or of its nearest existing parent (an error inside a shorthand or a default
        value has no node of its own)."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if prefix in first:
                return first[prefix]
            if prefix in second:
                return second[prefix]
        return (1, 1)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def build_source_map(root: yaml.Node | None, filename: str) -> tuple[SourceMap, list[Duplicate]]:
    source = SourceMap(filename)
    duplicates: list[Duplicate] = []
    if root is None:
        return source, duplicates
    stack: list[tuple[yaml.Node, Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        source.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
                child = (*path, key)
                line, column = _mark(key_node)
                if key in seen:
                    duplicates.append(Duplicate(child, line, column, seen[key]))
                    continue
                seen[key] = line
                source.keys[child] = (line, column)
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                source.keys[child] = _mark(item)
                stack.append((item, child))
    return source, duplicates
