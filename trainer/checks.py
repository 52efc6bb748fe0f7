"""What export measures of each file, and what makes it refuse: inputs, int8 F1 loss.

Every file is scored through `edge.model.runtime.open_backend`, the code the device runs, so
the figures are the ones a device gets. The F1 guard compares each int8 file with the PyTorch
model at the run's thresholds, on labels with enough positive windows to tell a loss from noise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import SoundwatchError
from edge.model.frontend import LogMelSpec, n_frames
from edge.model.runtime import open_backend
from trainer.measures import f1_score

logger = logging.getLogger(__name__)

FILE_NAMES = {
    "onnx-fp32": "model.fp32.onnx",
    "onnx-int8": "model.int8.onnx",
    "tflite-int8": "model.int8.tflite",
}
DEFAULT_FORMATS = ("onnx-int8", "tflite-int8", "onnx-fp32")
MIN_GATE_POSITIVES = 50
"""Positive validation windows a label needs before the int8 F1 guard may refuse an export:
at 50, one window decided differently moves F1 by about one point, the default allowed drop."""


class ExportError(SoundwatchError):
    """The export failed a check or cannot start; names the file and the figures."""


@dataclass(frozen=True)
class FormatCheck:
    """One exported file measured through the edge's runtime on the validation windows.

    max_abs_diff: largest |score - PyTorch score| over all windows and labels (probability).
    agreement: share of (window, label) decisions at the thresholds equal to PyTorch's (0..1).
    f1: per label at the thresholds, on windows whose target is known; None when undefined
    (no positives in truth nor in prediction). f1_drop: PyTorch's F1 minus this file's (0.01
    is one point; positive means worse), an undefined F1 counting as 1.
    """

    key: str
    path: str
    size_bytes: int
    export_seconds: float
    max_abs_diff: float
    agreement: float
    f1: dict[str, float | None]
    f1_drop: dict[str, float]

    def figures(self) -> dict[str, Any]:
        """The manifest's `metrics.export.<key>` entry."""
        return {
            "size_bytes": self.size_bytes,
            "export_seconds": round(self.export_seconds, 2),
            "max_abs_diff": round_figure(self.max_abs_diff),
            "decision_agreement": round_figure(self.agreement),
            "f1": {k: round_figure(v) for k, v in self.f1.items()},
            "f1_drop": {k: round_figure(v) for k, v in self.f1_drop.items()},
        }


def check_inputs(
    out_dir: Path,
    labels: list[str],
    task: str,
    sample_rate_hz: int,
    window_seconds: float,
    hop_seconds: float,
    frontend: LogMelSpec,
    thresholds: dict[str, float],
    calibration: np.ndarray,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    formats: tuple[str, ...],
    overwrite: bool,
) -> tuple[int, int]:
    """Refuse, before any work, what the edge would refuse at the end; (frames, mels)."""
    problems = []
    unknown = [f for f in formats if f not in FILE_NAMES]
    if unknown or not formats:
        problems.append(f"formats {list(formats)}: choose from {', '.join(FILE_NAMES)}")
    if task not in ("multilabel", "multiclass"):
        problems.append(f"task {task!r}: must be multilabel or multiclass")
    missing = [label for label in labels if label not in thresholds]
    if missing:
        problems.append(f"no threshold for label(s) {', '.join(missing)}")
    if frontend.sample_rate_hz != sample_rate_hz:
        problems.append(
            f"frontend rate {frontend.sample_rate_hz} Hz differs from sample rate "
            f"{sample_rate_hz} Hz"
        )
    hop = round(hop_seconds * sample_rate_hz)
    if hop < 1 or hop % frontend.hop_length:
        problems.append(
            f"hop_seconds {hop_seconds} is {hop} samples, not a positive multiple of the "
            f"frontend's hop_length ({frontend.hop_length})"
        )
    shape = (n_frames(round(window_seconds * sample_rate_hz), frontend), frontend.n_mels)
    for what, array in (("calibration", calibration), ("validation_x", validation_x)):
        if array.ndim != 3 or array.shape[1:] != shape or len(array) == 0:
            problems.append(f"{what} has shape {array.shape}, expected (N, {shape[0]}, {shape[1]})")
    if validation_y.shape != (len(validation_x), len(labels)):
        problems.append(
            f"validation_y has shape {validation_y.shape}, expected "
            f"({len(validation_x)}, {len(labels)})"
        )
    if out_dir.exists() and not (
        out_dir.is_dir() and ((out_dir / "manifest.yaml").is_file() or not any(out_dir.iterdir()))
    ):
        problems.append(f"{out_dir} exists and is not a bundle folder: not replacing it")
    elif out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        problems.append(
            f"{out_dir} already holds a bundle; choose another --bundle or pass --overwrite"
        )
    if problems:
        raise ExportError(f"cannot export to {out_dir}: " + "; ".join(problems))
    return shape


