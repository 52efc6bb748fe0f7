"""Export: a trained PyTorch model -> a checked soundwatch bundle (ONNX fp32/int8, TFLite int8).

    model ──► ONNX fp32 (torch.onnx, dynamo) ──► ONNX int8 (onnxruntime static QDQ, per channel)
          └─► TFLite int8 (litert-torch, PT2E static, int8 input and output)
    each file ──► the edge's own runtime on the validation windows ──► figures, F1 guard
    manifest + model card ──► edge.model.bundle.load_bundle ──► rename into place
    + the float checkpoint and train.yaml, for `fit --init` (trainer/finetune.py)

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
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from edge.model.bundle import FORMAT, FrontendManifest, load_bundle, sha256_of
from trainer import convert
from trainer.card import model_card, plain, provenance
from trainer.checks import (
    DEFAULT_FORMATS,
    FILE_NAMES,
    MIN_GATE_POSITIVES,
    ExportError,
    FormatCheck,
    check_inputs,
    f1_per_label,
    guard,
    measure,
    round_figure,
    run_edge,
)
from trainer.config import dump
from trainer.model import SoundCNN, save_checkpoint
from trainer.quiet import quiet_native
from trainer.run import Trained

__all__ = ["DEFAULT_FORMATS", "MIN_GATE_POSITIVES", "ExportError", "ExportReport", "export_bundle"]

logger = logging.getLogger(__name__)

DEFAULT_LICENCE = "not stated (pass --licence with the licence of the training data)"


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
    progress: bool | None = None,
) -> ExportReport:
    """Write the bundle `out_dir` (manifest, model files, model card) of a trained run.

    Everything about the model comes from `run` (its resolved config gives labels, task, rate,
    window, hop, frontend and event defaults; its arrays the int8 calibration and validation
    windows). command: the export's own command line, shown after the run's fit command in
    the card's "reproduce" block. max_f1_drop: the most F1 (0.01 = one point) an int8 file may
    lose against the PyTorch model on any label with at least `min_positives` positive
    validation windows before the export fails (on fewer, one window moves F1 by more than a
    point, so a drop there is logged, not enforced). overwrite: replace a bundle already in
    `out_dir` (refused otherwise, as `fit` refuses an existing run). progress: a progress bar
    on stderr, one step per file converted and per file checked (None: when stderr is a
    terminal; a conversion takes seconds and the export tens of them). Raises ExportError
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
    window_shape = check_inputs(
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
    reference_f1 = f1_per_label(reference, validation_y, threshold_row, labels)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by the service's user
    shown = sys.stderr.isatty() if progress is None else progress
    # Steps: convert and check each file, then load the whole bundle once.
    bar = tqdm(total=2 * len(formats) + 1, unit="step", disable=not shown, leave=False)
    try:
        checks: list[FormatCheck] = []
        scores: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory() as work:
            fp32 = Path(work) / FILE_NAMES["onnx-fp32"]  # ONNX int8 starts from it
            # ONNX fp32 first when asked for, so its time is not counted as the int8's.
            ordered = sorted(formats, key=list(FILE_NAMES).index)
            for key in ordered:
                path = staging / FILE_NAMES[key]
                bar.set_description_str(f"converting {key}")
                t0 = time.perf_counter()
                with quiet_native(f"converting {key}"):
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
                bar.update()
                bar.set_description_str(f"checking {key}")
                with quiet_native(f"checking {key}"):
                    scores[key] = run_edge(key, path, validation_x, labels)
                bar.update()
                checks.append(
                    measure(
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
        guard(checks, max_f1_drop, min_positives, positives, out_dir)
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
            "frontend": dataclasses.asdict(FrontendManifest.of(frontend)),
            "output": {"activation": "none"},  # the model ends in its sigmoid or softmax
            "thresholds": {label: float(thresholds[label]) for label in labels},
            "threshold_rule": plain(run.threshold_rule),
            "events": plain(dataclasses.asdict(c.events)),
            "background": list(c.background or []),
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
                        "pytorch_f1": {k: round_figure(v) for k, v in reference_f1.items()},
                        **{c.key: c.figures() for c in checks},
                    },
                }
            ),
            "provenance": provenance(run.data_description),
        }
        # The float model and its config, for `fit --init` (trainer/finetune.py); the edge
        # does not read them. (Only the trainer's own network has a checkpoint format.)
        if isinstance(run.model, SoundCNN):
            save_checkpoint(staging / "checkpoint.pt", run.model)
            (staging / "train.yaml").write_text(dump(run.config))
        (staging / "manifest.yaml").write_text(
            yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        (staging / "README.md").write_text(
            model_card(manifest, report, run.data_description, command, licence), encoding="utf-8"
        )
        bar.set_description_str("loading the bundle")
        with quiet_native("loading the bundle"):
            _verify(staging, scores, validation_x)
        bar.update()
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - began
    return report


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
