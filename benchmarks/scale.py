"""How `soundwatch scan` scales with Dask workers, and what the engine costs (issue 11).

    python benchmarks/scale.py [--model models/flysong] [--hours 2] [--recordings DIR]

Writes `--hours` of audio at the model's rate twice under a temporary folder: as one long
file, and as a set of 8 files of the same total length (from the recordings in `--recordings`
repeated end to end, else noise with a tone burst every 4 s). Then times the real command
line (`python -m edge.cli scan ... -q`), each run into a fresh `--out`:

- the set of files on 1 and on 2 workers (one task a file);
- the long file on 1 and on 2 workers (time shards, `--shard-minutes` default);
- the long file with the plain one-process scan and on `--workers 1` (the engine's cost:
  cluster start, task hand-over, the merge of the shards).

Wall time is the whole command, Python start included; x real time is the scan's own report
(audio seconds over the time from the cluster's start to the last output). BLAS and
inference run one thread a process (`OMP_NUM_THREADS=1`, as Dask sets in its workers), so a
worker is one core. Runs alternate between the settings compared and the best of `--repeats`
is kept. Every run's outputs are checked equal to the plain scan's (byte for byte).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.model.bundle import load_bundle  # noqa: E402

REPORT = re.compile(r"([\d.]+) s of audio in ([\d.]+) s \((\d+)x real time\)")
FILES_IN_SET = 8


def audio(rate_hz: int, seconds: float, recordings: Path | None) -> np.ndarray:
    n = round(rate_hz * seconds)
    if recordings is not None:
        parts = [sf.read(p, dtype="float32", always_2d=True)[0].mean(axis=1)
                 for p in sorted(recordings.glob("*.wav"))]  # fmt: skip
        parts = [p for p in parts if len(p)]
        if not parts:
            raise SystemExit(f"{recordings}: no WAV recordings")
        # (resampled by nothing: recordings at another rate simply play faster or slower)
        one = np.concatenate(parts)
        return np.resize(one, n)
    rng = np.random.default_rng(0)
    x = 0.01 * rng.standard_normal(n).astype(np.float32)
    t = np.arange(round(rate_hz * 0.5)) / rate_hz
    burst = (0.3 * np.sin(2 * np.pi * min(1000.0, rate_hz / 4) * t)).astype(np.float32)
    for start in range(0, n - len(burst), 4 * rate_hz):
        x[start : start + len(burst)] += burst
    return x


def scan(paths: list[Path], model: Path, out: Path, *extra: str) -> tuple[float, float]:
    """(wall s, x real time) of one `soundwatch scan` run into the fresh folder `out`."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "edge.cli", "scan", *map(str, paths), "--model", str(model)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run([*command, "--out", str(out), "-q", *extra], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - began
    found = REPORT.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"scan failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, float(found.group(3))


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "flysong")
    parser.add_argument("--hours", type=float, default=2.0, help="audio in each input set")
    parser.add_argument("--recordings", type=Path, help="WAVs to repeat instead of noise")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, help="folder for the audio and outputs")
    args = parser.parse_args()

    rate = load_bundle(args.model).sample_rate_hz
    work = args.work or Path(tempfile.mkdtemp(prefix="soundwatch-scale-"))
    seconds = args.hours * 3600
    x = audio(rate, seconds, args.recordings)
    long_file = work / "long" / "day.wav"
    long_file.parent.mkdir(parents=True, exist_ok=True)
    sf.write(long_file, x, rate, subtype="PCM_16")
    folder = work / "set"
    folder.mkdir(exist_ok=True)
    for k, part in enumerate(np.array_split(x, FILES_IN_SET)):
        sf.write(folder / f"part{k}.wav", part, rate, subtype="PCM_16")

    reference = work / "reference"
    scan([long_file], args.model, reference)
    want = outputs(reference)
    runs = {
        "set, 1 worker": ([folder], ["--workers", "1"]),
        "set, 2 workers": ([folder], ["--workers", "2"]),
        "long, 1 worker": ([long_file], ["--workers", "1"]),
        "long, 2 workers": ([long_file], ["--workers", "2"]),
        "long, one process": ([long_file], []),
    }
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for name, (paths, extra) in runs.items():
            out = work / "out"
            wall, xrt = scan(paths, args.model, out, *extra)
            if paths == [long_file] and outputs(out) != want:
                raise SystemExit(f"{name}: outputs differ from the one-process scan's")
            if name not in best or wall < best[name][0]:
                best[name] = (wall, xrt)

    print(
        f"{args.hours:g} h of audio at {rate} Hz, model {args.model.name}, {os.cpu_count()} cores"
    )
    print("| run | wall s | x real time |\n| --- | ---: | ---: |")
    for name, (wall, xrt) in best.items():
        print(f"| {name} | {wall:.1f} | {xrt:.0f}x |")
    ratio = lambda a, b: best[a][0] / best[b][0]  # noqa: E731
    print(f"\nset: 2 workers {ratio('set, 1 worker', 'set, 2 workers'):.2f}x faster than 1")
    print(f"long file: 2 workers {ratio('long, 1 worker', 'long, 2 workers'):.2f}x faster than 1")
    overhead = ratio("long, 1 worker", "long, one process") - 1
    print(f"engine: --workers 1 takes {overhead:+.1%} the one-process scan's wall time")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