def run_edge(key: str, path: Path, windows: np.ndarray, labels: list[str]) -> np.ndarray:
    """Scores of one file as the device computes them (edge.model.runtime, int8 IO
    handled there)."""
    backend = open_backend(key, path, feature_shape=windows.shape[1:], n_labels=len(labels))
    try:
        return backend.predict(windows.astype(np.float32)).copy()
    finally:
        backend.close()


def f1_per_label(
    scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, labels: list[str]
) -> dict[str, float | None]:
    """F1 at the thresholds per label, over windows whose target is known (not NaN)."""
    decided = scores >= thresholds
    out: dict[str, float | None] = {}
    for j, label in enumerate(labels):
        known = ~np.isnan(targets[:, j])
        truth = targets[known, j] > 0.5
        pred = decided[known, j]
        tp = int(np.sum(truth & pred))
        out[label] = f1_score(tp, int(np.sum(~truth & pred)), int(np.sum(truth & ~pred)))
    return out


def measure(
    key: str,
    path: Path,
    seconds: float,
    scores: np.ndarray,
    reference: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    labels: list[str],
    reference_f1: dict[str, float | None],
) -> FormatCheck:
    f1 = f1_per_label(scores, targets, thresholds, labels)
    # Undefined F1 (nothing to find, nothing found) counts as 1: perfect, for the drop.
    drop = {k: or_one(reference_f1[k]) - or_one(f1[k]) for k in labels}
    return FormatCheck(
        key=key,
        path=path.name,
        size_bytes=path.stat().st_size,
        export_seconds=seconds,
        max_abs_diff=float(np.max(np.abs(scores - reference))),
        agreement=float(np.mean((scores >= thresholds) == (reference >= thresholds))),
        f1=f1,
        f1_drop=drop,
    )


def guard(
    checks: list[FormatCheck],
    max_f1_drop: float,
    min_positives: int,
    positives: dict[str, int],
    out_dir: Path,
) -> None:
    """Fail loudly when an int8 file loses more than `max_f1_drop` F1 on a well-measured label.

    A label with fewer than `min_positives` positive validation windows is not gated: there,
    one window decided differently moves F1 by more than a point (1 of 25 positives: about 2
    points), so the drop says more about the sample than about the file. It is logged instead.
    """
    failures = []
    for c in checks:
        if not c.key.endswith("int8"):
            continue
        for label, drop in c.f1_drop.items():
            if drop <= max_f1_drop + 1e-9:
                continue
            text = (
                f"{c.path} loses {100 * drop:.1f} points of F1 on '{label}' (fp32 "
                f"{fmt(or_one(c.f1[label]) + drop)} -> int8 {fmt(c.f1[label])} on "
                f"{positives[label]} positive windows; max diff {c.max_abs_diff:.4f}, "
                f"decisions agreeing {c.agreement:.2%})"
            )
            if positives[label] >= min_positives:
                failures.append(text)
            else:
                logger.warning(
                    "%s: not enforced, fewer than %d positive windows (--min-positives)",
                    text,
                    min_positives,
                )
    if failures:
        raise ExportError(
            f"export to {out_dir} failed, nothing written: "
            + "; ".join(failures)
            + f" (allowed drop: {100 * max_f1_drop:g} F1 points, checked on labels with at "
            f"least {min_positives} positive validation windows; to accept this loss pass "
            f"--max-f1-drop {allowing(checks, max_f1_drop)}, or export only "
            "--formats onnx-fp32)"
        )


def allowing(checks: list[FormatCheck], max_f1_drop: float) -> str:
    """The smallest --max-f1-drop that would let every measured drop pass, as text."""
    worst = max(drop for c in checks if c.key.endswith("int8") for drop in c.f1_drop.values())
    return f"{max(max_f1_drop, math.ceil(worst * 100) / 100):g}"


def round_figure(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def or_one(value: float | None) -> float:
    return 1.0 if value is None else value


def fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
