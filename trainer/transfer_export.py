"""Export a `fit --backbone` run as a two-stage bundle: the backbone file, then the head.

    backbone file (copied, hash checked) ─┐
    head ──► ONNX fp32 ──► ONNX int8 ─────┴─► manifest (`backbone:` block) + card

The bundle's `frontend`, rate and window are the backbone's; its `files` are the head only, and
the manifest's `backbone` block names the backbone file and its embedding (README, "Transfer
learning"). The int8 head is checked through the edge's runtime on the validation embeddings
and refused by the same F1 guard as a CNN's; the whole bundle is then loaded as the edge
loads it, and each head file re-scored through the two-stage backend.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from edge.model.backbone import load_backbone
from edge.model.bundle import FORMAT, FrontendManifest, load_bundle, sha256_of
from trainer import convert
from trainer.card import model_card, plain, provenance
from trainer.checks import (
    FILE_NAMES,
    MIN_GATE_POSITIVES,
    ExportError,
    FormatCheck,
    f1_per_label,
    guard,
    measure,
    round_figure,
    run_edge,
)
from trainer.export import ExportReport, _install
from trainer.quiet import quiet_native
from trainer.transfer import TransferRun

HEAD_FORMATS = ("onnx-int8", "onnx-fp32")


def export_transfer(
    run: TransferRun,
    out_dir: Path,
    *,
    name: str,
    version: str,
    command: str = "",
    formats: tuple[str, ...] = HEAD_FORMATS,
    max_f1_drop: float = 0.01,
    min_positives: int = MIN_GATE_POSITIVES,
    licence: str = "not stated",
    overwrite: bool = False,
) -> ExportReport:
    """Write the two-stage bundle `out_dir`; ExportError (nothing written) when a check fails."""
    began = time.perf_counter()
    t, c = run.trained, run.trained.config
    unknown = [f for f in formats if f not in HEAD_FORMATS]
    if unknown or not formats:
        raise ExportError(f"formats {list(formats)}: a head exports as {', '.join(HEAD_FORMATS)}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} already holds files; choose another --bundle or --overwrite")
    backbone = load_backbone(run.backbone_manifest)
    if backbone.sha256 != run.backbone_sha256:
        raise ExportError(
            f"{backbone.file}: the backbone changed since fit (sha256 {backbone.sha256[:12]}…,"
            f" fit used {run.backbone_sha256[:12]}…); fit again"
        )
    labels = list(c.labels)
    model = copy.deepcopy(t.model).float().cpu().eval()
    reference = convert.predict_torch(model, t.validation_x)
    threshold_row = np.array([t.thresholds[label] for label in labels], np.float32)
    reference_f1 = f1_per_label(reference, t.validation_y, threshold_row, labels)
    shape = (t.validation_x.shape[1],)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        checks: list[FormatCheck] = []
        fp32 = staging / FILE_NAMES["onnx-fp32"]
        for key in sorted(formats, key=list(FILE_NAMES).index):
            path = staging / FILE_NAMES[key]
            t0 = time.perf_counter()
            with quiet_native(f"converting {key}"):
                if not fp32.is_file():
                    convert.write_onnx_fp32(model, fp32, shape)  # type: ignore[arg-type]
                if key == "onnx-int8":
                    convert.write_onnx_int8(fp32, path, t.calibration)
            scores = run_edge(key, path, t.validation_x, labels)
            checks.append(
                measure(
                    key,
                    path,
                    time.perf_counter() - t0,
                    scores,
                    reference,
                    t.validation_y,
                    threshold_row,
                    labels,
                    reference_f1,
                )
            )
        if "onnx-fp32" not in formats:
            fp32.unlink()
        positives = {
            label: int(np.nansum(t.validation_y[:, j] > 0.5)) for j, label in enumerate(labels)
        }
        guard(checks, max_f1_drop, min_positives, positives, out_dir)
        block = dataclasses.replace(
            backbone.block, path=f"backbone{backbone.file.suffix}", sha256=backbone.sha256
        )
        shutil.copyfile(backbone.file, staging / block.path)
        m = backbone.manifest
        report = ExportReport(out_dir, labels, len(t.validation_x), reference_f1, checks)
        manifest = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "labels": labels,
            "task": c.task,
            "sample_rate": m.sample_rate,
            "window_seconds": m.window_samples / m.sample_rate,
            "hop_seconds": float(c.hop_seconds or 0),
            "frontend": _frontend(m.frontend),
            "output": {"activation": "none"},
            "thresholds": {label: float(t.thresholds[label]) for label in labels},
            "threshold_rule": plain(t.threshold_rule),
            "events": plain(dataclasses.asdict(c.events)),
            "background": list(c.background or []),
            "backbone": dataclasses.asdict(block),
            "files": {
                x.key: {"path": x.path, "sha256": sha256_of(staging / x.path)} for x in checks
            },
            "metrics": plain(
                {
                    **t.metrics,
                    "export": {
                        "validation_windows": len(t.validation_x),
                        "validation_positives": positives,
                        "pytorch_f1": {k: round_figure(v) for k, v in reference_f1.items()},
                        **{x.key: x.figures() for x in checks},
                    },
                }
            ),
            "provenance": provenance(t.data_description),
        }
        (staging / "manifest.yaml").write_text(
            yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        command = "\n".join(line for line in (t.command, command) if line)
        (staging / "README.md").write_text(
            model_card(manifest, report, t.data_description, command, licence), encoding="utf-8"
        )
        with quiet_native("loading the bundle"):
            _verify(staging, checks)
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - began
    return report


def _frontend(f: FrontendManifest) -> dict[str, object]:
    """The backbone's frontend block as the manifest writes it (waveform: just the kind)."""
    if f.kind == "waveform":
        return {"kind": "waveform"}
    return dataclasses.asdict(f)


def _verify(staging: Path, checks: list[FormatCheck]) -> None:
    """Load the bundle as the edge does and run every head file through both stages once."""
    bundle = load_bundle(staging)
    window = np.zeros((2, *bundle.feature_shape), np.float32)
    for check in checks:
        backend = bundle.open(check.key)
        try:
            scores = backend.predict(window)
        finally:
            backend.close()
        if scores.shape != (2, len(bundle.labels)) or not np.all(np.isfinite(scores)):
            raise ExportError(f"{staging}: {check.key} gives no usable scores through the backbone")
