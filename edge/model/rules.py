"""Event rules: how one label's window scores become events (thresholds, smoothing, timing).

The detector (`edge.detection.events`) runs them; a bundle ships their defaults, the config
overrides them per label, the trainer chooses them. They sit in the model stage because the
bundle carries them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _is_unit_interval(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0


@dataclass(frozen=True)
class EventRules:
    """How window scores of one label become events. Times in seconds, scores in [0, 1]."""

    threshold: float
    """On threshold: a smoothed score >= this starts an event."""
    off_threshold: float | None = None
    """Hysteresis: an event stays on while the score is >= this; None means ``threshold``."""
    median_windows: int = 1
    """Odd number of windows in the centred median filter; 1 means no smoothing."""
    min_duration_seconds: float = 0.0
    """Events shorter than this are dropped; the start is emitted once this long."""
    merge_gap_seconds: float = 0.0
    """An off-spell shorter than this does not end the event."""
    max_duration_seconds: float = 0.0
    """0 means unlimited; longer events are split (end and a new start at the same time)."""
    refractory_seconds: float = 0.0
    """After an end, no new start until this long after the end."""

    @property
    def effective_off_threshold(self) -> float:
        """The off threshold actually used (``threshold`` when ``off_threshold`` is None)."""
        return self.threshold if self.off_threshold is None else self.off_threshold

    def validate(self) -> list[str]:
        """Return the problems as ``"field: message"`` strings; empty when the rules are valid."""
        problems: list[str] = []
        if not _is_unit_interval(self.threshold):
            problems.append(f"threshold: must be within [0, 1], got {self.threshold!r}")
        if self.off_threshold is not None:
            if not _is_unit_interval(self.off_threshold):
                problems.append(f"off_threshold: must be within [0, 1], got {self.off_threshold!r}")
            elif _is_unit_interval(self.threshold) and self.off_threshold > self.threshold:
                problems.append(
                    f"off_threshold: must be <= threshold ({self.threshold!r}),"
                    f" got {self.off_threshold!r}"
                )
        k = self.median_windows
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            problems.append(f"median_windows: must be an odd integer >= 1, got {k!r}")
        for name in (
            "min_duration_seconds",
            "merge_gap_seconds",
            "max_duration_seconds",
            "refractory_seconds",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                problems.append(f"{name}: must be a finite number >= 0, got {value!r}")
        max_s, min_s = self.max_duration_seconds, self.min_duration_seconds
        if not any(p.startswith(("max_duration", "min_duration")) for p in problems) and (
            0.0 < max_s < min_s
        ):
            problems.append(
                f"max_duration_seconds: must be 0 (unlimited) or >= min_duration_seconds"
                f" ({min_s!r}), got {max_s!r}"
            )
        return problems
