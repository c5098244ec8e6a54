"""Load YAML and remember where every value came from, so errors can name a file line.

`yaml.safe_load` throws the node marks away; here we compose the node tree ourselves and
build plain Python data from it, keeping a map from each value's path (``("counters", 3,
"services", 1)``) to the 1-based line a person would look at. Along the way it rejects what
a plain `safe_load` silently accepts and a hall's IT staff would not expect: a key given
twice in one mapping (PyYAML keeps the last one), nesting deeper than any hall needs, and
more values than any hall needs (aliases can multiply a small file into billions of them).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

YamlPath = tuple[Hashable, ...]

# A real hall's config nests five levels and holds a few thousand values; far beyond that is
# a broken or hostile file, refused before it costs stack or memory.
MAX_DEPTH = 32
MAX_VALUES = 100_000

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


@dataclass(frozen=True, slots=True)
class YamlProblem:
    line: int  # 1-based
    path: YamlPath
    message: str


class YamlSourceError(Exception):
    """The text is not YAML we accept; `problems` says where, one entry each."""

    def __init__(self, problems: list[YamlProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(slots=True)
class LineMap:
    """Path of a value -> the 1-based line of its key (in a mapping) or its item (in a list)."""

    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line_of(self, path: YamlPath) -> int:
        """The line of `path`, or of its nearest ancestor that is in the file.

        A missing field has no line of its own; the mapping that lacks it is where the
        reader has to add it.
        """
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


@dataclass(frozen=True, slots=True)
class YamlDocument:
    data: Any  # None for an empty document
    lines: LineMap


class _LimitError(yaml.MarkedYAMLError):
    """Beyond MAX_DEPTH or MAX_VALUES: not a syntax error, a file no hall needs."""


class _Loader(yaml.SafeLoader):
    """The safe loader, with its (recursive) composer held to MAX_DEPTH."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _LimitError(problem=_too_deep(), problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels"


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader's types; raise YamlSourceError."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except _LimitError as exc:
            raise YamlSourceError([_marked_problem(exc, prefix="")]) from None
        except yaml.MarkedYAMLError as exc:
            raise YamlSourceError([_marked_problem(exc)]) from None
        except yaml.YAMLError as exc:
            raise YamlSourceError([YamlProblem(1, (), f"YAML error: {exc}")]) from None
        builder = _Builder(loader)
        if root is None:
            return YamlDocument(None, LineMap({(): 1}))
        builder.lines.lines[()] = _line(root)
        try:
            data = builder.build(root, ())
        except _TooMany as exc:
            raise YamlSourceError([exc.problem]) from None
        if builder.problems:
            raise YamlSourceError(builder.problems)
        return YamlDocument(data, builder.lines)
    finally:
        loader.dispose()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _marked_problem(
    exc: yaml.MarkedYAMLError, path: YamlPath = (), prefix: str = "YAML syntax error: "
) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    message = exc.problem or "invalid YAML"
    if exc.context:
        context_mark = exc.context_mark
        # The problem often shows only where the parser gave up; where the unfinished
        # construct began is usually where the mistake is.
        if context_mark is not None and context_mark.line + 1 != line:
            message = f"{message} ({exc.context} that starts on line {context_mark.line + 1})"
        else:
            message = f"{message} ({exc.context})"
    return YamlProblem(line, path, f"{prefix}{message}")


class _TooMany(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Builder:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines = LineMap()
        self.problems: list[YamlProblem] = []
        self._active: set[int] = set()  # nodes being built: an alias back into one loops
        self._values = 0

    def build(self, node: Node, path: YamlPath) -> Any:
        # Counted as built, not as written: an alias is a copy of everything it refers to.
        self._values += 1
        if self._values > MAX_VALUES:
            self._give_up(path, f"more than {MAX_VALUES} values (aliases that repeat aliases?)")
        if len(path) > MAX_DEPTH:
            self._give_up(path, _too_deep())
        if id(node) in self._active:
            self.problems.append(YamlProblem(_line(node), path, "an alias refers to itself"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            assert isinstance(node, ScalarNode)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _give_up(self, path: YamlPath, message: str) -> NoReturn:
        # Deep inside aliases a path means nothing to a reader; the top-level key does.
        section = path[:1]
        raise _TooMany(YamlProblem(self.lines.line_of(section), section, message))

    def _scalar(self, node: ScalarNode, path: YamlPath) -> Any:
        # YAML 1.1 reads a plain 8:30 or 12:00 as a base-60 number (510, 720); nobody
        # writing opening hours means that, so such scalars stay strings (as in YAML 1.2).
        if node.style is None and node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in node.value:
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(_marked_problem(exc, path, prefix=""))
            return None

    def _sequence(self, node: SequenceNode, path: YamlPath) -> list[Any]:
        items: list[Any] = []
        for index, child in enumerate(node.value):
            child_path = (*path, index)
            self.lines.lines[child_path] = _line(child)
            items.append(self.build(child, child_path))
        return items

    def _mapping(self, node: MappingNode, path: YamlPath) -> dict[Hashable, Any]:
        keys: dict[int, Hashable | None] = {}  # id(key node) -> key, so each is built once
        first_line: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = keys[id(key_node)] = self._key(key_node, path)
            if key is None:
                continue
            if key in first_line:
                self.problems.append(
                    YamlProblem(
                        _line(key_node),
                        (*path, key),
                        f"duplicate key '{key}' (first given on line {first_line[key]})",
                    )
                )
            else:
                first_line[key] = _line(key_node)
        try:
            # Puts the `<<: *anchor` pairs first, so the mapping's own keys override them.
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(_marked_problem(exc, path, prefix=""))
            return {}
        result: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            key = keys[id(key_node)] if id(key_node) in keys else self._key(key_node, path)
            if key is None:
                continue
            child_path = (*path, key)
            # The last pair wins, as in the dict, so the line is the one whose value is used.
            self.lines.lines[child_path] = _line(key_node)
            result[key] = self.build(value_node, child_path)
        return result

    def _key(self, key_node: Node, path: YamlPath) -> Hashable | None:
        if isinstance(key_node, ScalarNode):
            key = self._scalar(key_node, path)
            if isinstance(key, Hashable):
                return key
        self.problems.append(
            YamlProblem(_line(key_node), path, "a mapping key must be a plain value")
        )
        return None
