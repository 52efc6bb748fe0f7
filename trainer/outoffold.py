"""Thresholds chosen out of fold, on the stream, at fit.

A threshold chosen on validation windows sees annotated windows only, a handful of seconds per
label, and lands where those windows separate (near 0 for a softmax model), not where the
edge's per-second scores of whole recordings, unannotated audio included, separate (issue 12).
So `fit` splits the training recordings into k folds by recording, or, with fewer annotated
recordings than folds, by time blocks of each recording (`validation.block_seconds`), as
`trainer.splits` deals them; k models each train on k-1 folds and score the held-out fold's
whole recordings, window by window on the edge's window grid; the edge's own
`SecondAggregator` turns those windows into per-second maxima, as `scan` and the live daemon
do. The seconds of all folds are pooled and each label's threshold is where per-second
precision / recall is closest to the ratio asked for (`scoring.choose_threshold`, the rule
`calibrate` applies to held-out recordings). A label with fewer than `MIN_TRUE_SECONDS` true
seconds keeps its validation threshold, and the fit says so.

Every unannotated second counts as none of the labels. With sparse annotations that calls
unmarked sounds false alarms and pushes thresholds up; the report gives the share of seconds
that hold an annotation, to judge by. A time block without annotations is scored by the model
that holds out its block number modulo k (no model trained on its windows, but an annotation
from the block before may reach into it). The CNN takes its k folds' models (`--folds k` by
recordings or blocks), or, with one such split, its validation model, which scores only the
recordings or blocks it held out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.detection.seconds import SecondAggregator
from edge.records import ANALYSED, SecondRow, StreamInfo
from trainer.annotations import Annotation
from trainer.calibrate import MIN_TRUE_SECONDS
from trainer.dataset import DataError, Examples
from trainer.measures import true_seconds
from trainer.scoring import choose_threshold, counts_at
from trainer.splits import splits

Unit = tuple[str, int]  # (recording, time block; 0 for a whole recording)


@dataclass(frozen=True)
class Folds:
    """How the training recordings are dealt for out-of-fold scores."""

    how: str  # "recordings" or "blocks"
    block_seconds: float
    pairs: list[tuple[np.ndarray, np.ndarray]]  # (train, held-out) example indices per fold
    fold_of_unit: dict[Unit, int]

    def fold_of(self, recording: Path, centres_s: np.ndarray) -> np.ndarray:
        """The fold that holds out each window (by its centre, s) of `recording`; -1 where
        none does (a single split's training audio)."""
        k = len(self.pairs)
        if self.how == "recordings":
            fold = self.fold_of_unit.get((str(recording), 0), -1)
            return np.full(len(centres_s), fold, dtype=np.int64)
        blocks = (centres_s // self.block_seconds).astype(np.int64).tolist()
        # A block without annotations: k folds score it by its number; one split leaves it.
        return np.array(
            [self.fold_of_unit.get((str(recording), b), b % k if k > 1 else -1) for b in blocks],
            dtype=np.int64,
        )


def deal(examples: Examples, k: int, seed: int, block_seconds: float) -> Folds:
    """k folds by recording when there are k annotated recordings or more, else by time block
    (DataError when even the blocks are fewer than k)."""
    recordings = {str(e.annotation.recording) for e in examples.items}
    how = "recordings" if len(recordings) >= k else "blocks"
    blocks = {
        (str(e.annotation.recording), e.annotation.start_seconds // block_seconds)
        for e in examples.items
    }
    if how == "blocks" and len(blocks) < k:
        raise DataError(
            f"{k} folds need {k} annotated recordings, or {k} stretches of {block_seconds:g} s"
            f" with annotations (validation.block_seconds); these hold {len(recordings)} and"
            f" {len(blocks)}"
        )
    return from_pairs(
        examples, how, block_seconds, splits(examples, how, 0.2, k, seed, block_seconds)
    )


def from_pairs(
    examples: Examples, how: str, block_seconds: float, pairs: list[tuple[np.ndarray, np.ndarray]]
) -> Folds:
    """The folds of a split by recordings or blocks (`trainer.splits`), with the unit each
    fold holds out."""
    fold_of_unit: dict[Unit, int] = {}
    for fold, (_, held) in enumerate(pairs):
        for i in held:
            a = examples.items[i].annotation
            block = int(a.start_seconds // block_seconds) if how == "blocks" else 0
            fold_of_unit[(str(a.recording), block)] = fold
    return Folds(how, block_seconds, pairs, fold_of_unit)


@dataclass(frozen=True)
class Grid:
    """The edge's windows over a recording: `window_seconds` long, one every `hop_samples` at
    `rate_hz`, window i starting at sample i * hop (a partial last window is not scored)."""

    window_seconds: float
    hop_samples: int
    rate_hz: int

    def count(self, length_samples: int) -> int:
        """Whole windows in a recording of `length_samples`."""
        window = round(self.window_seconds * self.rate_hz)
        return 0 if length_samples < window else 1 + (length_samples - window) // self.hop_samples

    def centres(self, n: int) -> np.ndarray:
        """Centres of the first `n` windows, s from the recording's start."""
        return np.arange(n) * (self.hop_samples / self.rate_hz) + self.window_seconds / 2


@dataclass
class Scored:
    """One recording's analysed seconds, scored by the models that did not train on them."""

    recording: Path
    seconds: np.ndarray  # int64 (n,): second i covers [i, i + 1) s of the recording
    scores: np.ndarray  # float32 (n, labels): the max over windows centred in it


def per_second(
    recording: Path,
    centres_s: np.ndarray,
    scores: np.ndarray,
    window_seconds: float,
    end_seconds: float,
) -> Scored:
    """Window scores (in time order) into the edge's per-second rows; the analysed ones."""
    rows: list[SecondRow] = []
    info = StreamInfo(str(recording), [], None, 0)
    aggregator = SecondAggregator(info, scores.shape[1], rows.append, window_seconds)
    aggregator.add(centres_s, scores.astype(np.float32, copy=False))
    aggregator.close(end_seconds)
    kept = [r for r in rows if r.status == ANALYSED]
    seconds = np.array([round(r.offset_seconds) for r in kept], dtype=np.int64)
    matrix = np.array([r.scores for r in kept], dtype=np.float32).reshape(-1, scores.shape[1])
    return Scored(recording, seconds, matrix)


@dataclass(frozen=True)
class Choice:
    """One label's threshold and what it rests on."""

    label: str
    threshold: float
    validation_threshold: float
    true_seconds: int
    seconds: int
    events: int  # annotations of the label in the scored recordings
    recordings: int  # scored recordings holding the label
    chosen: bool  # False: too few true seconds, the validation threshold stays
    f1: float  # per-second F1 out of fold at `threshold`
    f1_validation: float  # ... at the validation threshold

    def line(self) -> str:
        rests = (
            f"{self.true_seconds} true of {self.seconds} s, {self.events} annotations in"
            f" {self.recordings} recording(s)"
        )
        if not self.chosen:
            return (
                f"WARNING {self.label}: kept the validation threshold"
                f" {self.validation_threshold:.3g}: only {rests} out of fold; at least"
                f" {MIN_TRUE_SECONDS} true seconds are needed"
            )
        return (
            f"{self.label}: {self.threshold:.3g} (validation's {self.validation_threshold:.3g});"
            f" out-of-fold per-second F1 {_f(self.f1)} (validation's {_f(self.f1_validation)});"
            f" rests on {rests}"
        )


@dataclass
class OutOfFold:
    """The thresholds chosen out of fold, and what the choice rests on."""

    how: str
    folds: int
    choices: list[Choice]
    seconds: int
    seconds_annotated: int
    skipped: list[str] = field(default_factory=list)  # background labels: no events

    @property
    def thresholds(self) -> dict[str, float]:
        return {c.label: c.threshold for c in self.choices}

    def rule(self, ratio: float) -> dict[str, Any]:
        """The bundle's `threshold_rule`: how the thresholds were chosen and on what."""
        return {
            "precision_recall_ratio": ratio,
            "chosen_on": f"out-of-fold per-second scores of the training recordings ({self.folds}"
            f" folds by {self.how}; {self.seconds} s, {self.seconds_annotated} of them annotated)",
            "rests_on": {
                c.label: {
                    "true_seconds": c.true_seconds,
                    "seconds": c.seconds,
                    "events": c.events,
                    "recordings": c.recordings,
                    "chosen": c.chosen,
                    "validation_threshold": round(c.validation_threshold, 6),
                    "out_of_fold_f1": c.f1,
                    "out_of_fold_f1_at_validation_threshold": c.f1_validation,
                }
                for c in self.choices
            },
        }

    def lines(self) -> list[str]:
        share = self.seconds_annotated / self.seconds if self.seconds else 0.0
        folds = f"{self.folds} folds by {self.how}" if self.folds > 1 else f"{self.how} held out"
        head = (
            f"thresholds chosen out of fold: {folds}, {self.seconds} s"
            f" scored as the edge scores them, {self.seconds_annotated} ({share:.0%}) hold an"
            " annotation (every other second counts as none of the labels)"
        )
        tail = [f"{x}: background, keeps its validation threshold" for x in self.skipped]
        return [head, *(c.line() for c in self.choices), *tail]


def choose(
    labels: Sequence[str],
    scored: Sequence[Scored],
    annotations: Sequence[Annotation],
    ratio: float,
    validation: dict[str, float],
    folds: Folds,
    background: Sequence[str] = (),
) -> OutOfFold:
    """Each label's threshold on the pooled seconds (its validation threshold when it has
    fewer than MIN_TRUE_SECONDS true seconds)."""
    by_recording: dict[str, list[Annotation]] = {}
    for a in annotations:
        by_recording.setdefault(str(a.recording), []).append(a)
    choices, annotated = [], 0
    for j, label in enumerate(labels):
        if label in background:
            continue
        truth, values = [np.zeros(0, dtype=bool)], [np.zeros(0, dtype=np.float32)]
        events = holding = 0
        for s in scored:
            mine = [a for a in by_recording.get(str(s.recording), []) if a.label == label]
            true = true_seconds([(a.start_seconds, a.end_seconds) for a in mine])
            truth.append(np.isin(s.seconds, list(true)))
            values.append(s.scores[:, j])
            events, holding = events + len(mine), holding + bool(mine)
        t, v = np.concatenate(truth), np.concatenate(values)
        n_true = int(t.sum())
        chosen = n_true >= MIN_TRUE_SECONDS
        before = validation[label]
        after = choose_threshold(t, v, ratio) if chosen else before
        choices.append(
            Choice(
                label,
                after,
                before,
                n_true,
                len(t),
                events,
                holding,
                chosen,
                _nan(counts_at(t, v, after)["f1"]),
                _nan(counts_at(t, v, before)["f1"]),
            )
        )
    kept = [a for a in annotations if a.label in labels and a.label not in background]
    for s in scored:
        spans = [
            (a.start_seconds, a.end_seconds) for a in kept if str(a.recording) == str(s.recording)
        ]
        annotated += int(np.isin(s.seconds, list(true_seconds(spans))).sum())
    seconds = sum(len(s.seconds) for s in scored)
    skipped = [x for x in labels if x in background]
    return OutOfFold(folds.how, len(folds.pairs), choices, seconds, annotated, skipped)


def threshold_lines(oof: OutOfFold | None, validation_windows: int) -> list[str]:
    """The report's paragraph on how the thresholds were chosen."""
    if oof is None:
        return [
            "",
            f"Thresholds: chosen on the {validation_windows} validation windows (annotated"
            " audio only; see README, How thresholds are chosen).",
        ]
    first, *rest = oof.lines()
    return ["", f"T{first[1:]}.", "", *(f"- {line}" for line in rest), ""]


def _nan(value: float) -> float:
    return math.nan if value is None else float(value)


def _f(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
