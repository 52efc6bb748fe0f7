"""`soundwatch bench`: how fast `scan` runs next to bare model inference on the same windows.

Each model file of the bundle whose runtime is installed is measured in its own fresh process
(`python -m edge.bench.measure --measure SPEC`, edge/bench/measure.py), pinned to one CPU core
with one BLAS and one inference thread, so its peak RSS is that backend's own. In that process:

1. **scan**: the real `edge.scan.scan` (read, resample, frontend, inference, per-second rows,
   events, output files) over the audio, timed end to end;
2. **bare inference**: `backend.predict` alone on the very windows scan scored, in the same
   batches (recorded during the second scan), alternated with the scans;
3. **latency**: `predict` on one window, many times: p50 and p99;
4. **stages**: every scan times its own inference; reading, resampling and the frontend are
   timed alone on the same audio; the remainder of scan's time is cutting windows,
   activation, per-second rows, event detection and writing.

Every timing is the best of `repeats` runs (scan gets one more: the first, before anything is
recorded, also sets peak RSS): the machine is shared and noisy, and the ratio of scan to bare
inference, measured side by side in one process, is the figure that matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.files import AudioFile, find_audio_files
from edge.bench.measure import PROGRESS, STAGES
from edge.bench.report import format_table, machine
from edge.errors import AudioError, ConfigError, SoundwatchError
from edge.model.bundle import load_bundle
from edge.model.runtime import available_backends
from edge.model.runtime.base import FILE_FORMATS, FILE_KEYS
from edge.ops.progress import bar, on_terminal
from edge.scan import SCAN_BATCH_WINDOWS

__all__ = ["STAGES", "BenchError", "bench", "format_table", "write_synthetic"]

REPEATS = 3
SYNTHETIC_RATE_HZ = 44100  # a common recorder rate and no bundle's rate: scan must resample
SYNTHETIC_FALLBACK_RATE_HZ = 48000  # for a bundle that itself runs at 44.1 kHz
SYNTHETIC_CHUNK_SECONDS = 30.0  # written in chunks, so hours of audio need little memory
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class BenchError(SoundwatchError):
    """No backend of the bundle could be measured."""


def bench(
    model: Path,
    *,
    seconds: float,
    files: list[Path],
    threads: int = 1,
    batch: int = SCAN_BATCH_WINDOWS,
    repeats: int = REPEATS,
    rate_hz: int | None = None,
    as_json: bool = False,
) -> str:
    """Measure every model file of the bundle in `model`: a table (or JSON) to print.

    seconds: synthetic audio to scan when `files` is empty, s (tone bursts in noise at
    `rate_hz`; default 44.1 kHz, 48 kHz for a 44.1 kHz bundle). files: recordings or folders
    to scan instead. threads: inference threads, also the CPU cores each measurement is pinned
    to. batch: windows per model call. repeats: runs per timing, the best kept.
    """
    for name, value in (("seconds", seconds), ("threads", threads), ("batch", batch)):
        if not value > 0:
            raise ConfigError(f"bench: --{name} must be positive, got {value}")
    if repeats < 1:
        raise ConfigError(f"bench: --repeats must be at least 1, got {repeats}")
    bundle = load_bundle(_bundled(model))
    if rate_hz is None:
        own = bundle.sample_rate_hz == SYNTHETIC_RATE_HZ
        rate_hz = SYNTHETIC_FALLBACK_RATE_HZ if own else SYNTHETIC_RATE_HZ
    cpus = _cpus_to_pin(threads)
    runtimes = available_backends()
    show = on_terminal()  # a bar per phase: writing the audio, then each backend
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="soundwatch-bench-") as tmp:
        if files:
            audio = find_audio_files(files)
            if not audio:
                raise AudioError(f"{', '.join(map(str, files))}: no audio files found")
        else:
            path = Path(tmp) / f"synthetic-{rate_hz}Hz.wav"
            with bar(seconds, "synthetic audio", "s", show) as progress:
                audio = [write_synthetic(path, seconds, rate_hz, on_chunk=progress.update)]
        for key in (k for k in FILE_KEYS if k in bundle.manifest.files):
            runtime = FILE_FORMATS[key.partition("-")[0]]
            if not runtimes.get(runtime, False):
                rows.append({"file_key": key, "error": f"the {runtime} runtime is not installed"})
                continue
            # Recordings go as given, so scan mirrors folders into its output as it would.
            named = [Path(p) for p in files] if files else audio
            spec = {
                "model": str(bundle.folder.resolve()),
                "file_key": key,
                "files": [str(p.resolve()) for p in named],
                "threads": threads,
                "batch": batch,
                "repeats": repeats,
                "cpus": cpus,
            }
            with bar(_steps(repeats), key, "step", show) as progress:
                row = _run_child(spec, progress.update, progress.set_postfix_str)
            if "error" not in row:
                model_file = bundle.folder.resolve() / bundle.manifest.files[key].path
                row |= _bare_memory(spec, str(model_file), runtime, bundle.feature_shape, row)
            rows.append(row)
        source = "recordings" if files else "synthetic tone bursts in noise"
        described = {"source": source, **_describe_audio(audio)}
    if all("error" in row for row in rows):
        problems = "; ".join(f"{row['file_key']}: {row['error']}" for row in rows)
        raise BenchError(f"{bundle.folder}: no backend could be measured ({problems})")
    m, rate = bundle.manifest, bundle.sample_rate_hz
    result: dict[str, Any] = {
        "bundle": {
            "name": m.name,
            "version": m.version,
            "folder": str(bundle.folder),
            "sample_rate_hz": rate,
            "window_seconds": bundle.window_samples / rate,
            "hop_seconds": bundle.hop_samples / rate,
        },
        "audio": described,
        "method": {
            "threads": threads,
            "batch_windows": batch,
            "repeats": repeats,
            "pinned_cpus": cpus,
            "timing": "best of the repeats",
        },
        "machine": machine(),
        "backends": rows,
    }
    return json.dumps(result, indent=2) if as_json else format_table(result)


def _bundled(model: Path) -> Path:
    """`model`, or for a bare name that is no folder here (flysong), the bundled model."""
    if model.exists() or len(model.parts) != 1:
        return model
    from edge.builders import bundled_model_roots

    found = (root / model.name for root in bundled_model_roots())
    return next((folder for folder in found if folder.is_dir()), model)


# -- the parent: audio, children, report ------------------------------------------------------


def write_synthetic(
    path: Path,
    seconds: float,
    rate_hz: int,
    seed: int = 0,
    on_chunk: Callable[[float], object] | None = None,
) -> Path:
    """16-bit WAV: white noise (RMS 0.01), and in the last second of every 4 s a tone of
    amplitude 0.3, alternately 1 and 3 kHz (what the demo `tone` model detects, so the event
    path runs too; other models just score it). on_chunk: called with each chunk's seconds."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total, chunk = round(seconds * rate_hz), round(SYNTHETIC_CHUNK_SECONDS * rate_hz)
    with sf.SoundFile(path, "w", rate_hz, 1, subtype="PCM_16") as out:
        for start in range(0, total, chunk):
            t = np.arange(start, min(start + chunk, total)) / rate_hz
            freq_hz = np.where((t // 4.0) % 2 == 0, 1000.0, 3000.0)
            on = (t % 4.0) >= 3.0
            x = rng.normal(0.0, 0.01, len(t)) + on * 0.3 * np.sin(2 * np.pi * freq_hz * t)
            out.write(x.astype(np.float32))
            if on_chunk is not None:
                on_chunk(len(t) / rate_hz)
    return path


def _describe_audio(files: list[Path]) -> dict[str, Any]:
    seconds, rates = 0.0, set()
    for path in files:
        try:
            with AudioFile.open(path) as audio:
                seconds += audio.duration_seconds
                rates.add(audio.sample_rate_hz)
        except AudioError:
            continue  # scan skips it too, and each result row lists what it skipped
    return {"files": len(files), "seconds": seconds, "rates_hz": sorted(rates)}


def _cpus_to_pin(threads: int) -> list[int] | None:
    """The last `threads` CPUs this process may use (CPU 0 takes most interrupts)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if len(allowed) >= threads else None


def _steps(repeats: int) -> int:
    """The steps `measure` reports: repeats + 1 scans, repeats bare inference runs, repeats
    stage timings, one latency run."""
    return 3 * repeats + 2


def _bare_memory(
    spec: dict[str, Any],
    model_file: str,
    runtime: str,
    feature_shape: tuple[int, ...],
    row: dict[str, Any],
) -> dict[str, Any]:
    """The bare runtime loop's peak RSS (edge/bench/runtime_loop.py, in its own process, as
    many windows as scan scored), and how scan's peak compares: fields for the backend's row."""
    bare = {
        "model_file": model_file,
        "runtime": "onnx" if runtime == "onnx" else "tflite",
        "feature_shape": list(feature_shape),
        "windows": row["windows"],
        "batch": row["largest_batch"],  # what scan gave the runtime, so the same arena
        "threads": spec["threads"],
        "cpus": spec["cpus"],
    }
    env = dict(os.environ) | dict.fromkeys(THREAD_VARIABLES, str(spec["threads"]))
    # Run as a file, not `-m edge.bench.runtime_loop`: the package's imports would count as its own.
    script = str(Path(__file__).resolve().parent / "runtime_loop.py")
    done = subprocess.run(
        [sys.executable, script, json.dumps(bare)], env=env, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        return {"bare_error": errors[-1] if errors else "no result"}
    measured = json.loads(lines[-1])
    rss = measured["peak_rss_mib"]
    return {
        "bare_rss_mib": rss,
        "bare_loop_seconds": measured["seconds"],
        "rss_extra_mib": row["peak_rss_mib"] - rss,
        "rss_ratio": row["peak_rss_mib"] / rss,
    }


def _run_child(
    spec: dict[str, Any],
    on_step: Callable[[int], object] = lambda _: None,
    on_phase: Callable[[str], object] = lambda _: None,
) -> dict[str, Any]:
    """Measure one backend in a fresh interpreter: its result row, or an error row. The child
    prints `progress PHASE` after each step (on_step(1), on_phase(PHASE)), then the row."""
    env = dict(os.environ)
    # Set before numpy loads: the resampler and frontend get as many cores as inference.
    env.update(dict.fromkeys(THREAD_VARIABLES, str(spec["threads"])))
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "edge.bench.measure", "--measure", json.dumps(spec)]
    # stderr to a file, so a chatty child cannot block on a full pipe while stdout is read.
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            if line.startswith(PROGRESS):
                on_phase(line[len(PROGRESS) :].strip())
                on_step(1)
            elif line.strip():
                lines.append(line)
        returncode = child.wait()
        stderr.seek(0)
        errors = [line for line in stderr.read().splitlines() if line.strip()]
    if returncode == 0 and lines:
        row: dict[str, Any] = json.loads(lines[-1])
        return row
    return {"file_key": spec["file_key"], "error": errors[-1] if errors else "no result"}
