"""The review -> retrain loop on generated audio, as a user runs it (tests and benchmarks/loop.py).

A first model learns `low` (500 Hz tones) against background noise and never hears the
distractor (a 250 Hz buzz, whose second harmonic is the low tone). Deployed on a recording
with both, it calls distractors `low`. A simulated reviewer (the truth standing in for a
person) goes through the detections in time order and judges each until it has marked N of
them `wrong`; the verdicts are stored and exported by the review's own code (edge/review), the
candidate is fine-tuned from the deployed bundle on the original annotations plus the verdicts
(`soundwatch-train fit --init`), and both bundles are measured on a fresh recording neither
heard.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.review.export import export
from edge.review.scanfolder import ScanFolder
from edge.review.store import VerdictStore
from tests.audio import tone_events, write_wav
from trainer import cli
from trainer.annotations import load_any
from trainer.evaluate import evaluate
from trainer.export import export_bundle
from trainer.run import load_run
from trainer.scanner import Scanner

RATE_HZ = 4000
LOW_HZ = 500.0
DISTRACTOR_HZ = (250.0, 500.0, 750.0, 1000.0, 1250.0)  # a buzz: it holds the low tone too
TINY: dict[str, dict[str, Any]] = {
    "model": {"channels": [4, 8], "convs_per_block": 1, "dropout": 0.0},
    "windows": {"windows_per_epoch": 256, "validation_windows": 3, "calibration_windows": 16},
    "training": {"epochs": 6, "batch_size": 32, "patience": 0, "threads": 1, "seed": 1},
}
Span = tuple[float, float]


def scene(
    path: Path, seconds: float, seed: int, distractors: bool
) -> tuple[list[Span], list[Span]]:
    """Write a recording of `low` tones (and, alternating, distractor tones) in noise; returns
    the (start, end) of the low tones and of the distractors."""
    rng = np.random.default_rng(seed)
    low: list[Span] = []
    other: list[Span] = []
    t, i = 0.4, 0
    while t < seconds - 1.2:
        duration = float(rng.uniform(0.3, 0.6))
        (other if distractors and i % 2 else low).append((t, t + duration))
        t += duration + float(rng.uniform(0.5, 0.9))
        i += 1
    tones = [(a, b, LOW_HZ) for a, b in low]
    tones += [(a, b, hz) for a, b in other for hz in DISTRACTOR_HZ]
    samples = tone_events(RATE_HZ, seconds, tones, noise_amplitude=0.02, tone_amplitude=0.3,
                          seed=seed)  # fmt: skip
    write_wav(path, samples, RATE_HZ)
    return low, other


def annotations_csv(path: Path, recording: Path, low: list[Span], label: str = "low") -> Path:
    """Plain CSV annotations of the low tones (dense: nothing else of interest is there)."""
    lines = ["file,start_seconds,end_seconds,label"]
    lines += [f"{recording},{a:.4f},{b:.4f},{label}" for a, b in low]
    path.write_text("\n".join(lines) + "\n")
    return path


def fit_and_export(folder: Path, args: list[str], name: str) -> Path:
    """`soundwatch-train fit` with `args` into `folder/run-<name>`, exported (ONNX fp32, which
    converts in seconds) to `folder/bundle-<name>`."""
    config = folder / "tiny.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    run = folder / f"run-{name}"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(["fit", *args, "--out", str(run), "-c", str(config), "--device", "cpu",
                         "-q", "--overwrite"])  # fmt: skip
    if code != 0:
        raise AssertionError(stderr.getvalue())
    (folder / f"fit-{name}.txt").write_text(stderr.getvalue())
    bundle = folder / f"bundle-{name}"
    with contextlib.redirect_stderr(io.StringIO()):
        export_bundle(load_run(run), bundle, name=name, version="1", formats=("onnx-fp32",),
                      overwrite=True, progress=False)  # fmt: skip
    return bundle


def first_model(folder: Path) -> Path:
    """The deployed bundle: `low` against background, no distractor ever heard."""
    recording = folder / "original.wav"
    low, _ = scene(recording, 40.0, seed=1, distractors=False)
    data = annotations_csv(folder / "original.csv", recording, low)
    return fit_and_export(folder, ["--data", str(data), "--dense", "--labels", "low"], "first")


Judge = Callable[[str, float, float], "bool | None"]
"""A simulated reviewer: (label, start s, end s) of a detection -> right (True), wrong
(False), or None when it cannot tell (the detection is skipped, as a person would)."""


def overlaps(low: list[Span]) -> Judge:
    """The reviewer of the generated worlds: right when a detection overlaps a true low tone."""
    return lambda label, start, end: any(a < end and b > start for a, b in low)


def review(
    bundle: Path,
    recording: Path,
    judge: Judge,
    wrong: int,
    folder: Path,
    relabel: str | None = None,
    reviewer: str = "simulated",
) -> Path:
    """Scan `recording` with `bundle`, judge its detections in time order until `wrong` of them
    are marked wrong, or relabelled as `relabel` when given; export the verdicts; returns the
    export folder."""
    scan_out = folder / "scan"
    with Scanner(bundle) as scanner:
        scanner.scan(recording, scan_out)
    source = ScanFolder(scan_out)
    store = VerdictStore(scan_out / "review.sqlite")
    given = 0
    for event in sorted(source.events(), key=lambda e: float(e["start_offset"])):
        if given >= wrong:
            break
        start, end = float(event["start_offset"]), float(event["end_offset"])
        right = judge(str(event["label"]), start, end)
        if right is None:
            continue
        if right or relabel is None:
            store.put(event["id"], "right" if right else "wrong", reviewer)
        else:
            store.put(event["id"], "relabel", reviewer, label=relabel)
        given += not right
    verdicts = store.all()
    store.close()
    exported = folder / "verdicts"
    export(source.events(), verdicts, exported)
    return exported


def fine_tune(
    deployed: Path, original: Path, verdicts: Path | None, folder: Path, name: str
) -> Path:
    """The candidate: `fit --init` the deployed bundle on the original annotations (dense)
    plus the exported verdicts."""
    args = ["--init", str(deployed), "--data", str(original), "--dense", "*original*"]
    if verdicts is not None:
        args += ["--data", str(verdicts)]
    return fit_and_export(folder, args, name)


def measure(
    bundle: Path, recording: Path, low: list[Span], folder: Path, label: str = "low"
) -> tuple[float, float]:
    """Event precision and recall of `label` (whose true spans are `low`) on `recording`
    (onsets within 0.2 s)."""
    truth = annotations_csv(folder / f"truth-{label}-{recording.stem}.csv", recording, low, label)
    report = evaluate(bundle, load_any(truth).annotations)
    counts = next(s.event for s in report.labels if s.label == label)
    return counts.precision or 0.0, counts.recall or 0.0
