"""Counting rules of dense evaluation, pure: what is true, what was found, how they match.

Seconds are the edge's per-second rows ([i, i + 1)); events are matched on their onsets within
a tolerance, one to one. `trainer.evaluate` reads a scan's outputs and adds these up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    """2TP / (2TP + FP + FN); None when undefined (nothing to find and nothing found)."""
    denominator = 2 * tp + fp + fn
    return None if denominator == 0 else 2 * tp / denominator


@dataclass
class Counts:
    """True positives, false positives, false negatives, and the figures they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    @property
    def precision(self) -> float | None:
        return None if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return None if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return f1_score(self.tp, self.fp, self.fn)

    def figures(self) -> dict[str, float | int | None]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def true_seconds(truth: Sequence[tuple[float, float]]) -> set[int]:
    """The seconds that (start, end) annotations touch: second i covers [i, i + 1); an
    interval overlapping it, or a point (start == end) in it, makes it true."""
    out: set[int] = set()
    for start, end in truth:
        first = math.floor(start)
        last = first if end <= start else math.ceil(end) - 1  # end is exclusive
        out.update(range(first, last + 1))
    return out


def segment_counts(
    truth: Sequence[tuple[float, float]], seconds: dict[int, float], threshold: float
) -> Counts:
    """Counts over the analysed seconds (second index -> probability) of one recording.

    truth: (start, end) seconds of the label's annotations; start == end for a point.
    """
    true = true_seconds(truth)
    counts = Counts()
    for i, p in seconds.items():
        truth_i, predicted = i in true, p >= threshold
        counts.tp += truth_i and predicted
        counts.fp += predicted and not truth_i
        counts.fn += truth_i and not predicted
    return counts


def event_counts(
    true_onsets: Sequence[float], predicted_onsets: Sequence[float], tolerance_seconds: float
) -> Counts:
    """Match onsets one to one within the tolerance; the most matches possible.

    Greedy in time order is optimal here: every predicted onset accepts the same width of
    true onsets, so taking the earliest unmatched true onset in reach never blocks a later one.
    """
    truth = sorted(true_onsets)
    matched = 0
    j = 0
    for onset in sorted(predicted_onsets):
        while j < len(truth) and truth[j] < onset - tolerance_seconds - 1e-9:
            j += 1  # too early for this and every later prediction
        if j < len(truth) and truth[j] <= onset + tolerance_seconds + 1e-9:
            matched += 1
            j += 1
    return Counts(matched, len(predicted_onsets) - matched, len(truth) - matched)
