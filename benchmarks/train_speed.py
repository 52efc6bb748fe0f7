"""Training speed (issue 12 item 6): windows per second and wall time of `fit`.

Generates a bird-song-like set (chirps of four kinds in noise, 17 minutes over 17 recordings
at 22050 Hz, densely annotated so the gaps train `background`), then runs the trainer's
`fit` on it and prints training windows per second (windows drawn per epoch times epochs run,
over the seconds the epochs took, validation included), how those seconds split between
making batches (`Windows.batch`), validating (`_predict_logits`) and the rest (forward,
backward, optimiser step), and the wall and CPU time of the whole fit.
With `--data`, trains on those annotations instead (e.g. the fly song in ../shared/data).

    PYTHONPATH=. python benchmarks/train_speed.py [--minutes 17] [--epochs 3] [--threads 2]
    PYTHONPATH=. python benchmarks/train_speed.py --data ../shared/data/songexplorer
    PYTHONPATH=. python benchmarks/train_speed.py --profile 25   # the 25 costliest calls

Run it quietly: on a shared machine the figures move with the load.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import trainer.trainloop
from trainer.annotations import load_any
from trainer.config import load_config, with_overrides
from trainer.dataset import Windows
from trainer.train import fit

RATE_HZ = 22050
# Chirps: (start Hz, end Hz, seconds) of each kind; a sweep stands in for a bird's note.
KINDS = {
    "rise": (2000.0, 4000.0, 0.25),
    "fall": (5000.0, 3000.0, 0.3),
    "trill": (6000.0, 6000.0, 0.5),
    "buzz": (1200.0, 1400.0, 0.4),
}


def write_set(folder: Path, minutes: float, seed: int = 0) -> Path:
    """One-minute recordings of chirps in noise and `annotations.csv` naming every chirp."""
    rng = np.random.default_rng(seed)
    rows = ["file,start_seconds,end_seconds,label"]
    for n in range(max(1, round(minutes))):
        seconds = 60.0 * minutes / max(1, round(minutes))
        signal = 0.01 * rng.standard_normal(round(seconds * RATE_HZ))
        t = float(rng.uniform(0.2, 1.0))
        while t < seconds - 1.0:
            label = list(KINDS)[int(rng.integers(len(KINDS)))]
            f0, f1, length = KINDS[label]
            i0, k = round(t * RATE_HZ), round(length * RATE_HZ)
            tt = np.arange(k) / RATE_HZ
            phase = 2 * np.pi * (f0 * tt + (f1 - f0) * tt**2 / (2 * length))
            # A trill is amplitude-modulated at 30 Hz.
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 30 * tt) if label == "trill" else 1.0
            signal[i0 : i0 + k] += float(rng.uniform(0.05, 0.3)) * envelope * np.sin(phase)
            rows.append(f"song{n:02d}.wav,{t:.4f},{t + length:.4f},{label}")
            t += length + float(rng.uniform(0.3, 2.5))
        sf.write(folder / f"song{n:02d}.wav", signal.astype(np.float32), RATE_HZ)
    (folder / "annotations.csv").write_text("\n".join(rows) + "\n")
    return folder / "annotations.csv"


SPENT: dict[str, float] = {"batches": 0.0, "validation": 0.0}


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - began

    return timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=17.0, help="generated audio, minutes")
    p.add_argument("--data", help="annotations to train on instead (file or folder)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--folds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--profile", type=int, default=0, help="print this many costliest calls")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            annotations, dense = Path(args.data), None
        else:
            annotations, dense = write_set(Path(tmp), args.minutes), ["*"]
        data = load_any(annotations)
        overrides: dict[str, object] = {
            "training.epochs": args.epochs,
            "training.patience": 0,
            "training.threads": args.threads,
            "training.device": args.device,
            "validation.folds": args.folds,
        }
        if dense:
            overrides["dense"] = dense
        config = with_overrides(load_config(None), overrides)
        lines: list[str] = []
        # Wrapped, not replaced: the same code runs, with a clock around it.
        Windows.batch = _timed("batches", Windows.batch)  # type: ignore[method-assign]
        trainer.trainloop._predict_logits = _timed("validation", trainer.trainloop._predict_logits)
        profiler = cProfile.Profile() if args.profile else None
        began, cpu_began = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        trained = fit(config, data, None, log=lines.append, progress=False)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    epochs = trained.history
    windows = config.windows.windows_per_epoch * len(epochs)
    epoch_seconds = sum(row["seconds"] for row in epochs)
    print(f"device {trained.metrics['device']}, threads {args.threads}, {len(epochs)} epochs")
    print(f"training windows/s: {windows / epoch_seconds:.0f} ({windows} in {epoch_seconds:.1f} s)")
    rest = epoch_seconds - SPENT["batches"] - SPENT["validation"]
    print(
        f"epoch time: batches {SPENT['batches']:.1f} s, validation {SPENT['validation']:.1f} s,"
        f" forward/backward/step {rest:.1f} s"
    )
    print(
        f"fit wall time: {wall:.1f} s, CPU time {cpu:.1f} s (all threads: steadier than wall"
        f" time on a shared machine); validation macro F1 {trained.metrics['macro_f1']:.3f}"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
