"""Event rules: how one label's window scores become events (thresholds, smoothing, timing).

Defined once, here, with their help and ranges: the detector (`edge.detection.events`) runs an
`EventRules`; a bundle ships an `EventTiming` as its defaults; the config's overrides and the
trainer's defaults are the same fields in other shapes, made with `schema.like` from these.
They sit in the model stage because the bundle carries them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edge.schema import Bounds, field


@dataclass(frozen=True)
class EventTiming:
    """The rules but the thresholds (which are per label): a bundle's `events:` defaults."""

    median_windows: int = field(
        1, ge=1, le=999, help="median smoothing over this many windows (odd; 1: none)"
    )
    min_duration_seconds: float = field(0.0, ge=0, le=86400, help="shorter events are dropped, s")
    merge_gap_seconds: float = field(
        0.0, ge=0, le=86400, help="shorter off-spells inside an event are merged, s"
    )
    max_duration_seconds: float = field(
        0.0, ge=0, le=86400, zero="no limit", help="longer events are split, s (0: no limit)"
    )
    refractory_seconds: float = field(
        0.0, ge=0, le=86400, help="no new event this soon after one ends, s"
    )

    def problems(self) -> list[tuple[str, str]]:
        return agreement_problems(self)


@dataclass(frozen=True, kw_only=True)
class EventRules(EventTiming):
    """How window scores of one label become events. Times in seconds, scores in [0, 1]."""

    threshold: float = field(ge=0, le=1, help="a smoothed score at least this starts an event")
    off_threshold: float | None = field(
        None,
        ge=0,
        le=1,
        help="an event stays on while the score is at least this (null: threshold)",
    )

    @property
    def effective_off_threshold(self) -> float:
        """The off threshold actually used (``threshold`` when ``off_threshold`` is None)."""
        return self.threshold if self.off_threshold is None else self.off_threshold

    def validate(self) -> list[str]:
        """The problems as ``"field: message"`` strings; empty when the rules are valid."""
        return [f"{key}: {message}" for key, message in rule_problems(_values(self))]


def rule_problems(values: Mapping[str, Any], *, ranges: bool = True) -> list[tuple[str, str]]:
    """(field, message) for rule values, any of them absent or None (not set): each in its
    range, then how they must agree. The one check of event rules, wherever they come from;
    `ranges=False` where the config loader has checked the ranges (from the same fields)."""
    problems = []
    for name in RULE_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        bounds: Bounds = _FIELDS[name].metadata["bounds"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append((name, f"must be a number, got {value!r}"))
        elif not math.isfinite(value):
            problems.append((name, f"must be a finite number, got {value!r}"))
        elif (problem := bounds.problem(value)) is not None:
            problems.append((name, problem))
    bad = {key for key, _ in problems}
    if not ranges:
        problems = []

    def given(*names: str) -> bool:  # set, and in range
        return all(values.get(n) is not None and n not in bad for n in names)

    on, off = values.get("threshold", 1.0), values.get("off_threshold", 0.0)
    if given("threshold", "off_threshold") and off > on:
        problems.append(("off_threshold", f"must be <= threshold ({on!r}), got {off!r}"))
    k = values.get("median_windows")
    if given("median_windows") and (not isinstance(k, int) or k % 2 == 0):
        problems.append(("median_windows", f"must be an odd integer >= 1, got {k!r}"))
    low, high = values.get("min_duration_seconds", 0.0), values.get("max_duration_seconds", 0.0)
    if given("min_duration_seconds", "max_duration_seconds") and 0.0 < high < low:
        message = f"must be 0 (unlimited) or >= min_duration_seconds ({low!r}), got {high!r}"
        problems.append(("max_duration_seconds", message))
    return problems


# The rule names, thresholds first: the order of problems, and of the config's overrides.
RULE_FIELDS = ("threshold", "off_threshold", *(f.name for f in fields(EventTiming)))
_FIELDS = {f.name: f for f in fields(EventRules)}


def _values(obj: object) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in RULE_FIELDS if hasattr(obj, name)}


def agreement_problems(obj: object) -> list[tuple[str, str]]:
    """How the rule fields `obj` has (any shape: overrides, defaults) must agree: for the
    config loader's `problems()`, which has checked each field's range already."""
    return rule_problems(_values(obj), ranges=False)
