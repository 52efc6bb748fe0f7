"""The daemon listening to a real capture device: a private PulseAudio server's virtual sink,
into which the test plays a recording with known events (see conftest.pulse_server)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.conftest import PulseServer
from tests.scenes import TRUTH, Found, check_against_truth, write_scene


def _wait_for(proc: subprocess.Popen[str], path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        assert proc.poll() is None, f"daemon exited early: {path.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path} within {timeout} s")


def test_daemon_detects_events_played_into_a_real_device(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    wav = write_scene(tmp_path / "scene.wav", rate_hz=48000)
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{path: {tone_bundle}}}\n"
        "source: {kind: device, device: pulse}\n"
        f"output: {{dir: {out}, device_id: box, print: events}}\n"
    )
    log = tmp_path / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            _wait_for(proc, log, "listening to pulse", timeout=20)
            pulse_server.play(wav)
            time.sleep(1.0)  # let the last windows through
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()

    day = next((out / "box").iterdir())
    messages = [json.loads(line) for line in (day / "events.jsonl").read_text().splitlines()]
    found = [
        Found(m["label"], m["start_offset"], m["end_offset"])
        for m in messages
        if m["type"] == "end"
    ]
    # Playback starts at some unknown moment after capture: measure that delay from the
    # events themselves, then every onset and offset must agree with the truth after it.
    assert len(found) == len(TRUTH), found
    found.sort(key=lambda f: f.start)
    delay = float(np.median([f.start - t[0] for f, t in zip(found, sorted(TRUTH), strict=True)]))
    assert 0 < delay < 10
    shifted = [Found(f.label, f.start - delay, f.end - delay) for f in found]
    # One hop, plus what a live path adds: the delay is estimated from the events themselves
    # and PulseAudio's timing wanders by a few tens of ms within a stream (file tests: one hop).
    check_against_truth(shifted, tolerance=0.1 + 0.07)

    # Every second from start to stop has a row; the scene's seconds are analysed.
    rows = []
    for hour in sorted(day.glob("*.csv")):
        with hour.open(newline="") as f:
            rows += list(csv.DictReader(f))
    assert len(rows) >= 20
    assert all(r["status"] in ("analysed", "edge") for r in rows)
    assert sum(r["status"] == "analysed" for r in rows) >= 20
    peak = max(float(r["tone-1k"]) for r in rows if r["tone-1k"])
    assert peak > 0.9


def test_a_slow_consumer_gets_gaps_not_a_backlog(pulse_server: PulseServer) -> None:
    """Capture with a 1 s ring buffer and a consumer that sleeps 2.5 s: the oldest audio is
    dropped and reported as overrun gaps, and every frame is accounted for."""
    import threading

    from edge.audio.live import LiveSource
    from edge.audio.streams import Gap

    stop = threading.Event()
    stream = LiveSource(
        "pulse", sample_rate_hz=16000, channels=1, block_seconds=0.05, buffer_seconds=1.0, stop=stop
    ).stream()
    frames = gaps = 0
    began = time.monotonic()
    slept = False
    for item in stream.blocks:
        if isinstance(item, Gap):
            assert item.reason == "overrun"
            gaps += item.frames
        else:
            frames += len(item)
        if not slept and time.monotonic() - began > 0.5:
            time.sleep(2.5)  # the consumer falls 2.5 s behind a 1 s buffer
            slept = True
        if time.monotonic() - began > 4.0:
            stop.set()
    elapsed = time.monotonic() - began
    rate = stream.rate_hz
    # About 1.5 s lost (2.5 s behind, 1 s kept), and delivered + lost = everything captured.
    assert 1.2 * rate < gaps < 1.8 * rate, gaps / rate
    assert abs((frames + gaps) / rate - elapsed) < 0.5, (frames, gaps, elapsed)


def test_the_reader_wakes_for_the_audio_asked_for_not_every_block(
    pulse_server: PulseServer,
) -> None:
    """Blocks of 10 ms with `want` asking for 100 ms each time: the audio comes in about a
    tenth as many deliveries, each holding at least what was asked, none of it lost."""
    import threading

    from edge.audio.live import LiveSource

    stop = threading.Event()
    source = LiveSource(
        "pulse", sample_rate_hz=16000, channels=1, block_seconds=0.01, buffer_seconds=5.0, stop=stop
    )
    stream = source.stream()
    assert stream.want is not None
    ask = 1600
    sizes: list[int] = []
    for item in stream.blocks:
        assert isinstance(item, np.ndarray)
        sizes.append(len(item))
        stream.want(ask)
        if sum(sizes) >= 3 * 16000:
            stop.set()
    later = sizes[2:]  # the first delivery came before any ask
    assert sum(1 for n in later if n >= ask) >= 0.8 * len(later), later
    assert len(sizes) < 3 * 16000 / 160 / 4, len(sizes)  # per block it would be 300
