"""Typed, frozen dataclasses from YAML, with errors that point at the line.

Config files and bundle manifests are both read through `load_located(cls, path)`: the YAML is
composed once to keep each node's line, then walked against the dataclass's type hints. Unknown
and repeated keys are refused, every value is type-checked, and each dataclass may add
cross-field rules in a `problems()` method returning (key, message) pairs, the key dotted
("events.median_windows") or a tuple (("labels", 2)). Those rules run only when the dataclass's
own fields all converted, so they compare typed values. All problems are collected, not just
the first, so `soundwatch check` can print them together. An empty section (`source:` with
every key commented out) means that section's defaults.

Ranges are declared on the field (`field(1, ge=1, help=...)`) and checked here, so `problems()`
holds only the rules that compare fields. `override` sets values from outside the file (the
command line) through the same checks, naming the flag instead of a line.

Supported annotations: bool, int, float, str, Any, `X | None`, `A | B` of scalars,
`Literal[...]`, `list[X]`, `dict[str, X]` and nested dataclasses. Field help text lives in
`field(metadata={"help": ...})` and is what the README's config reference is written from.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from edge.errors import ConfigError
from edge.yamlfile import Path_, Where, dotted, parse_yaml, read_text

T = TypeVar("T")


def field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    zero: str | None = None,
) -> Any:
    """A dataclass field with its help text (units included) for the config reference.

    `ge`, `gt`, `le` and `lt` bound every number the field holds (a list's items, a dict's values;
    None is never bounded); the loader checks them and names the key, line and value. `zero`
    says what 0 means where `ge=0` allows it ("off"), for the message: "must be 0 (off) or
    positive".
    """
    metadata = {"help": help, "bounds": Bounds(ge, gt, le, lt, zero)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def like(cls: type, name: str, default: Any = None, *, help: str | None = None) -> Any:
    """A field with the help and range of `cls`'s field `name` but its own default: the same
    setting in another shape (optional overrides, another tool's defaults), defined once."""
    (f,) = (f for f in dataclasses.fields(cls) if f.name == name)
    b: Bounds = f.metadata["bounds"]
    text = f.metadata["help"] if help is None else help
    return field(default, help=text, ge=b.ge, gt=b.gt, le=b.le, lt=b.lt, zero=b.zero)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A field's allowed range: at least `ge`, more than `gt`, at most `le`, less than `lt`
    (None: open on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    zero: str | None = None

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None when it is in."""
        ge, gt, le, lt = self.ge, self.gt, self.le, self.lt
        if (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        ):
            return None
        return f"{self.text()}, got {value}"

    def text(self) -> str:
        """The range as a rule: "must be within 0..1", "must be at least 1"."""
        ge, gt, le, lt = self.ge, self.gt, self.le, self.lt
        if gt is not None and lt is not None:
            return f"must be between {_short(gt)} and {_short(lt)}"
        if ge is not None and le is not None:
            return f"must be within {_short(ge)}..{_short(le)}"
        if gt is not None and le is not None:
            return f"must be more than {_short(gt)} and at most {_short(le)}"
        if gt == 0:
            return "must be positive"
        if gt is not None:
            return f"must be more than {_short(gt)}"
        if ge == 0:
            return f"must be 0 ({self.zero}) or positive" if self.zero else "must be 0 or more"
        if ge is not None:
            return f"must be at least {_short(ge)}"
        if lt is not None:
            return f"must be less than {_short(lt)}"
        return f"must be at most {_short(le or 0)}"

    def range(self) -> str:
        """The range in short: "1..256", "> 0, <= 3,600", ">= 0"; "" when unbounded."""
        if self.ge is not None and self.le is not None:
            return f"{_short(self.ge)}..{_short(self.le)}"
        low = f">= {_short(self.ge)}" if self.ge is not None else ""
        low = f"> {_short(self.gt)}" if self.gt is not None else low
        high = f"<= {_short(self.le)}" if self.le is not None else ""
        high = f"< {_short(self.lt)}" if self.lt is not None else high
        return ", ".join(part for part in (low, high) if part)

    def __bool__(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))


def _short(number: float) -> str:
    """2000000 as "2,000,000", 65535 as "65535", 0.01 as "0.01": a bound as people read it."""
    if not float(number).is_integer():
        return f"{number:g}"
    return f"{int(number):,}" if abs(number) >= 100_000 else str(int(number))


def _numbers(value: Any, path: Path_) -> Iterator[tuple[Path_, float]]:
    """Every number in a converted value, with its key path (bools are not numbers here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, (*path, key))


def load_located(cls: type[T], path: Path) -> tuple[T, Where]:
    """Read `path` as YAML into dataclass `cls`, or raise ConfigError listing every problem.

    Also returns the line map, for checks that need more than the file (a config's labels
    against its bundle's).
    """
    return from_text(cls, read_text(path), str(path))


def from_text(cls: type[T], text: str, source: str) -> tuple[T, Where]:
    data, lines = parse_yaml(text, source)
    return build(cls, {} if data is None else data, lines), lines


def build(cls: type[T], data: Any, lines: Where | None = None) -> T:
    """Build `cls` from plain data (dicts, lists, scalars); raise ConfigError with all problems."""
    lines = lines or Where("<config>", None)
    problems: list[str] = [_Checked(p) for p in lines.duplicates]
    value = _convert(cls, data, (), lines, problems)
    if problems:
        raise ConfigError("\n".join(sorted(problems, key=_line_of)))
    return typing.cast(T, value)


def override(obj: T, changes: dict[Path_, tuple[Any, str]], lines: Where | None = None) -> T:
    """`obj` with values set at key paths, checked exactly as if the file had said them.

    `changes` maps a key path to (value, name), the name being where the value came from
    (a command-line flag: `--threads`); a problem with a changed value names it
    (`--threads: must be at least 1, got -2`), any other problem points at `lines`.
    """
    data = dataclasses.asdict(typing.cast(Any, obj))
    for path, (value, _) in changes.items():
        section: Any = data
        for part in path[:-1]:
            section = section[part]
        section[path[-1]] = value
    names = {path: name for path, (_, name) in changes.items()}
    return build(type(obj), data, _Named(lines or Where("<config>", None), names))


class _Named(Where):
    """A Where for values set outside the file: their problems name the flag, not a line."""

    def __init__(self, base: Where, names: dict[Path_, str]) -> None:
        super().__init__(base.source, None)
        self.base = base
        self.names = names

    def where(self, path: Path_) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.names:
                return self.names[path[:n]]
        return self.base.where(path)


def _line_of(problem: str) -> int:
    """Problems are listed in file order: `source:line: ...`."""
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


class _Checked(str):
    """A problem that leaves every value typed (a broken rule, an unknown or repeated key)."""


def _describe(value: Any) -> str:
    """A bad value as the user wrote it: text quoted, the rest in YAML (true, null, [1, 2])."""
    text = repr(value) if isinstance(value, str) else yaml_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, path: Path_, lines: Where, problems: list[str]) -> Any:
    def bad(message: str) -> None:
        problems.append(f"{lines.where(path)}: {message}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(tp, value, path, lines, problems)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            trial: list[str] = []
            converted = _convert(option, value, path, lines, trial)
            if not trial:
                return converted
        if len(options) == 2 and type(None) in options:  # Optional[X]: X's own message is best
            inner = next(o for o in options if o is not type(None))
            return _convert(inner, value, path, lines, problems)
        bad(f"expected {_type_name(tp)}, got {_describe(value)}")
        return None
    if origin is Literal:
        choices = typing.get_args(tp)
        # `1 in (True,)` is true in Python: compare types too, so `true` is not a choice of 1.
        if not any(value == c and type(value) is type(c) for c in choices):
            bad(f"must be one of {', '.join(map(str, choices))}; got {_describe(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            bad(f"expected a list, got {_describe(value)}")
            return []
        (item,) = typing.get_args(tp)
        return [_convert(item, v, (*path, i), lines, problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            bad(f"expected a mapping, got {_describe(value)}")
            return {}
        _, item = typing.get_args(tp)
        return {
            str(k): _convert(item, v, (*path, str(k)), lines, problems) for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            bad(f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad(f"expected a whole number, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad(f"expected a number, got {_describe(value)}")
            return value
        if not math.isfinite(value):  # .nan and .inf are YAML floats, never a usable setting
            bad(f"expected a finite number, got {_describe(value)}")
            return value
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # `version: 2026.10` is meant as text: keep it as written, not as str(2026.1).
            return lines.texts.get(path, str(value))
        if not isinstance(value, str):
            bad(f"expected text, got {_describe(value)}")
        return value
    raise TypeError(f"schema: unsupported annotation {tp!r} at {dotted(path)}")


def _convert_dataclass(
    cls: type, value: Any, path: Path_, lines: Where, problems: list[str]
) -> Any:
    if value is None and path:
        value = {}  # an empty section (every key commented out) means its defaults
    if not isinstance(value, dict):
        problems.append(f"{lines.where(path)}: expected a mapping, got {_describe(value)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            known = ", ".join(fields)
            where = lines.where((*path, str(key)))
            problems.append(_Checked(f"{where}: unknown key (known keys: {known})"))
    before = len(problems)
    kwargs: dict[str, Any] = {}
    missing = False
    for name, f in fields.items():
        if name in value:
            sub = (*path, name)
            typed = len(problems)
            kwargs[name] = _convert(hints[name], value[name], sub, lines, problems)
            bounds = f.metadata.get("bounds")
            if bounds and len(problems) == typed:  # ranges compare typed numbers only
                for at, number in _numbers(kwargs[name], sub):
                    problem = bounds.problem(number)
                    if problem:
                        problems.append(_Checked(f"{lines.where(at)}: {problem}"))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{lines.where(path)}: missing required key '{name}'")
            missing = True
    if missing:
        return None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{lines.where(path)}: {exc}")
        return None
    # Cross-field rules compare typed values: they run only when every field converted
    # (a nested section's own rule problems or an unknown key do not stop them).
    if all(isinstance(p, _Checked) for p in problems[before:]):
        check = getattr(obj, "problems", None)
        for key, message in check() if check else ():
            # A dotted key for plain fields; a tuple where a part holds dots or is a list index.
            parts = tuple(key) if isinstance(key, tuple) else tuple(key.split(".") if key else ())
            sub = (*path, *parts)
            problems.append(_Checked(f"{lines.where(sub)}: {message}"))
    return obj


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp) if t is not type(None))
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def describe(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, default, help, range) for every field, nested sections flattened: the config
    reference. The range is the field's bounds ("1..256", "> 0", "") as the loader checks them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            yield from describe(tp, key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = yaml_text(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = yaml_text(f.default_factory())
        else:
            default = "(required)"
        bounds = f.metadata.get("bounds")
        yield key, default, f.metadata.get("help", ""), bounds.range() if bounds else ""


def yaml_text(value: Any) -> str:
    """A value as it would be written in the YAML file: null, true, 0.1, tone, []."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()
