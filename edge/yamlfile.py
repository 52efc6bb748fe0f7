"""Reading YAML for configs and manifests: text with its lines kept, and hard limits.

`parse_yaml` composes the YAML once to keep each node's line (`Where`) and loads it with times
left as text; a syntax error, a character YAML forbids, a file past `MAX_YAML_BYTES`, more than
`MAX_YAML_VALUES` values once aliases expand, or nesting past 50 levels is one ConfigError line
naming the file (and line). `edge.schema` builds typed dataclasses from what this returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edge.errors import ConfigError

Path_ = tuple[str | int, ...]
_MAX_DEPTH = 50  # no config or manifest nests this deep; only a self-referencing alias does
# Configs and manifests are a few kB with a few hundred values; these bounds stop a huge file or
# a fan-out of aliases (8 lines can mean 10^8 values) before anything walks it.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000


class Where:
    """Maps a key path such as ("source", "device") to the line it was written on.

    Also keeps each plain scalar's text as written (so `version: 2026.10` stays "2026.10",
    not the float's "2026.1") and the keys written twice in one mapping, which YAML loaders
    silently resolve to the last one.
    """

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.texts: dict[Path_, str] = {}
        self.duplicates: list[str] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        if len(path) > _MAX_DEPTH:  # an alias that contains itself (`&a [*a]`)
            mark = node.start_mark
            raise yaml.YAMLError(f"nested deeper than {_MAX_DEPTH} levels at line {mark.line + 1}")
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode) and not node.style:
            self.texts[path] = str(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                line = key.start_mark.line + 1
                sub = (*path, name)
                if name in seen:
                    self.duplicates.append(
                        f"{self.source}:{line}: {dotted(sub)}: written twice (also on line"
                        f" {seen[name]}); remove one"
                    )
                seen[name] = line
                self._walk(value, sub)
                # the key's own line is more useful than where its value starts
                self.lines[sub] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    @classmethod
    def nowhere(cls, source: str) -> Where:
        return cls(source, None)

    def __call__(self, path: Path_) -> str:
        return self.where(path)

    def where(self, path: Path_) -> str:
        """`file:line: a.b[2]` for the deepest part of `path` that has a line."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}: {dotted(path) or '(top level)'}"
        return f"{self.source}: {dotted(path) or '(top level)'}"


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves times as text: `start: 2026-11-22T10:23:14Z` is a string for the
    schema to check, and `2026-13-01` is a bad time for that check to name, not a crash."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# _Loader's rules on libyaml's parser, ~10x faster, where PyYAML was built with it.
_FastLoader: Any = None
if hasattr(yaml, "CSafeLoader"):
    _FastLoader = type(
        "_FastLoader",
        (yaml.CSafeLoader,),
        {"yaml_implicit_resolvers": _Loader.yaml_implicit_resolvers},
    )


def parse_yaml(text: str, source: str) -> tuple[Any, Where]:
    """Parse YAML text; a syntax error becomes a ConfigError with its line."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source}: {len(text):,} characters; a config is at most {MAX_YAML_BYTES:,}"
        )
    fast = _parse_fast(text, source)
    if fast is not None:
        return fast
    try:
        root, construct = _compose(text, _Loader)
        if root is not None and _expanded_size(root) > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: more than {MAX_YAML_VALUES:,} values once its aliases are expanded;"
                " write the values out, or use fewer aliases"
            )
        data = _apart(construct(root)) if root is not None else None
        lines = Where(source, root)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ...)
        at = text.count("\n", 0, exc.position) + 1
        char = exc.character
        problem = f"character {hex(char) if isinstance(char, int) else repr(char)} is not allowed"
        raise ConfigError(f"{source}:{at}: not valid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from None
    except (ValueError, TypeError, AttributeError) as exc:
        # Explicit tags PyYAML cannot construct (`!!int abc`) fail outside its error types.
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    except RecursionError:  # PyYAML's composer recurses once per level: [[[[...
        raise ConfigError(f"{source}: not valid YAML (nested too deep)") from None
    return data, lines


def _parse_fast(text: str, source: str) -> tuple[Any, Where] | None:
    """`parse_yaml` on libyaml (a bundle's manifest: 0.1 s less at start-up); None when it is
    not installed or finds any problem, which the Python parser then names with its line."""
    if _FastLoader is None:
        return None
    try:
        root, construct = _compose(text, _FastLoader)
        if root is None or _expanded_size(root) > MAX_YAML_VALUES:
            return None
        return _apart(construct(root)), Where(source, root)
    except Exception:  # any: the Python parser then says what is wrong
        return None


def _apart(data: Any, strings: dict[str, str] | None = None) -> Any:
    """`data` copied (new strings, floats, lists and dicts) while its node tree still lives.

    The loader's strings are made between the tree's nodes, so what lasts of a big file kept
    most of the tree's memory pages after it went (BirdNET's 6,522-label manifest: 11.4 MiB
    after reading it). Copies made before the tree goes fill pages of their own, and the
    tree's pages are given back whole: 5.7 MiB. Equal strings become one (`strings`: the
    copies so far), as a manifest's labels and its thresholds' keys: 5.0 MiB. Only called
    once aliases are bounded."""
    strings = {} if strings is None else strings
    if isinstance(data, str):
        copy = strings.get(data)
        if copy is None:  # a new string (two parts: `data[:]` is `data` itself)
            copy = strings[data] = data[:1] + data[1:]
        return copy
    if isinstance(data, float):
        return data * 1.0  # -0.0 stays -0.0 (+ 0.0 would not)
    if isinstance(data, list):
        return [_apart(item, strings) for item in data]
    if isinstance(data, dict):
        return {_apart(key, strings): _apart(value, strings) for key, value in data.items()}
    return data


def _compose(text: str, loader_class: Any) -> tuple[yaml.Node | None, Any]:
    """The text's node tree, and the function that builds its data from it: parsed once, not
    composed for the lines and parsed again for the data (BirdNET's 6,522-label manifest
    peaked 6 MiB higher, and kept 2 MiB more, parsed twice)."""
    loader = loader_class(text)
    try:
        return loader.get_single_node(), loader.construct_document
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values `root` holds with every alias expanded (a shared node counts each time
    it is used), each node counted once and the count capped just past MAX_YAML_VALUES."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > _MAX_DEPTH:  # an alias that contains itself (`&a [*a]`)
            mark = node.start_mark
            raise yaml.YAMLError(f"nested deeper than {_MAX_DEPTH} levels at line {mark.line + 1}")
        known = sizes.get(id(node))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        total = 1 + sum(size(child, depth + 1) for child in children)
        sizes[id(node)] = min(total, MAX_YAML_VALUES + 1)
        return sizes[id(node)]

    return size(root, 0)


def read_text(path: Path) -> str:
    """The UTF-8 text of `path`; an unreadable or undecodable file is a ConfigError."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; at most {MAX_YAML_BYTES:,}")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
