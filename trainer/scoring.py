"""Validation figures: precision-recall curves, per-label thresholds, counts, confusion.

Scores are judged per label, one against the rest, as the edge uses them (a label fires when its
probability reaches its threshold). Each label's threshold is the one where precision / recall
on the validation windows is closest to the asked ratio (1.0: precision equals recall), as
SongExplorer's `thresholds.csv`. Precision, recall and F1 are then counted at that threshold;
the macro F1 is their mean over labels with validation examples. In overlapped mode only the
windows whose target is known for a label count for that label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision and recall at each distinct score used as a threshold (score >= t is yes).

    Returns (thresholds descending, precision, recall); empty arrays without positives.
    """
    positives = int(truth.sum())
    if positives == 0 or len(scores) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each value
    thresholds = s[last]
    precision = tp[last] / (last + 1)
    recall = tp[last] / positives
    return thresholds, precision, recall


def choose_threshold(truth: np.ndarray, scores: np.ndarray, ratio: float) -> float:
    """The threshold where precision / recall is closest to `ratio` (on a log scale).

    It is placed halfway between the score it admits and the next lower score, so that small
    changes in scores (int8 quantization) do not flip decisions at the boundary. Ties go to the
    higher F1. A label without validation positives keeps 0.5.
    """
    thresholds, precision, recall = pr_curve(truth, scores)
    if len(thresholds) == 0:
        return 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(np.log(precision / recall) - math.log(ratio))
        f1 = 2 * precision * recall / (precision + recall)
    distance = np.nan_to_num(distance, nan=np.inf, posinf=np.inf)
    f1 = np.nan_to_num(f1)
    best = np.flatnonzero(distance == distance.min())
    i = int(best[np.argmax(f1[best])])
    lower = thresholds[i + 1] if i + 1 < len(thresholds) else 0.0
    return float(np.clip((thresholds[i] + lower) / 2, 0.0, 1.0))


def threshold_for_precision(
    truth: np.ndarray, scores: np.ndarray, precision: float
) -> float | None:
    """The lowest threshold at which precision reaches `precision` (the most recall there);
    placed halfway to the next lower score, as `choose_threshold`. None when none does."""
    thresholds, precisions, _ = pr_curve(truth, scores)
    reaching = np.flatnonzero(precisions >= precision - 1e-12)
    if len(reaching) == 0:
        return None
    i = int(reaching[-1])  # thresholds descend: the last is the lowest
    lower = thresholds[i + 1] if i + 1 < len(thresholds) else 0.0
    return float(np.clip((thresholds[i] + lower) / 2, 0.0, 1.0))


def counts_at(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """tp, fp, fn, support, precision, recall, f1 at `threshold` (score >= threshold is yes)."""
    said = scores >= threshold
    yes = truth == 1
    tp = int(np.sum(said & yes))
    fp = int(np.sum(said & ~yes))
    fn = int(np.sum(~said & yes))
    precision = tp / (tp + fp) if tp + fp else (1.0 if tp + fn else math.nan)
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else math.nan
    return {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": int(yes.sum()),
        "negatives": int((~yes).sum()),
    }


def score_labels(
    labels: list[str],
    y: np.ndarray,
    scores: np.ndarray,
    ratio: float,
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Thresholds and per-label figures on validation; `y` (n, labels) with NaN = unknown.
    With `thresholds` (chosen elsewhere, e.g. out of fold), the figures at those."""
    per_label: dict[str, Any] = {}
    for j, label in enumerate(labels):
        known = ~np.isnan(y[:, j])
        truth, s = y[known, j], scores[known, j]
        at = thresholds[label] if thresholds else choose_threshold(truth, s, ratio)
        per_label[label] = counts_at(truth, s, at)
    f1s = [m["f1"] for m in per_label.values() if not math.isnan(m["f1"])]
    out: dict[str, Any] = {
        "macro_f1": float(np.mean(f1s)) if f1s else math.nan,
        "per_label": per_label,
        "windows": len(y),
    }
    return out


def confusion(
    labels: list[str], y: np.ndarray, scores: np.ndarray, thresholds: dict[str, float], task: str
) -> tuple[list[str], list[str], np.ndarray]:
    """(row names, column names, counts).

    multiclass: true label by predicted label (the highest probability). multilabel: rows are
    what the window's annotation said (`<label>` or `not_<label>`), columns how many of those
    windows each label fired on (score >= its threshold), and `none`.
    """
    if task == "multiclass":
        matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(matrix, (np.argmax(y, axis=1), np.argmax(scores, axis=1)), 1)
        return list(labels), list(labels), matrix
    fired = scores >= np.array([thresholds[label] for label in labels])[None, :]
    rows: list[str] = []
    counts: list[np.ndarray] = []
    for value, name in ((1.0, "{}"), (0.0, "not {}")):
        for j, label in enumerate(labels):
            mask = y[:, j] == value
            if mask.any():
                rows.append(name.format(label))
                counts.append(np.r_[fired[mask].sum(axis=0), (~fired[mask].any(axis=1)).sum()])
    return rows, [*labels, "none"], np.array(counts, dtype=np.int64).reshape(len(rows), -1)


class FoldScores(Protocol):
    """What cross-validation reads of a fold (trainer.train.FoldResult has it)."""

    val_y: np.ndarray  # (N, labels) 1/0 targets, NaN where unknown
    scores: np.ndarray  # (N, labels) probabilities
    best_macro_f1: float
    best_epoch: int


def cross_validation(
    labels: list[str], results: Sequence[FoldScores], kept: int, ratio: float
) -> dict[str, Any]:
    """Mean and spread (population standard deviation) of the folds' validation F1."""
    per_fold: list[dict[str, Any]] = []
    for r in results:
        scored = score_labels(labels, r.val_y, r.scores, ratio)
        per_fold.append(
            {
                "macro_f1": r.best_macro_f1,
                "best_epoch": r.best_epoch,
                "per_label_f1": {k: m["f1"] for k, m in scored["per_label"].items()},
            }
        )

    def spread(values: list[float]) -> tuple[float, float]:
        v = np.array([x for x in values if not math.isnan(x)])
        return (float(v.mean()), float(v.std())) if len(v) else (math.nan, math.nan)

    macro_mean, macro_std = spread([f["macro_f1"] for f in per_fold])
    stats = {label: spread([f["per_label_f1"][label] for f in per_fold]) for label in labels}
    return {
        "folds": len(results),
        "macro_f1_mean": macro_mean,
        "macro_f1_std": macro_std,
        "per_label_f1_mean": {k: s[0] for k, s in stats.items()},
        "per_label_f1_std": {k: s[1] for k, s in stats.items()},
        "per_fold": per_fold,
        "kept_fold": kept + 1,
    }


def validation_macro(
    labels: list[str], truth: np.ndarray, scores: np.ndarray, ratio: float
) -> float:
    """Macro F1 of an epoch's validation scores, what keeps the best epoch: -inf when no label
    can be scored (NaN would compare as neither better nor worse)."""
    macro = float(score_labels(labels, truth, scores, ratio)["macro_f1"])
    return -math.inf if math.isnan(macro) else macro
