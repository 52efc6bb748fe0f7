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


@dataclass
class PointCounts:
    """Point annotations (start == end, a pulse) against the events found, which span many
    points (one event per pulse train): a point is found when it falls in an event, an event
    is right when it holds a point. Recall and precision count different things, so both
    totals are kept."""

    points_found: int = 0
    points: int = 0
    events_right: int = 0
    events: int = 0

    def add(self, other: PointCounts) -> None:
        self.points_found += other.points_found
        self.points += other.points
        self.events_right += other.events_right
        self.events += other.events

    @property
    def recall(self) -> float | None:
        return None if self.points == 0 else self.points_found / self.points

    @property
    def precision(self) -> float | None:
        return None if self.events == 0 else self.events_right / self.events

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)

    def figures(self) -> dict[str, float | int | None]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def point_counts(
    points: Sequence[float], events: Sequence[tuple[float, float]], tolerance_seconds: float
) -> PointCounts:
    """Points in events ([start - tolerance, end + tolerance]), and events holding a point."""
    spans = [(start - tolerance_seconds, end + tolerance_seconds) for start, end in events]
    found = sum(any(a <= p <= b for a, b in spans) for p in points)
    right = sum(any(a <= p <= b for p in points) for a, b in spans)
    return PointCounts(found, len(points), right, len(events))


def boundary_counts(
    truth: Sequence[tuple[float, float]],
    predicted: Sequence[tuple[float, float]],
    tolerance_seconds: float,
    offset_share: float = 0.2,
) -> Counts:
    """Events matched on onset and offset (as DCASE's event-based F1): the onsets within the
    tolerance and the offsets within the larger of the tolerance and `offset_share` of the
    true event's length; one to one, greedily in onset order."""
    unmatched = sorted(truth)
    tp = 0
    for start, end in sorted(predicted):
        for k, (t_start, t_end) in enumerate(unmatched):
            offset_tolerance = max(tolerance_seconds, offset_share * (t_end - t_start))
            if abs(start - t_start) <= tolerance_seconds + 1e-9 and (
                abs(end - t_end) <= offset_tolerance + 1e-9
            ):
                tp += 1
                del unmatched[k]
                break
    return Counts(tp, len(predicted) - tp, len(unmatched))
