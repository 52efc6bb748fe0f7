"""Transfer learning against training from scratch on ESC-50 clips, held out by source recording.

    python benchmarks/transfer.py --esc50 ../shared/data/esc50-odd \
        --backbone-file ../shared/data/backbones/yamnet/yamnet.tflite --work /tmp/transfer-bench

For each of `--folds` folds (clips grouped by `src_file`, each class's sources dealt round-robin
so every class is held out in every fold): `soundwatch-train fit` from scratch and `fit
--backbone` on the other folds' clips (each clip annotated as one interval of its class), both
exported (ONNX int8 + fp32), and each held-out clip classified by its bundle through the edge's
runtime: window scores averaged over the clip, the top label wins. Prints a Markdown table of
clip accuracy and fit time per fold, then `soundwatch bench` of both bundles on the clips (x
real time and peak RSS). With `--songexplorer DIR` (the fly-song data) instead of `--esc50`:
`fit` from scratch and on YAMNet, both validated on 30 s blocks of the recording, and their
validation figures. The YAMNet manifest (`backbone.yaml`) is written into the work folder
beside a link to the model file. Fit and export run as the commands a user types.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge.model.bundle import load_bundle
from trainer.dataset import read_mono, window_features

YAMNET = """backbone:
  name: yamnet
  licence: Apache-2.0
  source: https://www.kaggle.com/models/google/yamnet/tfLite/classification-tflite
  path: {file}
  embedding: yamnet_frames/global_average_pooling2d/Mean
  size: 1024
sample_rate: 16000
window_samples: 15600
frontend:
  kind: waveform
"""


def folds_of(meta: list[dict[str, str]], k: int) -> dict[str, int]:
    """src_file -> fold: each class's sources in order, dealt round-robin."""
    sources: dict[str, list[str]] = defaultdict(list)
    for row in meta:
        if row["src_file"] not in sources[row["category"]]:
            sources[row["category"]].append(row["src_file"])
    return {s: i % k for names in sources.values() for i, s in enumerate(sorted(names))}


