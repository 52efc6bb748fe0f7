"""Thresholds on real held-out recordings: as exported, after `calibrate`, and the best there is.

    python benchmarks/thresholds.py --esc50 ../shared/data/esc50-odd \
        --backbone-file ../shared/data/backbones/yamnet/yamnet.tflite --work /tmp/thresholds

Issue 12 asks that the README's path give thresholds within a few points of the best
achievable on recordings the model never saw. For each fold of the ESC-50 subset (grouped by
source recording, as in benchmarks/transfer.py): `fit --backbone` (YAMNet, linear head) on the
other folds' clips and `export`; the fold's held-out sources are dealt, per class, alternately
to a calibration half and a test half. On the test half, `evaluate` gives each label's
per-second (segment) F1 at the exported thresholds and the best F1 over all thresholds; then
`calibrate --data <calibration half>` sets the thresholds and `evaluate` runs again. Every
clip is dense (all five seconds are its class), so every other label's seconds are negatives.
Prints per fold the macro segment F1 over the labels with true seconds in the test half, and
what it rests on (labels, seconds, clips); beside it one threshold of 0.5 for every label, and
each label's best on the test half itself (an upper bound that overfits a few seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import YAMNET, folds_of, run  # a sibling script, not a package

TRAIN = [sys.executable, "-m", "trainer.cli"]


def write_annotations(path: Path, audio: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "start_seconds", "end_seconds", "label"])
        for r in rows:
            out.writerow([audio / r["filename"], 0.0, 5.0, r["category"]])
    return path


def halves(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Each class's sources dealt alternately to (calibration, test); a class with one source
    goes to the test half (it is scored, never calibrated on)."""
    sources: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["src_file"] not in sources[r["category"]]:
            sources[r["category"]].append(r["src_file"])
    to_test = {s for names in sources.values() for i, s in enumerate(sorted(names)) if i % 2 == 0}
    calibration = [r for r in rows if r["src_file"] not in to_test]
    return calibration, [r for r in rows if r["src_file"] in to_test]


def macro(evaluation: Path) -> dict[str, float]:
    """Macro segment F1 at the bundle's thresholds, at one threshold of 0.5 for every label
    (from evaluate's curves), and at each label's best, over the labels with true seconds;
    and the seconds it rests on."""
    report = json.loads(evaluation.read_text())
    labels = {k: v for k, v in report["labels"].items() if v["best_segment"] is not None}
    return {
        "labels": len(labels),
        "seconds": report["seconds_scored"],
        "at_threshold": sum(v["segment"]["f1"] or 0.0 for v in labels.values()) / len(labels),
        "at_half": sum(f1_at(evaluation.parent / f"segment-pr-{k}.csv", 0.5) for k in labels)
        / len(labels),
        "best": sum(v["best_segment"]["f1"] for v in labels.values()) / len(labels),
    }


def f1_at(curve: Path, threshold: float) -> float:
    """Segment F1 at `threshold` from a curve CSV (thresholds descending)."""
    with curve.open() as f:
        reached = [r for r in csv.DictReader(f) if float(r["threshold"]) >= threshold]
    if not reached:
        return 0.0
    p, r = float(reached[-1]["precision"]), float(reached[-1]["recall"])
    return 2 * p * r / (p + r) if p + r else 0.0


def evaluate(bundle: Path, data: Path, out: Path) -> dict[str, float]:
    run([*TRAIN, "evaluate", "--model", str(bundle), "--data", str(data), "--out", str(out)])
    return macro(out / "evaluation.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--esc50", required=True, type=Path, help="the esc50-odd folder")
    p.add_argument("--backbone-file", required=True, type=Path, help="yamnet.tflite")
    p.add_argument("--work", required=True, type=Path, help="folder for runs and bundles")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--only", help="comma-separated fold numbers to run (default: all)")
    args = p.parse_args()
    work = args.work.resolve()
    backbone = work / "yamnet"
    backbone.mkdir(parents=True, exist_ok=True)
    link = backbone / args.backbone_file.name
    if not link.exists():
        link.symlink_to(args.backbone_file.resolve())
    (backbone / "backbone.yaml").write_text(YAMNET.format(file=link.name))
    audio = args.esc50 / "audio"
    with (args.esc50 / "meta.csv").open() as f:
        meta = list(csv.DictReader(f))
    fold_of = folds_of(meta, args.folds)
    chosen = [int(x) - 1 for x in args.only.split(",")] if args.only else range(args.folds)
    print(
        "| fold | labels | test s (clips) | calibration clips | exported | calibrated"
        " | 0.5 for all | each label's best |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in chosen:
        kept = [r for r in meta if fold_of[r["src_file"]] != k]
        calibration, test = halves([r for r in meta if fold_of[r["src_file"]] == k])
        train = write_annotations(work / f"train{k}.csv", audio, kept)
        cal = write_annotations(work / f"calibrate{k}.csv", audio, calibration)
        held = write_annotations(work / f"test{k}.csv", audio, test)
        fitted, bundle = work / f"run{k}", work / f"bundle{k}"
        run([*TRAIN, "fit", "--data", str(train), "--out", str(fitted), "-q", "--overwrite",
             "--backbone", str(backbone), "--cache", str(work / "cache")])  # fmt: skip
        run([*TRAIN, "export", str(fitted), "--bundle", str(bundle), "--overwrite", "-q",
             "--formats", "onnx-int8"])  # fmt: skip
        exported = evaluate(bundle, held, work / f"eval{k}-exported")
        calibrated_bundle = work / f"bundle{k}-calibrated"
        shutil.rmtree(calibrated_bundle, ignore_errors=True)
        shutil.copytree(bundle, calibrated_bundle)
        subprocess.run([*TRAIN, "calibrate", "--model", str(calibrated_bundle), "--data", str(cal)],
                       check=True)  # fmt: skip
        calibrated = evaluate(calibrated_bundle, held, work / f"eval{k}-calibrated")
        print(
            f"| {k + 1} | {exported['labels']} | {exported['seconds']} ({len(test)}) |"
            f" {len(calibration)} | {exported['at_threshold']:.3f} |"
            f" {calibrated['at_threshold']:.3f} | {exported['at_half']:.3f} |"
            f" {exported['best']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
