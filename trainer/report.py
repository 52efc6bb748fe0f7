"""Validation figures and the report in the run folder: what the model is worth, and why.

Scores are judged per label, one against the rest, as the edge uses them (a label fires when its
probability reaches its threshold). Each label's threshold is the one where precision / recall
on the validation windows is closest to the asked ratio (1.0: precision equals recall), as
SongExplorer's `thresholds.csv`. Precision, recall and F1 are then counted at that threshold;
the macro F1 is their mean over labels with validation examples. In overlapped mode only the
windows whose target is known for a label count for that label.

Files under `<run>/report/`: `summary.md`, `metrics.json`, `confusion.csv/.png`,
`pr_<label>.csv/.png`, `curves.csv/.png`, `thresholds.csv` (and `folds.csv` after k-fold).
Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # type names only: the report itself needs neither torch nor audio
    from trainer.config import TrainConfig
    from trainer.dataset import Audio, Examples
    from trainer.train import Trained

EXTRA_RATIOS = (0.5, 1.0, 2.0)  # thresholds.csv also lists these, to choose another at export


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
    labels: list[str], y: np.ndarray, scores: np.ndarray, ratio: float
) -> dict[str, Any]:
    """Thresholds and per-label figures on validation; `y` (n, labels) with NaN = unknown."""
    per_label: dict[str, Any] = {}
    for j, label in enumerate(labels):
        known = ~np.isnan(y[:, j])
        truth, s = y[known, j], scores[known, j]
        per_label[label] = counts_at(truth, s, choose_threshold(truth, s, ratio))
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


def cross_validation(
    labels: list[str], results: list[dict[str, Any]], kept: int, ratio: float
) -> dict[str, Any]:
    """Mean and spread (population standard deviation) of the folds' validation F1."""
    per_fold = []
    for r in results:
        scored = score_labels(labels, r["val_y"], r["scores"], ratio)
        per_fold.append(
            {
                "macro_f1": r["best"]["macro_f1"],
                "best_epoch": r["best"]["epoch"],
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


def describe_data(
    config: TrainConfig,
    examples: Examples,
    split: tuple[np.ndarray, np.ndarray],
    kept: int,
    n_folds: int,
    audio: Audio,
) -> str:
    """One paragraph for the model card: the recordings, annotations, classes and split."""
    seconds = sum(audio.lengths.values()) / audio.rate_hz
    names = ", ".join(p.name for p in audio.lengths)
    counts = ", ".join(f"{n} {g}" for g, n in examples.counts().items() if n)
    held = np.bincount([examples.items[i].group for i in split[1]], minlength=len(examples.groups))
    held_text = ", ".join(f"{n} {g}" for g, n in zip(examples.groups, held, strict=True) if n)
    v = config.validation
    if n_folds > 1:
        by = "recording" if v.split == "recordings" else "annotation (stratified per label)"
        how = f"{n_folds}-fold cross-validation by {by}; this model is fold {kept + 1}'s, held out:"
    elif v.split == "recordings":
        how = "whole recordings held out for validation:"
    else:
        how = f"{v.share:.0%} of each label's annotations held out for validation:"
    return (
        f"{len(audio.lengths)} recording(s) ({names}; {seconds:.0f} s at {audio.rate_hz} Hz),"
        f" {len(examples.items)} annotations ({counts}); {config.mode} classes; {how}"
        f" {held_text} ({config.windows.validation_windows} windows each); seed"
        f" {config.training.seed}"
    )


class ProgressBar:
    """One progress line on stderr, redrawn a few times a second (for terminals)."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total, self._drawn = title, total, 0.0

    def update(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self._drawn < 0.2 and done < self.total:
            return
        self._drawn = now
        filled = round(20 * done / self.total)
        sys.stderr.write(
            f"\r{self.title} [{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total}"
            f" loss {loss:.4f}  "
        )
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


# --- files ----------------------------------------------------------------------------------------


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", label)


def clean(value: Any) -> Any:
    """JSON-ready: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: Any) -> str:
    return json.dumps(clean(value), indent=2, allow_nan=False)


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def write_report(
    folder: Path, trained: Trained, scores: np.ndarray, summary_lines: list[str]
) -> None:
    """Write every report file for a run: its validation targets and the model's `scores`."""
    labels, task, y = trained.config.labels, trained.config.task, trained.validation_y
    thresholds, metrics, history = trained.thresholds, trained.metrics, trained.history
    ratio = float(trained.threshold_rule["precision_recall_ratio"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(to_json(metrics) + "\n")

    rows, columns, matrix = confusion(labels, y, scores, thresholds, task)
    _write_csv(
        folder / "confusion.csv",
        ["true \\ predicted", *columns],
        [[r, *m] for r, m in zip(rows, matrix.tolist(), strict=True)],
    )
    figure = _figure(1.5 + 0.9 * len(columns), 1.2 + 0.6 * len(rows))
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted" if task == "multiclass" else "fired (score >= threshold)")
    ax.set_ylabel("annotated")
    figure.savefig(folder / "confusion.png")

    for j, label in enumerate(labels):
        known = ~np.isnan(y[:, j])
        t, p, r = pr_curve(y[known, j], scores[known, j])
        _write_csv(
            folder / f"pr_{_safe(label)}.csv",
            ["threshold", "precision", "recall"],
            [[f"{a:.6g}", f"{b:.6g}", f"{c:.6g}"] for a, b, c in zip(t, p, r, strict=True)],
        )
        figure = _figure(4.5, 4.0)
        ax = figure.add_subplot()
        ax.plot(r, p, drawstyle="steps-post")
        chosen = metrics["per_label"][label]
        if chosen["recall"] is not None and not math.isnan(chosen["recall"]):
            ax.plot(
                [chosen["recall"]],
                [chosen["precision"]],
                "o",
                label=f"threshold {thresholds[label]:.3f}",
            )
            ax.legend(loc="lower left")
        ax.set(
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1.02),
            ylim=(0, 1.02),
            title=f"{label}: precision-recall on validation",
        )
        figure.savefig(folder / f"pr_{_safe(label)}.png")

    keys = [
        "fold",
        "epoch",
        "train_loss",
        "validation_loss",
        "validation_macro_f1",
        "learning_rate",
        "seconds",
    ]
    _write_csv(folder / "curves.csv", keys, [[h.get(k) for k in keys] for h in history])
    figure = _figure(8.0, 3.5)
    loss_ax, f1_ax = figure.subplots(1, 2)
    for fold in sorted({h["fold"] for h in history}):
        rows_f = [h for h in history if h["fold"] == fold]
        epochs = [h["epoch"] for h in rows_f]
        name = f"fold {fold}" if len({h["fold"] for h in history}) > 1 else ""
        loss_ax.plot(epochs, [h["train_loss"] for h in rows_f], label=f"train {name}".strip())
        loss_ax.plot(
            epochs, [h["validation_loss"] for h in rows_f], "--", label=f"validation {name}".strip()
        )
        f1_ax.plot(epochs, [h["validation_macro_f1"] for h in rows_f], label=name or None)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend(fontsize=7)
    f1_ax.set(xlabel="epoch", ylabel="macro F1", ylim=(0, 1.02), title="validation macro F1")
    figure.savefig(folder / "curves.png")

    known_ratios = sorted({*EXTRA_RATIOS, ratio})
    table = [
        [
            f"{r:g}",
            *(f"{choose_threshold(*_known(y, scores, j), r):.6g}" for j in range(len(labels))),
        ]
        for r in known_ratios
    ]
    _write_csv(folder / "thresholds.csv", ["precision/recall", *labels], table)

    cv = metrics.get("cross_validation")
    if cv:
        _write_csv(
            folder / "folds.csv",
            ["fold", "macro_f1", *labels],
            [
                [i + 1, f["macro_f1"], *(f["per_label_f1"][lab] for lab in labels)]
                for i, f in enumerate(cv["per_fold"])
            ],
        )
    (folder / "summary.md").write_text(summary(labels, metrics, summary_lines))


def _known(y: np.ndarray, scores: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(y[:, j])
    return y[known, j], scores[known, j]


def summary(labels: list[str], metrics: dict[str, Any], lines: list[str]) -> str:
    """The Markdown summary: how the run was made, then the figures per label."""
    out = ["# Training report", "", *lines, ""]
    out += [
        "| label | precision | recall | F1 | threshold | validation windows (yes / no) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label in labels:
        m = metrics["per_label"][label]
        out.append(
            f"| {label} | {_f(m['precision'])} | {_f(m['recall'])} | {_f(m['f1'])} |"
            f" {m['threshold']:.3f} | {m['support']} / {m['negatives']} |"
        )
    out += [
        "",
        f"Macro F1: **{_f(metrics['macro_f1'])}** (thresholds where precision / recall"
        f" is closest to {metrics['threshold_rule']['precision_recall_ratio']:g}).",
    ]
    cv = metrics.get("cross_validation")
    if cv:
        mean, std = cv["per_label_f1_mean"], cv["per_label_f1_std"]
        per = ", ".join(f"{lab} {_f(mean[lab])} ± {_f(std[lab])}" for lab in labels)
        out += [
            "",
            f"Cross-validation over {cv['folds']} folds: macro F1"
            f" {_f(cv['macro_f1_mean'])} ± {_f(cv['macro_f1_std'])} (mean ± standard"
            f" deviation); per label: {per}. The run keeps fold {cv['kept_fold']}'s model"
            " (the best macro F1), so the figures above are its own and read high; the"
            " mean over folds is the honest estimate.",
        ]
    out += [
        "",
        "Plots: `confusion.png`, `curves.png`, "
        + ", ".join(f"`pr_{_safe(lab)}.png`" for lab in labels)
        + ".",
        "",
    ]
    return "\n".join(out)