def run(command: list[str]) -> float:
    """Run a command, fail loudly; its wall time in seconds."""
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def clip_accuracy(bundle_dir: Path, clips: list[tuple[Path, str]]) -> float:
    """Share of clips whose mean window score is highest for their own label."""
    bundle = load_bundle(bundle_dir)
    model = bundle.open()
    keep = [i for i, x in enumerate(bundle.labels) if x not in bundle.manifest.background]
    right = 0
    for path, label in clips:
        signal = read_mono(path, bundle.sample_rate_hz)
        w, hop = bundle.window_samples, bundle.hop_samples
        n = 1 + max(0, -(-(len(signal) - w) // hop))
        padded = np.zeros((n - 1) * hop + w, np.float32)
        padded[: len(signal)] = signal
        windows = padded[np.arange(n)[:, None] * hop + np.arange(w)]
        x = windows if bundle.logmel is None else window_features(windows, bundle.logmel)
        scores = model.predict(x).mean(axis=0)
        right += bundle.labels[keep[int(np.argmax(scores[keep]))]] == label
    model.close()
    return right / len(clips)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--esc50", type=Path, help="the esc50-odd folder")
    p.add_argument("--songexplorer", type=Path, help="the fly-song data (instead of --esc50)")
    p.add_argument("--backbone-file", required=True, type=Path, help="yamnet.tflite")
    p.add_argument("--work", required=True, type=Path, help="folder for runs and bundles")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--head", default="linear", choices=["linear", "mlp"])
    p.add_argument("--only", help="comma-separated fold numbers to run (default: all)")
    p.add_argument("--methods", default="scratch,yamnet", help="which to run (default: both)")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    backbone = work / "yamnet"
    backbone.mkdir(exist_ok=True)
    link = backbone / args.backbone_file.name
    if not link.exists():
        link.symlink_to(args.backbone_file.resolve())
    (backbone / "backbone.yaml").write_text(YAMNET.format(file=link.name))
    if args.songexplorer:
        flysong(args, work, backbone)
        return
    with (args.esc50 / "meta.csv").open() as f:
        meta = list(csv.DictReader(f))
    fold_of = folds_of(meta, args.folds)
    train = [sys.executable, "-m", "trainer.cli"]
    rows = []
    chosen = [int(x) - 1 for x in args.only.split(",")] if args.only else range(args.folds)
    for k in chosen:
        held = [r for r in meta if fold_of[r["src_file"]] == k]
        kept = [r for r in meta if fold_of[r["src_file"]] != k]
        annotations = work / f"train{k}.csv"
        with annotations.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["file", "start_seconds", "end_seconds", "label"])
            for r in kept:
                out.writerow([args.esc50 / "audio" / r["filename"], 0.0, 5.0, r["category"]])
        clips = [(args.esc50 / "audio" / r["filename"], r["category"]) for r in held]
        result = {"fold": k + 1, "train": len(kept), "test": len(held)}
        methods = {
            "scratch": ["--rate", "16000"],
            "yamnet": ["--backbone", str(backbone), "--cache", str(work / "cache"),
                       "--head", args.head],
        }  # fmt: skip
        for name in args.methods.split(","):
            extra = methods[name]
            out_dir, bundle = work / f"{name}{k}", work / f"{name}{k}.bundle"
            fit = [*train, "fit", "--data", str(annotations), "--out", str(out_dir), "-q"]
            result[f"{name}_fit_s"] = run([*fit, "--overwrite", *extra])
            run([*train, "export", str(out_dir), "--bundle", str(bundle), "--overwrite", "-q",
                 "--formats", "onnx-int8,onnx-fp32"])  # fmt: skip
            result[f"{name}_accuracy"] = clip_accuracy(bundle, clips)
            metrics = json.loads((out_dir / "run.json").read_text())["metrics"]
            result[f"{name}_train_s"] = metrics.get("head_train_seconds", metrics["train_seconds"])
        rows.append(result)
        print(rows[-1], flush=True)
    names = args.methods.split(",")
    print(
        "\n| fold | train clips | test clips |"
        + "".join(f" {n} accuracy | {n} fit s | {n} training s |" for n in names)
    )
    print("|---:|---:|---:|" + "---:|---:|---:|" * len(names))
    for r in rows:
        cells = "".join(
            f" {r[n + '_accuracy']:.1%} | {r[n + '_fit_s']:.1f} | {r[n + '_train_s']:.1f} |"
            for n in names
        )
        print(f"| {r['fold']} | {r['train']} | {r['test']} |{cells}")
    n = sum(r["test"] for r in rows)
    for name in names:
        acc = sum(r[f"{name}_accuracy"] * r["test"] for r in rows) / n
        print(f"{name}: accuracy over all {n} held-out clips {acc:.1%}")
    for name in names:
        print(f"\n== soundwatch bench --model {name}0.bundle on the clips", flush=True)
        subprocess.run(
            [sys.executable, "-m", "edge.cli", "bench", "--model", str(work / f"{name}0.bundle"),
             "--files", str(args.esc50 / "audio")],
            check=True,
        )  # fmt: skip


def flysong(args: argparse.Namespace, work: Path, backbone: Path) -> None:
    """Scratch and YAMNet on the fly-song recording, validated on 30 s blocks of it."""
    train = [sys.executable, "-m", "trainer.cli", "fit", "--data", str(args.songexplorer)]
    common = ["--validation", "blocks", "-q", "--overwrite"]
    for name, extra in (
        ("yamnet", ["--backbone", str(backbone), "--cache", str(work / "cache")]),
        ("scratch", []),
    ):
        out = work / f"fly-{name}"
        seconds = run([*train, "--out", str(out), *common, *extra])
        metrics = json.loads((out / "run.json").read_text())["metrics"]
        f1 = ", ".join(f"{k} {v['f1']:.3f}" for k, v in metrics["per_label"].items())
        print(f"{name}: fit {seconds:.1f} s, validation macro F1 {metrics['macro_f1']:.3f} ({f1})")


if __name__ == "__main__":
    main()
