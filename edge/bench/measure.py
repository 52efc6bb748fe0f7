"""The child of `soundwatch bench`: one backend of a bundle, measured in its own process
(`python -m edge.bench.measure --measure SPEC`; see edge/bench/__init__.py for the method)."""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.files import find_audio_files
from edge.audio.streams import Conditioner, Gap, file_streams
from edge.detection.analysis import MAX_PIECE_SAMPLES
from edge.errors import AudioError, SoundwatchError
from edge.model.bundle import Bundle
from edge.model.runtime.base import Backend
from edge.scan import SCAN_BLOCK_SECONDS, ScanReport, scan

LATENCY_SECONDS = 2.0  # one-window calls stop after this long ...
LATENCY_MAX_CALLS = 2000  # ... or after this many
RECORD_BYTES = 128 << 20  # windows kept for bare inference; beyond, the first ones are timed
STAGES = ("read", "resample", "frontend", "inference", "rest")
PROGRESS = "progress "  # a child's stdout line: one step of its measurement done


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
        # CPU seconds of this process besides wall seconds: on a shared machine, waiting for
        # the core counts in the wall time but not here. The recording scan is left out.
        scan_cpu: list[float] = []
        bare_cpu: list[float] = []

        def timed_scan(record: bool = False) -> tuple[float, float, ScanReport]:
            """Scan's seconds (copying recorded windows excluded) and its inference seconds."""
            recorder.recording, recorder.inference_seconds = record, 0.0
            began, cpu = time.perf_counter(), time.process_time()
            report = scan(analyzer, files, Path(tmp), device="bench", progress=False)
            if not record:
                scan_cpu.append(time.process_time() - cpu)
            seconds = time.perf_counter() - began - recorder.recording_seconds
            recorder.recording, recorder.recording_seconds = False, 0.0
            step("scan")
            return seconds, recorder.inference_seconds, report

        def timed_bare() -> float:
            began, cpu = time.perf_counter(), time.process_time()
            for recorded in recorder.batches:
                backend.predict(recorded)
            seconds = time.perf_counter() - began
            bare_cpu.append(time.process_time() - cpu)
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
        "scan_cpu_seconds": min(scan_cpu),
        "bare_cpu_seconds": min(bare_cpu),
        # The same ratio in CPU seconds: steadier where other work shares the core.
        "cpu_ratio": (report.windows / min(scan_cpu)) / (bare_windows / min(bare_cpu)),
        "latency_p50_ms": p50_ms,
        "latency_p99_ms": p99_ms,
        "latency_calls": calls,
        "peak_rss_mib": peak_rss_mib,
        # Scan scores what a block completes, so its batches can stay below `batch`; the
        # runtime gets at most the backend's own batch a call (one for a heavy window).
        "largest_batch": min(max(len(b) for b in recorder.batches), backend.max_batch or 1 << 30),
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
        print("usage: python -m edge.bench.measure --measure SPEC_JSON (run by `soundwatch bench`)")
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
