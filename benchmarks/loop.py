"""The review -> retrain loop, measured: precision and recall against N wrong verdicts.

    python benchmarks/loop.py generated [--work DIR]
    python benchmarks/loop.py flysong --data ../shared/data/songexplorer [--work DIR]

generated: tests/loop.py's world (a `low` tone model that never heard a 250 Hz buzz), with a
240 s deployment recording so that 50 buzzes can be judged; each candidate is fine-tuned from
the deployed bundle with the first N wrong verdicts (and the right ones met on the way), and
measured on a fresh 120 s recording (event onsets within 0.2 s).

flysong: the SongExplorer recording cut by time (one annotated recording, so held out by time
block, not by recording): 0-70 s trains the first model (person1's annotations, as the bundled
model), 70-135 s is the deployment a simulated reviewer judges, 135-200 s the fresh test. The
reviewer is the annotations: an event is right when it holds an annotation of its label
(a pulse point within 0.1 s, a sine interval overlapping), wrong when it overlaps only
`ambient` or `not_<label>` annotations, and not judged otherwise (annotations are sparse).
Precision on the fresh block counts the judged events; recall the annotations found.
Each bundle is ONNX fp32 (the figures are the model's, not int8's).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import loop
from trainer.evaluate import read_events
from trainer.scanner import Scanner

COUNTS = (0, 10, 20, 50)


def generated(work: Path) -> list[dict[str, object]]:
    deployed = loop.first_model(work)
    low_b, _ = loop.scene(work / "deployed.wav", 240.0, seed=2, distractors=True)
    low_c, _ = loop.scene(work / "fresh.wav", 120.0, seed=3, distractors=True)
    rows: list[dict[str, object]] = []
    p, r = loop.measure(deployed, work / "fresh.wav", low_c, work)
    rows.append({"model": "deployed", "N": None, "precision": p, "recall": r})
    for n in COUNTS:
        sub = work / f"n{n}"
        sub.mkdir(exist_ok=True)
        verdicts = (
            loop.review(deployed, work / "deployed.wav", loop.overlaps(low_b), n, sub)
            if n
            else None
        )
        began = time.perf_counter()
        candidate = loop.fine_tune(deployed, work / "original.csv", verdicts, sub, f"n{n}")
        seconds = time.perf_counter() - began
        p, r = loop.measure(candidate, work / "fresh.wav", low_c, sub)
        rows.append({"model": "fit --init", "N": n, "precision": p, "recall": r,
                     "fit_export_seconds": round(seconds, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


# --- fly song ------------------------------------------------------------------------------------

BLOCKS = {"train": (0.0, 70.0), "deployed": (70.0, 135.0), "fresh": (135.0, 200.0)}
RECORDING = "PS_20130625111709_ch3.wav"
POINT_TOLERANCE_SECONDS = 0.1
Row = tuple[float, float, str]


def _annotations(data: Path) -> list[Row]:
    rate = sf.info(str(data / RECORDING)).samplerate
    rows = []
    for name in ("person1", "notsong"):
        with (data / f"{RECORDING}-annotated-{name}.csv").open(newline="") as f:
            for _wav, a, b, _, label in csv.reader(f):
                rows.append((int(a) / rate, int(b) / rate, label))
    return rows


def _cut(data: Path, work: Path, annotations: list[Row]) -> dict[str, tuple[Path, list[Row]]]:
    """Each time block as its own WAV, with its annotations shifted to it."""
    audio, rate = sf.read(str(data / RECORDING), dtype="float32")
    out = {}
    for name, (t0, t1) in BLOCKS.items():
        path = work / f"{name}.wav"
        sf.write(str(path), audio[round(t0 * rate) : round(t1 * rate)], rate, subtype="PCM_16")
        mine = [(a - t0, b - t0, x) for a, b, x in annotations if a >= t0 and b < t1]
        out[name] = (path, mine)
    return out


def _judge(label: str, start: float, end: float, truth: list[Row]) -> bool | None:
    """Right (an annotation of `label` in the event), wrong (only no-song there), or None."""
    for a, b, x in truth:
        if x != label:
            continue
        if b <= a and start - POINT_TOLERANCE_SECONDS <= a <= end + POINT_TOLERANCE_SECONDS:
            return True
        if b > a and a < end and b > start:
            return True
    negative = {"ambient", f"not_{label}"}
    if any(x in negative and a < end and b > start for a, b, x in truth):
        return False
    return None


def _write_csv(path: Path, recording: Path, rows: list[Row]) -> Path:
    lines = ["file,start_seconds,end_seconds,label"]
    lines += [f"{recording},{a:.4f},{b:.4f},{x}" for a, b, x in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _measure(bundle: Path, recording: Path, truth: list[Row], work: Path) -> dict[str, object]:
    with Scanner(bundle) as scanner:
        _, events_jsonl = scanner.scan(recording, work / f"scan-{bundle.name}")
    found = read_events(events_jsonl, ["mel-pulse", "mel-sine"])
    out: dict[str, object] = {}
    for label, spans in found.items():
        judged = [_judge(label, a, b, truth) for a, b in spans]
        right, wrong = judged.count(True), judged.count(False)
        mine = [(a, b) for a, b, x in truth if x == label]
        hit = sum(
            any(s - POINT_TOLERANCE_SECONDS <= a and b <= e + POINT_TOLERANCE_SECONDS
                if b <= a else (a < e and b > s) for s, e in spans)
            for a, b in mine
        )  # fmt: skip
        out[label] = {
            "precision": right / (right + wrong) if right + wrong else None,
            "recall": hit / len(mine) if mine else None,
            "right": right, "wrong": wrong, "unjudged": len(spans) - right - wrong,
            "annotations": len(mine), "found": hit,
        }  # fmt: skip
    return out


def flysong(data: Path, work: Path, first_epochs: int, epochs: int) -> list[dict[str, object]]:
    from trainer import cli
    from trainer.export import export_bundle
    from trainer.run import load_run

    blocks = _cut(data, work, _annotations(data))
    train_wav, train_rows = blocks["train"]
    positives = [row for row in train_rows if not row[2].startswith("not_")]
    original = _write_csv(work / "train.csv", train_wav, positives)

    def fit(args: list[str], name: str) -> Path:
        run = work / f"run-{name}"
        code = cli.main(["fit", *args, "--out", str(run), "--overwrite", "-q", "--seed", "0"])
        assert code == 0, name
        bundle = work / f"bundle-{name}"
        export_bundle(load_run(run), bundle, name=name, version="1", formats=("onnx-fp32",),
                      overwrite=True, progress=False)  # fmt: skip
        return bundle

    began = time.perf_counter()
    deployed = fit(["--data", str(original), "--epochs", str(first_epochs)], "first")
    print(f"first model: {time.perf_counter() - began:.0f} s", flush=True)
    fresh_wav, fresh_rows = blocks["fresh"]
    rows: list[dict[str, object]] = [
        {"model": "deployed", "N": None, **_measure(deployed, fresh_wav, fresh_rows, work)}
    ]
    print(rows[-1], flush=True)
    deploy_wav, deploy_rows = blocks["deployed"]
    for n in COUNTS:
        sub = work / f"n{n}"
        sub.mkdir(exist_ok=True)
        args = ["--init", str(deployed), "--data", str(original), "--epochs", str(epochs)]
        if n:
            judge = functools.partial(_judge, truth=deploy_rows)
            reviewed = loop.review(deployed, deploy_wav, judge, n, sub, reviewer="annotations")
            args += ["--data", str(reviewed)]
        began = time.perf_counter()
        candidate = fit(args, f"n{n}")
        row = {"model": "fit --init", "N": n, **_measure(candidate, fresh_wav, fresh_rows, sub)}
        row["fit_export_seconds"] = round(time.perf_counter() - began, 1)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("world", choices=["generated", "flysong"])
    p.add_argument("--data", type=Path, help="flysong: the SongExplorer data folder")
    p.add_argument("--work", type=Path, help="folder for runs and bundles (default: a temp one)")
    p.add_argument("--first-epochs", type=int, default=12, help="flysong: first model's epochs")
    p.add_argument("--epochs", type=int, default=5, help="flysong: fine-tuning epochs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.world == "generated":
            rows = generated(work)
        else:
            if args.data is None:
                p.error("flysong needs --data")
            rows = flysong(args.data, work, args.first_epochs, args.epochs)
    print(json.dumps(rows, indent=1, default=lambda x: float(np.round(x, 4))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
