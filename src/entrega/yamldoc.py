"""entrega.yaml as data: PyYAML parsed into plain values, with the line of each value.

The config's schema (config.py) validates what this module returns; kept apart because
reading YAML safely is a concern of its own: every value's path (``("environments", 1,
"router", "listen")``) is mapped to its line so an error can say where, a key given twice is
refused with both lines, alias expansion is bounded (a "billion laughs" file is refused in
milliseconds), and any tag beyond plain data is refused, never constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

from entrega.errors import ConfigError

Path_ = tuple[str | int, ...]

#: Values a document may expand to through aliases. A real entrega.yaml has a few hundred;
#: a "billion laughs" file reaches this within milliseconds and is refused here, before
#: its expansion can take the memory of `config validate` or the server.
MAX_YAML_VALUES = 100_000

_YAML_TAG = "tag:yaml.org,2002:"
#: The plain data a config is made of; any other tag (``!!python/object``, ``!!set``,
#: ``!custom``) is refused, never constructed.
_SCALAR_TAGS = frozenset(_YAML_TAG + t for t in ("str", "int", "float", "bool", "null",
                                                 "timestamp"))
_COLLECTION_TAGS: dict[type[yaml.Node], str] = {
    yaml.MappingNode: _YAML_TAG + "map", yaml.SequenceNode: _YAML_TAG + "seq"}


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


class _Builder:
    """Plain data from a composed YAML node graph, refusing what a config must not hold.

    Composing keeps an alias as a second reference to its anchor's node, so the graph stays
    as small as the file; building walks it as a tree, so every alias is expanded. That
    walk is bounded (:data:`MAX_YAML_VALUES`), refuses an alias to an enclosing node (which
    would never end), refuses duplicate keys (a second ``auth:`` would silently replace the
    first), and constructs scalars only from the plain-data tags.
    """

    def __init__(self, *, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.values = 0
        self._open: set[int] = set()  # ids of the collections being built (for cycles)
        self._scalars = yaml.SafeLoader("")

    def error(self, node: yaml.Node, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.file, line=node.start_mark.line + 1, hint=hint)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.values += 1
        if self.values > MAX_YAML_VALUES:
            raise self.error(node, f"YAML aliases expand this file to more than "
                             f"{MAX_YAML_VALUES} values (an alias bomb?)",
                             hint="write the values out, or reuse fewer anchors")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if node.tag != _COLLECTION_TAGS.get(type(node)):
            raise self.unknown_tag(node)
        if id(node) in self._open:
            raise self.error(node, "this alias refers to a mapping or list that contains it "
                             "(the value would never end)")
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.build(v, (*path, i)) for i, v in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key must be a plain word or string, not a "
                                 "mapping or list")
            key = self.scalar(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise self.error(
                    key_node, f"duplicate key {key!r}: it is also at {self.file}:"
                    f"{first_line[key]}", hint="a second block would silently replace the "
                    "first; merge them into one")
            first_line[key] = line
            out[key] = self.build(value_node, (*path, key))
        return out

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _YAML_TAG + "merge":
            raise self.error(node, "merge keys (<<) are not supported",
                             hint="write the fields out, or use an alias for a whole value")
        if node.tag not in _SCALAR_TAGS:
            raise self.unknown_tag(node)
        try:
            return self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            # e.g. "!!int abc", "!!timestamp 2024-13-45"
            raise self.error(node, f"{node.value!r} is not a valid "
                             f"{_shown_tag(node.tag)}") from exc

    def unknown_tag(self, node: yaml.Node) -> ConfigError:
        return self.error(node, f"unknown tag {_shown_tag(node.tag)}",
                          hint="entrega.yaml holds plain strings, numbers, booleans, lists "
                               "and mappings; remove the tag")


def parse_yaml(text: str, *, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain data and a map from each value's path to its line.

    Raises :class:`ConfigError` (``file:line: ...``) for YAML that is not plain data:
    unknown tags, duplicate keys, alias bombs and aliases to an enclosing value.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            f"not valid YAML: {exc.problem}",
            file=file, line=mark.line + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
        raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
    if node is None:
        raise ConfigError("the file is empty", file=file, hint="run `entrega init` for a start")
    builder = _Builder(file=file)
    return builder.build(node, ()), builder.lines


