"""Export: a trained PyTorch model -> a checked soundwatch bundle (ONNX fp32/int8, TFLite int8).

    model ──► ONNX fp32 (torch.onnx, dynamo) ──► ONNX int8 (onnxruntime static QDQ, per channel)
          └─► TFLite int8 (litert-torch, PT2E static, int8 input and output)
    each file ──► the edge's own runtime on the validation windows ──► figures, F1 guard
    manifest + model card ──► edge.model.bundle.load_bundle ──► rename into place

The model takes float32 log-mel windows (N, frames, mels) and returns probabilities (its
sigmoid or softmax included, so the manifest says `output: {activation: none}` and int8
outputs use the fixed [0, 1] quantization of TFLite's LOGISTIC). Every file is scored through
`edge.model.runtime.open_backend`, the code the device runs, not through the converter's own
interpreter, so the figures in the card are the ones a device gets. Everything is written into
a temporary folder beside the destination and renamed at the end: a failed export leaves no
half-written bundle, and an existing bundle is replaced only by a complete one.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.errors import SoundwatchError
from edge.model.bundle import FORMAT, load_bundle, sha256_of
from edge.model.frontend import LogMelSpec, n_frames
from edge.model.runtime import open_backend
from trainer import convert
from trainer.card import frontend_manifest, model_card, plain, provenance
from trainer.evaluate import f1_score
from trainer.run import Trained

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
DEFAULT_LICENCE = "not stated (pass --licence with the licence of the training data)"


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
            "max_abs_diff": _round(self.max_abs_diff),
            "decision_agreement": _round(self.agreement),
            "f1": {k: _round(v) for k, v in self.f1.items()},
            "f1_drop": {k: _round(v) for k, v in self.f1_drop.items()},
        }


@dataclass
class ExportReport:
    """What `export_bundle` wrote and measured. reference_f1: the PyTorch model's, per label;
    seconds: the whole export, wall time."""

    folder: Path
    labels: list[str]
    validation_windows: int
    reference_f1: dict[str, float | None]
    checks: list[FormatCheck]
    seconds: float = 0.0

    def table(self) -> str:
        """A fixed-width table, one row per format (PyTorch first), for the terminal."""
        head = f"{'format':<12} {'size':>9} {'time':>6} {'max diff':>9} {'agree':>7}"
        head += "".join(f" {'F1 ' + label:>14}" for label in self.labels)
        rows = [head, f"{'pytorch':<12} {'':>9} {'':>6} {'':>9} {'':>7}" + self._f1s(None)]
        for c in self.checks:
            rows.append(
                f"{c.key:<12} {c.size_bytes / 1024:>7.1f}KB {c.export_seconds:>5.1f}s"
                f" {c.max_abs_diff:>9.4f} {c.agreement:>7.2%}" + self._f1s(c)
            )
        return "\n".join(rows)

    def _f1s(self, check: FormatCheck | None) -> str:
        f1 = self.reference_f1 if check is None else check.f1
        return "".join(f" {'-' if f1[k] is None else f'{f1[k]:.4f}':>14}" for k in self.labels)


def export_bundle(
    run: Trained,
    out_dir: Path,
    *,
    name: str,
    version: str,
    command: str = "",
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    max_f1_drop: float = 0.01,
    min_positives: int = MIN_GATE_POSITIVES,
    licence: str = DEFAULT_LICENCE,
    overwrite: bool = False,
) -> ExportReport:
    """Write the bundle `out_dir` (manifest, model files, model card) of a trained run.

    Everything about the model comes from `run` (its resolved config gives labels, task, rate,
    window, hop, frontend and event defaults; its arrays the int8 calibration and validation
    windows). command: the export's own command line, shown after the run's fit command in
    the card's "reproduce" block. max_f1_drop: the most F1 (0.01 = one point) an int8 file may
    lose against the PyTorch model on any label with at least `min_positives` positive
    validation windows before the export fails (on fewer, one window moves F1 by more than a
    point, so a drop there is logged, not enforced). overwrite: replace a bundle already in
    `out_dir` (refused otherwise, as `fit` refuses an existing run). Raises ExportError
    (nothing written) when a check fails.
    """
    c = run.config
    if c.hop_seconds is None:
        raise ExportError(f"cannot export to {out_dir}: the run's config is not resolved (no hop)")
    labels, thresholds = list(c.labels), run.thresholds
    sample_rate_hz, frontend = c.frontend.sample_rate_hz, c.frontend
    window_seconds, hop_seconds = c.window_seconds, c.hop_seconds
    calibration, validation_x, validation_y = run.calibration, run.validation_x, run.validation_y
    command = "\n".join(line for line in (run.command, command) if line)
    began = time.perf_counter()
    out_dir = Path(out_dir)
    window_shape = _check_inputs(
        out_dir,
        labels,
        c.task,
        sample_rate_hz,
        window_seconds,
        hop_seconds,
        frontend,
        thresholds,
        calibration,
        validation_x,
        validation_y,
        formats,
        overwrite,
    )
    model = copy.deepcopy(run.model).float().cpu().eval()
    convert.explicit_padding(model)
    reference = convert.predict_torch(model, validation_x)
    threshold_row = np.array([thresholds[label] for label in labels], np.float32)
    reference_f1 = _f1_per_label(reference, validation_y, threshold_row, labels)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by the service's user
    try:
        checks: list[FormatCheck] = []
        scores: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory() as work:
            fp32 = Path(work) / FILE_NAMES["onnx-fp32"]  # ONNX int8 starts from it
            # ONNX fp32 first when asked for, so its time is not counted as the int8's.
            for key in sorted(formats, key=list(FILE_NAMES).index):
                path = staging / FILE_NAMES[key]
                t0 = time.perf_counter()
                if key == "tflite-int8":
                    convert.write_tflite_int8(model, path, calibration, window_shape)
                else:
                    if not fp32.is_file():
                        convert.write_onnx_fp32(model, fp32, window_shape)
                    if key == "onnx-int8":
                        convert.write_onnx_int8(fp32, path, calibration)
                    else:
                        shutil.copyfile(fp32, path)
                seconds = time.perf_counter() - t0
                scores[key] = _run_edge(key, path, validation_x, labels)
                checks.append(
                    _measure(
                        key,
                        path,
                        seconds,
                        scores[key],
                        reference,
                        validation_y,
                        threshold_row,
                        labels,
                        reference_f1,
                    )
                )
        positives = {
            label: int(np.nansum(validation_y[:, j] > 0.5)) for j, label in enumerate(labels)
        }
        _guard(checks, max_f1_drop, min_positives, positives, out_dir)
        report = ExportReport(out_dir, list(labels), len(validation_x), reference_f1, checks)
        manifest = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "labels": list(labels),
            "task": c.task,
            "sample_rate": int(sample_rate_hz),
            "window_seconds": float(window_seconds),
            "hop_seconds": float(hop_seconds),
            "frontend": frontend_manifest(frontend),
            "output": {"activation": "none"},  # the model ends in its sigmoid or softmax
            "thresholds": {label: float(thresholds[label]) for label in labels},
            "threshold_rule": plain(run.threshold_rule),
            "events": plain(dataclasses.asdict(c.events)),
            "files": {
                c.key: {"path": c.path, "sha256": sha256_of(staging / c.path)} for c in checks
            },
            "metrics": plain(
                {
                    **run.metrics,
                    "export": {
                        "validation_windows": len(validation_x),
                        "max_f1_drop_allowed": max_f1_drop,
                        "min_positives_for_gate": min_positives,
                        "validation_positives": positives,
                        "pytorch_f1": {k: _round(v) for k, v in reference_f1.items()},
                        **{c.key: c.figures() for c in checks},
                    },
                }
            ),
            "provenance": provenance(run.data_description),
        }
        (staging / "manifest.yaml").write_text(
            yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        (staging / "README.md").write_text(
            model_card(manifest, report, run.data_description, command, licence), encoding="utf-8"
        )
        _verify(staging, scores, validation_x)
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - began
    return report


# --------------------------------------------------------------------------------- checks


def _check_inputs(
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


def _run_edge(key: str, path: Path, windows: np.ndarray, labels: list[str]) -> np.ndarray:
    """Scores of one file as the device computes them (edge.model.runtime, int8 IO
    handled there)."""
    backend = open_backend(key, path, feature_shape=windows.shape[1:], n_labels=len(labels))
    try:
        return backend.predict(windows.astype(np.float32)).copy()
    finally:
        backend.close()


def _f1_per_label(
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


def _measure(
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
    f1 = _f1_per_label(scores, targets, thresholds, labels)
    # Undefined F1 (nothing to find, nothing found) counts as 1: perfect, for the drop.
    drop = {k: _or_one(reference_f1[k]) - _or_one(f1[k]) for k in labels}
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


def _guard(
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
                f"{_fmt(_or_one(c.f1[label]) + drop)} -> int8 {_fmt(c.f1[label])} on "
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
            f"--max-f1-drop {_allowing(checks, max_f1_drop)}, or export only "
            "--formats onnx-fp32)"
        )


def _allowing(checks: list[FormatCheck], max_f1_drop: float) -> str:
    """The smallest --max-f1-drop that would let every measured drop pass, as text."""
    worst = max(drop for c in checks if c.key.endswith("int8") for drop in c.f1_drop.values())
    return f"{max(max_f1_drop, math.ceil(worst * 100) / 100):g}"


def _verify(staging: Path, scores: dict[str, np.ndarray], windows: np.ndarray) -> None:
    """Load the bundle as the edge does and re-score a few windows with each file."""
    bundle = load_bundle(staging)
    sample = windows[: min(len(windows), 64)].astype(np.float32)
    for key, expected in scores.items():
        backend = bundle.open(key)
        try:
            got = backend.predict(sample)
        finally:
            backend.close()
        if not np.allclose(got, expected[: len(sample)], atol=1e-6):
            raise ExportError(
                f"{staging / FILE_NAMES[key]}: scores changed when loaded as a bundle"
            )


def _install(staging: Path, out_dir: Path) -> None:
    """Rename the finished bundle into place; an old bundle there goes only after that."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else value


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
