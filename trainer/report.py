"""The report in the run folder: what the model is worth on validation, and why.

Files under `<run>/report/`: `summary.md`, `metrics.json`, `confusion.csv/.png`,
`pr_<label>.csv/.png`, `curves.csv/.png`, `thresholds.csv` (and `folds.csv` after k-fold).
The figures themselves (precision-recall curves, thresholds, confusion) come from
`trainer.scoring`. Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
Also here: the data paragraph for the model card and the training progress bar.
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

from trainer.scoring import choose_threshold, confusion, pr_curve

if TYPE_CHECKING:  # type names only: the report itself needs neither torch nor audio
    from trainer.config import TrainConfig
    from trainer.dataset import Audio, Examples
    from trainer.run import Trained

EXTRA_RATIOS = (0.5, 1.0, 2.0)  # thresholds.csv also lists these, to choose another at export


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
    by = {
        "recordings": "recording (stratified per label)",
        "blocks": f"{v.block_seconds:g} s blocks of each recording (stratified per label)",
    }.get(v.split, "annotation (stratified per label)")
    if n_folds > 1:
        how = f"{n_folds}-fold cross-validation by {by}; this model is fold {kept + 1}'s, held out:"
    elif v.split == "recordings":
        how = "whole recordings held out for validation (stratified per label):"
    elif v.split == "blocks":
        how = f"{v.share:.0%} of the {v.block_seconds:g} s blocks of each label held out:"
    else:
        how = f"{v.share:.0%} of each label's annotations held out for validation:"
    return (
        f"{len(audio.lengths)} recording(s) ({names}; {seconds:.0f} s at {audio.rate_hz} Hz),"
        f" {len(examples.items)} annotations ({counts}); {config.mode} classes; {how}"
        f" {held_text} ({config.windows.validation_windows} windows each); seed"
        f" {config.training.seed}; {_density(config)}"
    )


def _density(config: TrainConfig) -> str:
    """What the validation figures can say about false alarms on new recordings."""
    if config.dense:
        return (
            f"annotations dense ({', '.join(config.dense)}): unannotated audio trained and"
            " validated as none of the labels"
        )
    return (
        "annotations sparse (no --dense): unannotated audio was not used, so precision on new"
        " recordings cannot be judged from these figures"
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


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
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
    figure = new_figure(1.5 + 0.9 * len(columns), 1.2 + 0.6 * len(rows))
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
        figure = new_figure(4.5, 4.0)
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
    figure = new_figure(8.0, 3.5)
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
        f"Macro F1: **{_f(metrics['macro_f1'])}** on the validation windows (thresholds where"
        f" precision / recall is closest to {metrics['threshold_rule']['precision_recall_ratio']:g}"
        f" on the {metrics['threshold_rule'].get('chosen_on', 'validation windows')}).",
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
