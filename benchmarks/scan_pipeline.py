"""CPU seconds `scan` spends around `predict`: the pipeline's own share, which is what
`soundwatch bench`'s scan/bare ratio measures but without bare inference's noise.

    python benchmarks/scan_pipeline.py models/flysong --file-key tflite-int8 --seconds 1800

Pins itself to one core (`--cpu`, default 1), writes synthetic audio at `--rate` (the bench's
tone bursts in noise), scans it `--repeats` times with the real `edge.scan.scan` and prints, per
run, scan's CPU seconds, those inside the backend's `predict`, and the difference: the
pipeline (reading, frontend, cutting windows, rows, events, files), and CPU seconds of its
stages (each method timed by a wrapper; the stages nest: `deliver` holds `seconds.add`,
`bank.feed` and `publish`, which holds writing events). The machine may be shared: compare
runs of one invocation, or alternate two checkouts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

# One BLAS thread, set before numpy loads (main imports it), as `soundwatch bench` does: a
# second thread on a pinned core only spins.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="bundle folder")
    parser.add_argument("--file-key", default="tflite-int8")
    parser.add_argument("--seconds", type=float, default=1800.0)
    parser.add_argument("--rate", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=1)
    args = parser.parse_args()
    os.sched_setaffinity(0, [args.cpu])

    from edge.bench import write_synthetic
    from edge.builders import build_analyzer
    from edge.config import load_config
    from edge.scan import scan

    loaded = load_config(None)
    c = loaded.config
    model = replace(c.model, path=args.model, file=args.file_key, threads=1)
    loaded = replace(loaded, config=replace(c, model=model))
    _, analyzer = build_analyzer(loaded, None, batch_windows=256)
    seconds: dict[str, float] = defaultdict(float)
    _time_stages(seconds)
    backend = analyzer.backend
    backend.predict = _timed(backend.predict, "predict", seconds)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="scan-pipeline-") as tmp:
        wav = Path(tmp) / "synthetic.wav"
        write_synthetic(wav, args.seconds, args.rate)
        print(f"{args.file_key}, {args.seconds:g} s at {args.rate} Hz, CPU {args.cpu}")
        for run in range(args.repeats):
            seconds.clear()
            began = time.process_time()
            scan(analyzer, [wav], Path(tmp) / "out", device="bench", progress=False)
            total = time.process_time() - began
            stages = " ".join(f"{k} {v:.3f}" for k, v in sorted(seconds.items()))
            pipeline = total - seconds["predict"]
            print(f"run {run}: scan {total:.3f}, pipeline {pipeline:.3f}; {stages}")


def _timed(method: Callable[..., Any], name: str, seconds: dict[str, float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[name] += time.process_time() - began

    return timed


def _time_stages(seconds: dict[str, float]) -> None:
    """Wrap the pipeline's per-block methods (at most a few calls a block: the wrapper's cost
    is noise) so that each adds its CPU seconds to `seconds`."""
    from edge.detection.analysis import Analyzer
    from edge.detection.bank import DetectorBank
    from edge.detection.seconds import SecondAggregator
    from edge.model.frontend import StreamingLogMel

    for cls, name, label in (
        (StreamingLogMel, "push", "frontend"),
        (Analyzer, "_append", "append"),
        (Analyzer, "_cut_windows", "cut"),
        (Analyzer, "_deliver", "deliver"),
        (SecondAggregator, "add", "seconds.add"),
        (DetectorBank, "feed", "bank.feed"),
        (Analyzer, "_publish", "publish"),
    ):
        setattr(cls, name, _timed(getattr(cls, name), label, seconds))


if __name__ == "__main__":
    main()
