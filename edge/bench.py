"""`soundwatch bench`: how fast `scan` runs next to bare model inference on the same windows.

Each model file of the bundle whose runtime is installed is measured in its own fresh process
(`python -m edge.bench --measure SPEC`), pinned to one CPU core with one BLAS and one inference
thread, so its peak RSS is that backend's own. In that process:

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
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.files import AudioFile, find_audio_files
from edge.audio.streams import Conditioner, Gap, file_streams
from edge.detection.analysis import MAX_PIECE_SAMPLES
from edge.errors import AudioError, ConfigError, SoundwatchError
from edge.model.bundle import Bundle, load_bundle
from edge.model.runtime import available_backends
from edge.model.runtime.base import FILE_FORMATS, FILE_KEYS, Backend
from edge.ops.progress import bar, on_terminal
from edge.scan import SCAN_BATCH_WINDOWS, SCAN_BLOCK_SECONDS, ScanReport, scan

REPEATS = 3
SYNTHETIC_RATE_HZ = 44100  # a common recorder rate and no bundle's rate: scan must resample
SYNTHETIC_FALLBACK_RATE_HZ = 48000  # for a bundle that itself runs at 44.1 kHz
SYNTHETIC_CHUNK_SECONDS = 30.0  # written in chunks, so hours of audio need little memory
LATENCY_SECONDS = 2.0  # one-window calls stop after this long ...
LATENCY_MAX_CALLS = 2000  # ... or after this many
RECORD_BYTES = 128 << 20  # windows kept for bare inference; beyond, the first ones are timed
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
STAGES = ("read", "resample", "frontend", "inference", "rest")
PROGRESS = "progress "  # a child's stdout line: one step of its measurement done
TARGET_RATIO = 0.8  # the target: scan at least 80% of bare inference speed
# (header, result field, format) of the main table.
COLUMNS = (
    ("scan win/s", "scan_windows_per_second", "{:,.0f}"),
    ("scan xRT", "scan_x_real_time", "{:,.0f}x"),
    ("bare win/s", "bare_windows_per_second", "{:,.0f}"),
    ("bare xRT", "bare_x_real_time", "{:,.0f}x"),
    ("scan/bare", "ratio", "{:.3g}"),
    ("p50 ms", "latency_p50_ms", "{:.3g}"),
    ("p99 ms", "latency_p99_ms", "{:.3g}"),
    ("RSS MiB", "peak_rss_mib", "{:.0f}"),
)


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
                rows.append(_run_child(spec, progress.update, progress.set_postfix_str))
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
    command = [sys.executable, "-m", "edge.bench", "--measure", json.dumps(spec)]
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


def machine() -> dict[str, Any]:
    """CPU model (as lscpu names it), cores, Python and the packages that set the speed."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    names = [ln for ln in text.splitlines() if ln.startswith("model name")]
    cpu = names[0].split(":", 1)[1].strip() if names else cpu
    versions: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "onnxruntime", "ai-edge-litert", "soundfile"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "packages": versions,
    }


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of a `bench` result."""
    b, a, m, h = result["bundle"], result["audio"], result["method"], result["machine"]
    rates = ", ".join(f"{r} Hz" for r in a["rates_hz"])
    cpus = m["pinned_cpus"]
    pinned = f"pinned to CPU {', '.join(map(str, cpus))}" if cpus else "not pinned"
    packages = ", ".join(f"{k} {v}" for k, v in h["packages"].items() if v)
    table: list[tuple[str, ...]] = [("backend", *(c[0] for c in COLUMNS))]
    profile: list[tuple[str, ...]] = [("backend", *STAGES, "scan s")]
    notes = []
    for row in result["backends"]:
        key = row["file_key"]
        if "error" in row:
            notes.append(f"{key}: not measured: {row['error']}")
            continue
        table.append((key, *(form.format(row[field]) for _, field, form in COLUMNS)))
        share, total = row["profile"]["share"], row["profile"]["seconds"]["total"]
        profile.append((key, *(f"{100 * share[s]:.0f}%" for s in STAGES), f"{total:.3g}"))
        if row["bare_windows"] < row["windows"]:
            notes.append(
                f"{key}: bare inference timed on the first {row['bare_windows']:,} of"
                f" {row['windows']:,} windows"
            )
        if row["files_skipped"]:
            notes.append(f"{key}: skipped (unreadable): {', '.join(row['files_skipped'])}")
    return "\n".join(
        [
            f"model {b['name']} {b['version']} ({b['folder']}): {b['sample_rate_hz']} Hz,"
            f" {b['window_seconds']:g} s windows every {b['hop_seconds']:g} s",
            f"audio: {a['source']}, {a['files']} file(s), {a['seconds']:.1f} s at {rates}",
            f"machine: {h['cpu']}, {h['cores']} cores, Python {h['python']}, {packages}",
            f"method: a fresh process per backend, {pinned}, {m['threads']} inference and BLAS"
            f" thread(s), batch {m['batch_windows']}; times are the best of {m['repeats']}"
            " runs; RSS is that whole process's peak after the timed scans",
            "",
            *_columns(table),
            "",
            "where the fastest scan's time goes (inference timed inside it; read, resample and",
            "frontend timed alone on the same audio; rest = the remainder: cutting windows,",
            "activation, per-second rows, event detection, writing files):",
            "",
            *_columns(profile),
            "",
            f"target: scan/bare >= {TARGET_RATIO:g} (scan's own overhead at most 20%)",
            *notes,
        ]
    )


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned text: the first column left-aligned, the numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    cells = [[r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])] for r in rows]
    return ["  ".join(c) for c in cells]


# -- the child: one backend, measured ---------------------------------------------------------


class _Recording(Backend):
    """Wraps a backend: times each `predict` and keeps copies of the batches it was given."""

    key = "recording"
    install_command = ""

    def __init__(self, inner: Backend, room_windows: int) -> None:
        shape, n, threads = inner.feature_shape, inner.n_outputs, inner.threads
        super().__init__(inner.path, feature_shape=shape, n_labels=n, threads=threads)
        self.inner, self.room_windows = inner, room_windows
        self.recording = False
        self.batches: list[np.ndarray] = []
        self.inference_seconds = 0.0
        self.recording_seconds = 0.0  # copying batches: not scan's work, subtracted from it

    def _load(self, output_name: str | None) -> None:
        pass  # nothing to load: it wraps a backend that is already open

    @classmethod
    def available(cls) -> bool:
        return True

    def _run(self, model_input: np.ndarray) -> np.ndarray:
        raise NotImplementedError("predict is delegated whole")

    def _release(self) -> None:
        pass  # the wrapped backend stays open: the caller still uses it

    def predict(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        began = time.perf_counter()
        if self.recording and len(batch) <= self.room_windows:
            self.batches.append(np.array(batch, dtype=np.float32, copy=True))
            self.room_windows -= len(batch)
        called = time.perf_counter()
        scores = self.inner.predict(batch, out)
        self.inference_seconds += time.perf_counter() - called
        self.recording_seconds += called - began
        return scores


def measure(spec: dict[str, Any], step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """One backend's result row (see the module docstring); runs in the child process.
    step: called with the phase's name after each of its `_steps(repeats)` steps."""
    from edge.builders import build_analyzer
    from edge.config import load_config

    if spec["cpus"] and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    files, repeats = [Path(p) for p in spec["files"]], int(spec["repeats"])
    loaded = load_config(None)
    c = loaded.config
    model = replace(c.model, path=spec["model"], file=spec["file_key"], threads=spec["threads"])
    loaded = replace(loaded, config=replace(c, model=model))
    bundle, analyzer = build_analyzer(loaded, None, batch_windows=spec["batch"])
    backend = analyzer.backend
    window_bytes = 4 * int(np.prod(bundle.feature_shape))
    recorder = _Recording(backend, max(spec["batch"], RECORD_BYTES // window_bytes))
    analyzer.backend = recorder  # times inference inside scan; records only when asked
    with tempfile.TemporaryDirectory(prefix="soundwatch-bench-out-") as tmp:

        def timed_scan(record: bool = False) -> tuple[float, float, ScanReport]:
            """Scan's seconds (copying recorded windows excluded) and its inference seconds."""
            recorder.recording, recorder.inference_seconds = record, 0.0
            began = time.perf_counter()
            report = scan(analyzer, files, Path(tmp), device="bench", progress=False)
            seconds = time.perf_counter() - began - recorder.recording_seconds
            recorder.recording, recorder.recording_seconds = False, 0.0
            step("scan")
            return seconds, recorder.inference_seconds, report

        def timed_bare() -> float:
            began = time.perf_counter()
            for recorded in recorder.batches:
                backend.predict(recorded)
            seconds = time.perf_counter() - began
            step("bare inference")
            return seconds

        scans = [timed_scan()]
        peak_rss_mib = _peak_rss_mib()  # before any windows are recorded
        scans.append(timed_scan(record=True))
        report = scans[-1][2]
        if report.files_scored == 0:
            raise AudioError(f"no file could be read: {', '.join(report.files_skipped)}")
        if report.windows == 0:
            raise AudioError("the audio is shorter than one model window: nothing was scored")
        # Alternated, so that scan and bare inference see the same noise from other work.
        bares = [timed_bare()]
        for _ in range(repeats - 1):
            scans.append(timed_scan())
            bares.append(timed_bare())
    scan_seconds, inference, _ = min(scans, key=lambda run: run[0])
    bare_seconds = min(bares)
    found = find_audio_files(files)
    stage_runs = []
    for _ in range(repeats):
        stage_runs.append(_stage_seconds(bundle, found))
        step("stages")
    read, resample, frontend = min(stage_runs, key=sum)
    bare_windows = sum(len(b) for b in recorder.batches)
    p50_ms, p99_ms, calls = _latency_ms(backend, recorder.batches[0][:1])
    step("latency")

    rest = scan_seconds - read - resample - frontend - inference
    parts = dict(zip(STAGES, (read, resample, frontend, inference, rest), strict=True))
    scan_wps, bare_wps = report.windows / scan_seconds, bare_windows / bare_seconds
    return {
        "file_key": spec["file_key"],
        "model_file": backend.path.name,
        "files_scored": report.files_scored,
        "files_skipped": report.files_skipped,
        "audio_seconds": report.audio_seconds,
        "windows": report.windows,
        "scan_seconds": scan_seconds,
        "scan_windows_per_second": scan_wps,
        "scan_x_real_time": report.audio_seconds / scan_seconds,
        "bare_windows": bare_windows,
        "bare_seconds": bare_seconds,
        "bare_windows_per_second": bare_wps,
        # Bare inference at its own speed over all the windows scan scored.
        "bare_x_real_time": report.audio_seconds * bare_wps / report.windows,
        "ratio": scan_wps / bare_wps,
        "latency_p50_ms": p50_ms,
        "latency_p99_ms": p99_ms,
        "latency_calls": calls,
        "peak_rss_mib": peak_rss_mib,
        "profile": {
            "seconds": parts | {"total": scan_seconds},
            "share": {k: v / scan_seconds for k, v in parts.items()},
        },
    }


def _stage_seconds(bundle: Bundle, files: list[Path]) -> tuple[float, float, float]:
    """Seconds spent reading, resampling and computing features, each as scan does it."""
    from edge.model.frontend import StreamingLogMel

    spec = bundle.logmel
    frontend = None if spec is None else StreamingLogMel(spec, MAX_PIECE_SAMPLES)
    read = resample = features = 0.0
    stop = threading.Event()
    streams = file_streams(
        files, block_seconds=SCAN_BLOCK_SECONDS, speed=0, stop=stop, on_error=_skip_file
    )
    while True:
        began = time.perf_counter()
        stream = next(streams, None)  # opens the file
        read += time.perf_counter() - began
        if stream is None:
            return read, resample, features
        conditioner = Conditioner(stream.rate_hz, bundle.sample_rate_hz, "mix")
        if frontend is not None:
            frontend.reset()
        block: np.ndarray | Gap | None = np.empty(0)
        while block is not None:
            began = time.perf_counter()
            block = next(stream.blocks, None)
            got = time.perf_counter()
            if isinstance(block, Gap):  # files have none
                continue
            samples = conditioner.flush() if block is None else conditioner.process(block)
            conditioned = time.perf_counter()
            if frontend is not None:
                for start in range(0, len(samples), MAX_PIECE_SAMPLES):
                    frontend.push(samples[start : start + MAX_PIECE_SAMPLES])
            read += got - began
            resample += conditioned - got
            features += time.perf_counter() - conditioned


def _skip_file(path: Path, error: AudioError) -> None:
    """Unreadable files: scan skips them (and the result lists them), so the stages do too."""


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB.

    VmHWM rather than getrusage: on Linux a child's ru_maxrss starts from its parent's peak
    at fork, so it would report the parent's memory whenever the parent used more.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _latency_ms(backend: Backend, window: np.ndarray) -> tuple[float, float, int]:
    """p50 and p99 of one-window `predict` calls in ms, and how many calls were timed."""
    window = np.ascontiguousarray(window)
    for _ in range(10):  # the first calls allocate the runtime's buffers
        backend.predict(window)
    times = np.empty(LATENCY_MAX_CALLS, dtype=np.float64)
    deadline = time.perf_counter() + LATENCY_SECONDS
    calls = 0
    while calls < LATENCY_MAX_CALLS:
        began = time.perf_counter()
        backend.predict(window)
        times[calls] = time.perf_counter() - began
        calls += 1
        if began > deadline:
            break
    p50, p99 = np.percentile(times[:calls], [50, 99]) * 1000.0
    return float(p50), float(p99), calls


def _child_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--measure":
        print("usage: python -m edge.bench --measure SPEC_JSON (run by `soundwatch bench`)")
        return 2

    def step(phase: str) -> None:
        print(PROGRESS + phase, flush=True)

    try:
        row = measure(json.loads(argv[1]), step)
    except SoundwatchError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
