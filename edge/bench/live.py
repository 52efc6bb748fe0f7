"""`soundwatch bench --live`: the real daemon on a real (virtual) device, next to a bare loop.

The bench starts its own PulseAudio with a null sink (edge/bench/sandbox.py) and mosquitto if
installed, and writes a recording with known events at the sink's rate: tone bursts for a
model with `tone-1k`/`tone-3k` labels, synthetic fly song for one with fly-song labels (both
from edge/audio/demo.py's generators), or the file given. Then, one after the other:

1. **daemon**: `soundwatch run` in a child process on the sink's monitor (`device: pulse`),
   MQTT to the bench's broker, metrics on a free port, everything else at its defaults. Its
   start-up is the time from starting the process to its first analysed second (the metric
   `soundwatch_last_analysed_timestamp_seconds` stops holding the start time). One second
   later the recording is played; CPU (user + system, all threads, from /proc) and RSS are
   taken from one second into playback to its end plus the tail.
2. **bare**: `python -m edge.bench.bare` (capture + the same model file, one call per hop) on
   the same device, with the same recording played, measured the same way.

The bench's own 10 ms reader of the sink's monitor runs, already delivering, before either
process starts and until it ends, the same in both phases (see `_awake_recorder`).

Latency: the bench records the monitor itself (`parec`, 10 ms reads) and finds, by
correlation, when the recording's first sample reached a client; a known onset at t s in the
recording reached it t s later. Each onset is matched with the first MQTT `start` of its label
that arrives after it (within MATCH_SECONDS); latency is the arrival minus the onset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.live_report import combine, format_live
from edge.bench.report import machine
from edge.bench.sandbox import SINK_RATE_HZ, Sandbox, free_port, sandbox
from edge.bench.watch import ProcWatch, Recorder, StartMessages, first_analysed
from edge.errors import ConfigError, SoundwatchError
from edge.model.bundle import Bundle, load_bundle

DEFAULT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 60.0  # the daemon's first analysed second, at most
SETTLE_SECONDS = 1.0  # after start-up, before playback; and into playback, before measuring
TAIL_SECONDS = 2.0  # after playback: the last events come out
MATCH_SECONDS = 3.0  # a `start` later than this after its onset is not that onset's
BURST_SECONDS, BURST_EVERY_SECONDS, LEAD_SECONDS = 0.5, 2.0, 1.0
BURST_JITTER_SECONDS = 0.25  # added at random to each gap between bursts
TONE_LABELS = ("tone-1k", "tone-3k")
TONE_HZ = (1000.0, 3000.0)
LATENCY_ALLOWANCE_SECONDS = 0.05  # the target: p95 <= window / 2 + hop + this
DEVICE = "pulse"


class LiveBenchError(SoundwatchError):
    """The daemon or the bare loop did not start, or the recording was not heard."""


@dataclass(frozen=True)
class Recording:
    path: Path
    audio: np.ndarray  # float32 at SINK_RATE_HZ, as played
    onsets: list[tuple[float, str]]  # (s from the first sample, label)
    kind: str


def bench_live(
    model: Path,
    *,
    seconds: float = DEFAULT_SECONDS,
    audio: Path | None = None,
    file_key: str = "auto",
    block_seconds: float | None = None,
    rounds: int = 1,
    as_json: bool = False,
) -> str:
    """Run both phases (see the module docstring) `rounds` times, alternating, in one sandbox:
    a table, or JSON, to print. file_key: the model file both run (auto: the daemon's choice).
    block_seconds: the capture block of both (None: the daemon's default)."""
    if not seconds > 0:
        raise ConfigError(f"bench: --seconds must be positive, got {seconds}")
    if rounds < 1:
        raise ConfigError(f"bench: --rounds must be at least 1, got {rounds}")
    from edge.config import SourceConfig

    bundle = load_bundle(model)
    key = bundle.choose_file(file_key)
    block = SourceConfig().block_seconds if block_seconds is None else block_seconds
    window_s = bundle.window_samples / bundle.sample_rate_hz
    hop_s = bundle.hop_samples / bundle.sample_rate_hz
    with tempfile.TemporaryDirectory(prefix="soundwatch-live-") as tmp:
        folder = Path(tmp)
        recording = _recording(folder / "played.wav", bundle, seconds, audio)
        with sandbox(folder / "sandbox") as box:
            pairs = []
            for _ in range(rounds):
                daemon = _daemon_phase(box, folder, bundle, key, block, recording)
                pairs.append((daemon, _bare_phase(box, bundle, key, block, hop_s, recording)))
    floor = window_s / 2 + hop_s
    result: dict[str, Any] = {
        "bundle": {"name": bundle.manifest.name, "folder": str(bundle.folder), "file": key},
        "block_seconds": block,
        "window_seconds": window_s,
        "hop_seconds": hop_s,
        "recording": {"kind": recording.kind, "seconds": len(recording.audio) / SINK_RATE_HZ},
        "onsets_played": len(recording.onsets) * rounds,
        "latency_target_seconds": floor + LATENCY_ALLOWANCE_SECONDS,
        **combine(pairs),
        "machine": machine(),
    }
    return json.dumps(result, indent=2) if as_json else format_live(result)


# -- the recording ------------------------------------------------------------------------------


def _recording(path: Path, bundle: Bundle, seconds: float, given: Path | None) -> Recording:
    import soundfile as sf
    from scipy.signal import resample_poly

    from edge.audio.demo import flysong_scene

    labels = set(bundle.labels)
    rng = np.random.default_rng(0)
    onsets: list[tuple[float, str]] = []
    if given is not None:
        from edge.audio.files import AudioFile

        with AudioFile.open(given) as f:
            rate = f.sample_rate_hz
            x = np.concatenate(list(f.blocks(1 << 16, reuse_buffer=False))).mean(axis=1)
        audio, kind = resample_poly(x, SINK_RATE_HZ, rate).astype(np.float32), str(given)
    elif labels & {"mel-pulse", "mel-sine"}:
        song_rate = 2500
        x, songs = flysong_scene(seconds, song_rate, rng)
        audio = resample_poly(x, SINK_RATE_HZ, song_rate).astype(np.float32)
        onsets, kind = [(s.start_s, s.label) for s in songs], "synthetic fly song"
    else:
        audio, onsets = _tone_bursts(seconds, rng)
        kind = "tone bursts (0.5 s, 1 and 3 kHz, every 2-2.25 s)"
    onsets = [(t, label) for t, label in onsets if label in labels]
    sf.write(path, audio, SINK_RATE_HZ, subtype="FLOAT")
    return Recording(path, audio, onsets, kind)


def _tone_bursts(
    seconds: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """White noise (RMS 0.01) with a BURST_SECONDS tone of amplitude 0.3 every
    BURST_EVERY_SECONDS (plus up to BURST_JITTER_SECONDS), alternately 1 and 3 kHz, from
    LEAD_SECONDS on."""
    n = round(seconds * SINK_RATE_HZ)
    audio = rng.normal(0.0, 0.01, n)
    onsets: list[tuple[float, str]] = []
    start = LEAD_SECONDS
    while start + BURST_SECONDS + LEAD_SECONDS <= seconds:
        which = len(onsets) % 2
        first, count = round(start * SINK_RATE_HZ), round(BURST_SECONDS * SINK_RATE_HZ)
        t = np.arange(count) / SINK_RATE_HZ
        audio[first : first + count] += 0.3 * np.sin(2 * np.pi * TONE_HZ[which] * t)
        onsets.append((start, TONE_LABELS[which]))
        # Onsets off any grid, so they fall at every phase of the hop and of the block.
        start += BURST_EVERY_SECONDS + rng.uniform(0.0, BURST_JITTER_SECONDS)
    return audio.astype(np.float32), onsets


# -- the phases ---------------------------------------------------------------------------------


def _daemon_phase(
    box: Sandbox, folder: Path, bundle: Bundle, key: str, block: float, recording: Recording
) -> dict[str, Any]:
    metrics_port = free_port()
    config = folder / "config.yaml"
    lines = [
        f"model: {{path: {json.dumps(str(bundle.folder))}, file: {key}}}",
        f"source: {{kind: device, device: {DEVICE}, block_seconds: {block}}}",
        f"output: {{dir: {json.dumps(str(folder / 'out'))}, device_id: bench, print: none}}",
        f"metrics: {{address: '127.0.0.1:{metrics_port}'}}",
    ]
    if box.mqtt_port is not None:
        lines.append(f"mqtt: {{host: 127.0.0.1, port: {box.mqtt_port}}}")
    config.write_text("\n".join(lines) + "\n")
    messages = None
    if box.mqtt_port is not None:
        messages = StartMessages(box.mqtt_port, "soundwatch/bench/events")
        messages.start()
    recorder = _awake_recorder(box)
    log = folder / "daemon.log"
    command = [sys.executable, "-m", "edge.cli", "run", "-c", str(config)]
    try:
        with log.open("w") as err:
            began = time.time()
            child = subprocess.Popen(
                command, env=_child_env(box), stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            watch = ProcWatch(child.pid)
            first = first_analysed(metrics_port, child, START_TIMEOUT_SECONDS)
            if first is None:
                raise LiveBenchError(f"daemon: no analysed second ({_tail(log)})")
            played_at, ended_at = _play(box, recording)
            stats = watch.steady(played_at + SETTLE_SECONDS, ended_at)
            watch.stop()
            if child.poll() is not None:
                raise LiveBenchError(f"daemon stopped early: {_tail(log)}")
        finally:
            _terminate(child)
    finally:
        recorder.stop()
        if messages is not None:
            messages.stop()
    result = {"startup_seconds": first - began, **stats}
    heard = recorder.when_played(recording.audio, played_at - 0.5)
    result.update(_latency(recording, heard, messages))
    return result


def _bare_phase(
    box: Sandbox, bundle: Bundle, key: str, block: float, hop_s: float, recording: Recording
) -> dict[str, Any]:
    spec = {
        "device": DEVICE,
        "block_seconds": block,
        "hop_seconds": hop_s,
        "file_key": key,
        "path": str(bundle.folder / bundle.manifest.files[key].path),
        "bundle": str(bundle.folder) if bundle.manifest.backbone is not None else None,
        "feature_shape": list(bundle.feature_shape),
        "n_labels": len(bundle.labels),
        "threads": 1,
    }
    command = [sys.executable, "-m", "edge.bench.bare", json.dumps(spec)]
    # The monitor is recorded as in the daemon's phase, though nothing reads it here: a
    # 10 ms reader makes PulseAudio hand every client of the monitor smaller pieces (the
    # daemon's libpulse thread woke 178 times a second with it, 61 without), so the two
    # phases are only comparable with it in both.
    recorder = _awake_recorder(box)
    began = time.monotonic()
    child = subprocess.Popen(
        command, env=_child_env(box), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        watch = ProcWatch(child.pid)
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            child.wait(timeout=10)
            problem = (child.stderr.read() if child.stderr else "").strip().splitlines()[-1:]
            raise LiveBenchError(f"bare loop did not start: {' '.join(problem)}")
        ready = time.monotonic() - began
        played_at, ended_at = _play(box, recording)
        stats = watch.steady(played_at + SETTLE_SECONDS, ended_at)
        watch.stop()
        if child.poll() is not None:
            problem = (child.stderr.read() if child.stderr else "").strip().splitlines()[-1:]
            raise LiveBenchError(f"bare loop stopped early: {' '.join(problem)}")
    finally:
        _terminate(child)
        recorder.stop()
    return {"startup_seconds": ready, **stats}


def _awake_recorder(box: Sandbox) -> Recorder:
    """A 10 ms reader of the monitor, once it delivers. PulseAudio's null sink sleeps up to
    2 s at a time while no client asks for low latency, so a client that opens it cold waits
    1.7-1.9 s for its first block (measured), where a microphone gives one in a block: the
    start-up would time the null sink, not the daemon."""
    recorder = Recorder(box.record(latency_ms=10), SINK_RATE_HZ)
    if not recorder.wait_for_audio(START_TIMEOUT_SECONDS):
        recorder.stop()
        raise LiveBenchError("the sink's monitor delivered no audio")
    return recorder


def _play(box: Sandbox, recording: Recording) -> tuple[float, float]:
    """Play the recording after SETTLE_SECONDS and wait TAIL_SECONDS after it: (monotonic
    time playback was started, the end of the tail)."""
    time.sleep(SETTLE_SECONDS)
    played_at = time.monotonic()
    player = box.play(recording.path)
    seconds = len(recording.audio) / SINK_RATE_HZ
    if player.wait(timeout=seconds + 30) != 0:
        raise LiveBenchError(f"paplay {recording.path} failed ({player.returncode})")
    time.sleep(TAIL_SECONDS)
    return played_at, time.monotonic()


def _latency(
    recording: Recording, heard: float | None, messages: StartMessages | None
) -> dict[str, Any]:
    """Events found for the onsets played, stray `start`s, and each found one's latency, s
    (edge/bench/live_report.py sums them up over the rounds)."""
    if messages is None:
        return {"latency": "not measured: mosquitto is not installed"}
    if heard is None:
        return {"latency": "not measured: the recording was not found on the monitor"}
    unused = sorted(messages.arrivals)
    found: list[float] = []
    for onset, label in recording.onsets:
        sound = heard + onset
        match = next(
            (m for m in unused if m[1] == label and sound <= m[0] < sound + MATCH_SECONDS), None
        )
        if match is not None:
            unused.remove(match)
            found.append(match[0] - sound)
    end = heard + len(recording.audio) / SINK_RATE_HZ
    stray = sum(1 for at, _ in unused if heard <= at <= end + TAIL_SECONDS)
    return {"events_found": len(found), "stray_starts": stray, "latencies_seconds": found}


def _child_env(box: Sandbox) -> dict[str, str]:
    env = box.client_env()
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _terminate(child: subprocess.Popen[Any]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "it logged nothing"
