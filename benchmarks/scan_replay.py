"""CPU time of `scan`'s pipeline alone: everything but the model call, per window.

    python benchmarks/scan_replay.py --model /tmp/birdnet-bundle --seconds 600 --rate 44100

On a model that costs tens of milliseconds a window (BirdNET), scan against bare `predict`
(`soundwatch bench`) moves by a few percent between runs of the same code on a shared
machine, more than a cut of a tenth of a millisecond a window is worth. This times only what
scan adds: one real scan of synthetic audio (edge.bench.write_synthetic) records the model's
scores, then `--repeats` scans run with `predict` handing back those recorded scores (so rows
and events are the same as with the model), in CPU seconds of this process, best and all.
Pin it (`taskset -c 1`) and alternate two trees with PYTHONPATH to compare them.

`--with-model` times real scans instead, each followed by bare `predict` over the windows it
scored, in one process: scan's CPU, the model's share of it (timed inside scan) and the rest,
and the bare loop's CPU. Scan's own work costs more here than with replayed scores (BirdNET:
1.6 against 1.05 ms a window), since each model call leaves the caches cold for it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="bundle folder or bundled model's name")
    parser.add_argument("--seconds", type=float, default=600.0, help="synthetic audio, s")
    parser.add_argument("--rate", type=int, default=44100, help="synthetic audio rate, Hz")
    parser.add_argument("--repeats", type=int, default=5, help="timed scans")
    parser.add_argument("--with-model", action="store_true", help="real scans, then bare")
    args = parser.parse_args()

    from edge.bench import write_synthetic
    from edge.builders import build_analyzer
    from edge.config import load_config
    from edge.scan import SCAN_BATCH_WINDOWS, scan

    loaded = load_config(None)
    model = replace(loaded.config.model, path=args.model, threads=1)
    loaded = replace(loaded, config=replace(loaded.config, model=model))
    _, analyzer = build_analyzer(loaded, None, batch_windows=SCAN_BATCH_WINDOWS)
    backend = analyzer.backend
    real = backend.predict
    recorded: list[np.ndarray] = []

    def recording(batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        scores = real(batch, out)
        recorded.append(scores.copy())
        return scores

    calls = 0

    def replaying(batch: np.ndarray, out: np.ndarray | None = None) -> Any:
        nonlocal calls
        scores = recorded[calls % len(recorded)]
        calls += 1
        if out is None:
            return scores.copy()
        out[:] = scores
        return out

    with tempfile.TemporaryDirectory(prefix="scan-pipeline-") as tmp:
        audio = write_synthetic(Path(tmp) / "synthetic.wav", args.seconds, args.rate)
        backend.predict = recording  # type: ignore[method-assign]
        report = scan(analyzer, [audio], Path(tmp) / "out", device="bench", progress=False)
        if args.with_model:
            _with_model(args.repeats, analyzer, audio, Path(tmp), recorded, real)
            return
        backend.predict = replaying  # type: ignore[method-assign]
        seconds = []
        for i in range(args.repeats):
            began = time.process_time()
            scan(analyzer, [audio], Path(tmp) / f"out{i}", device="bench", progress=False)
            seconds.append(time.process_time() - began)
    best = min(seconds)
    per_window = best / report.windows * 1000
    shown = ", ".join(f"{s:.3f}" for s in seconds)
    print(f"{report.windows} windows: pipeline CPU {best:.3f} s best ({shown}),", end=" ")
    print(f"{per_window:.3f} ms a window")


def _with_model(
    repeats: int, analyzer: Any, audio: Path, tmp: Path, windows: list[np.ndarray], real: Any
) -> None:
    """Real scans, each followed by bare `predict` over its windows (kept by the first)."""
    from edge.scan import scan

    batches = _inputs(analyzer, audio, tmp, real)
    model = 0.0

    def timed(batch: np.ndarray, out: np.ndarray | None = None) -> Any:
        nonlocal model
        began = time.process_time()
        scores = real(batch, out)
        model += time.process_time() - began
        return scores

    analyzer.backend.predict = timed
    for i in range(repeats):
        model, began = 0.0, time.process_time()
        scan(analyzer, [audio], tmp / f"model{i}", device="bench", progress=False)
        scanned = time.process_time() - began
        began = time.process_time()
        for batch in batches:
            real(batch)
        bare = time.process_time() - began
        rest = (scanned - model) / len(windows) * 1000
        print(
            f"scan {scanned:.3f} s (model {model:.3f}, the rest {rest:.2f} ms a window),"
            f" bare {bare:.3f} s, bare/scan {bare / scanned:.4f}"
        )


def _inputs(analyzer: Any, audio: Path, tmp: Path, real: Any) -> list[np.ndarray]:
    """The model inputs of one scan of `audio`, copied."""
    from edge.scan import scan

    kept: list[np.ndarray] = []

    def keeping(batch: np.ndarray, out: np.ndarray | None = None) -> Any:
        kept.append(np.array(batch, copy=True))
        return real(batch, out)

    analyzer.backend.predict = keeping
    scan(analyzer, [audio], tmp / "inputs", device="bench", progress=False)
    return kept


if __name__ == "__main__":
    main()
