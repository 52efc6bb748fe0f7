"""Audio sources as streams of blocks, and the conditioner that readies them for the model.

A source yields `Stream`s: a file, a live capture session, the demo. Each stream yields float32
blocks (frames, channels) at its own rate, or `Gap`s where audio is missing. `feed()` is the one
loop that drives an Analyzer from a stream, for `run` and `scan` alike, so both score a file
identically.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.analysis import Analyzer
from edge.audiofile import AudioFile, ChannelChoice, sanitize, select_channel, start_time_from_name
from edge.errors import AudioError
from edge.records import StreamInfo
from edge.resample import StreamingResampler

if TYPE_CHECKING:
    from edge.capture import Capture
    from edge.ringbuffer import RingBuffer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    frames: int  # at the stream's own rate
    reason: str  # overrun | device | overload


@dataclass
class Stream:
    name: str  # file path or device name
    anchor: datetime | None  # UTC time of the first frame
    rate_hz: int
    channels: int
    blocks: Iterator[np.ndarray | Gap]
    duration_seconds: float | None = None  # known for files


class Conditioner:
    """Channel choice, NaN/inf repair and resampling: stream rate to model rate, mono."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int, channel: ChannelChoice = "mix") -> None:
        self.in_rate_hz, self.out_rate_hz, self.channel = in_rate_hz, out_rate_hz, channel
        self._resampler = StreamingResampler(in_rate_hz, out_rate_hz)
        self._mono = np.empty(0, dtype=np.float32)
        self.frames_in = 0  # stream frames consumed, gaps included: the clock
        self.frames_out = 0  # model-rate samples produced, gaps included
        self.bad_samples = 0  # NaN or inf samples replaced by 0

    def process(self, block: np.ndarray) -> np.ndarray:
        if len(block) > len(self._mono):
            self._mono = np.empty(len(block), dtype=np.float32)  # grows once, to the block size
        self.bad_samples += sanitize(block)
        mono = select_channel(block, self.channel, self._mono)
        out = self._resampler.process(mono)
        self.frames_in += len(block)
        self.frames_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """The resampler's withheld tail, at the end of a stream or before a gap."""
        out = self._resampler.flush()
        self.frames_out += len(out)
        return out

    def gap(self, frames: int) -> int:
        """`frames` stream frames are missing: the model-rate samples that stand for them.

        Counted from the stream's total so rounding never drifts the clock.
        """
        self.frames_in += frames
        target = round(self.frames_in * self.out_rate_hz / self.in_rate_hz)
        missing = max(0, target - self.frames_out)
        self.frames_out += missing
        self._resampler.reset()
        return missing


def feed(
    stream: Stream,
    analyzer: Analyzer,
    info: StreamInfo,
    channel: ChannelChoice,
    stop: threading.Event,
) -> Conditioner:
    """Drive `analyzer` with every block of `stream` until it ends or `stop` is set."""
    conditioner = Conditioner(stream.rate_hz, analyzer.rate_hz, channel)
    analyzer.begin(info)
    try:
        for item in stream.blocks:
            if isinstance(item, Gap):
                analyzer.push(conditioner.flush())
                analyzer.gap(conditioner.gap(item.frames), item.reason)
            else:
                analyzer.push(conditioner.process(item))
            if stop.is_set():
                break
        analyzer.push(conditioner.flush())
    finally:
        analyzer.end()
    return conditioner


def file_streams(
    files: list[Path],
    *,
    block_seconds: float,
    speed: float,
    stop: threading.Event,
    start: datetime | None = None,
    on_error: Callable[[Path, AudioError], None] | None = None,
) -> Iterator[Stream]:
    """One stream per file, replayed at `speed` (1 real time, 0 as fast as possible).

    A file's anchor is the timestamp in its name, else `start` for the first file, each next
    file continuing where the previous one ended. Unusable files go to `on_error` (or raise).
    """
    next_anchor = start
    for path in files:
        if stop.is_set():
            return
        try:
            audio = AudioFile.open(path)
        except AudioError as exc:
            if on_error is None:
                raise
            on_error(path, exc)
            continue
        anchor = start_time_from_name(path) or next_anchor
        if anchor is not None:
            next_anchor = anchor + timedelta(seconds=audio.duration_seconds)
        block = max(1, round(block_seconds * audio.sample_rate_hz))
        yield Stream(
            str(path),
            anchor,
            audio.sample_rate_hz,
            audio.channels,
            _paced(audio, block, speed, stop),
            audio.duration_seconds,
        )


def _paced(
    audio: AudioFile, block: int, speed: float, stop: threading.Event
) -> Iterator[np.ndarray]:
    with audio:
        began = time.monotonic()
        done = 0
        for samples in audio.blocks(block):
            if speed > 0:
                # Wait until the wall clock reaches this block's end, as a device would deliver it.
                due = began + (done + len(samples)) / audio.sample_rate_hz / speed
                if stop.wait(max(0.0, due - time.monotonic())):
                    return
            done += len(samples)
            yield samples


DEMO_RATE_HZ = 16000
DEMO_TONES_HZ = (1000.0, 3000.0)


def demo_stream(
    block_seconds: float, stop: threading.Event, anchor: datetime, seed: int = 7
) -> Stream:
    """Endless synthetic audio in real time: tone bursts at 1 and 3 kHz in noise.

    What the bundled `tone` model listens for, so a machine without a microphone still shows
    the whole pipeline working.
    """
    return Stream("demo", anchor, DEMO_RATE_HZ, 1, _demo_blocks(block_seconds, stop, seed))


def _demo_blocks(block_seconds: float, stop: threading.Event, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    block = round(block_seconds * DEMO_RATE_HZ)
    out = np.empty((block, 1), dtype=np.float32)
    index = np.arange(block)
    began = time.monotonic()
    n = 0  # samples produced so far
    burst_start, burst_end, freq = DEMO_RATE_HZ, DEMO_RATE_HZ, 0.0
    while True:
        due = began + (n + block) / DEMO_RATE_HZ
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        if n >= burst_end:  # schedule the next burst: 1-4 s of quiet, then 0.4-1.5 s of tone
            burst_start = n + int(rng.uniform(1.0, 4.0) * DEMO_RATE_HZ)
            burst_end = burst_start + int(rng.uniform(0.4, 1.5) * DEMO_RATE_HZ)
            freq = float(rng.choice(DEMO_TONES_HZ))
        out[:, 0] = rng.normal(0.0, 0.01, block)
        on = (n + index >= burst_start) & (n + index < burst_end)
        if on.any():
            out[on, 0] += 0.3 * np.sin(2 * np.pi * freq * (n + index[on]) / DEMO_RATE_HZ)
        n += block
        yield out


SILENT_DEVICE_SECONDS = 5.0  # no callback for this long: the device is gone


def live_stream(
    device: int | str | None,
    *,
    sample_rate_hz: int | None,
    channels: int,
    block_seconds: float,
    buffer_seconds: float,
    stop: threading.Event,
    first_audio_timeout: float = 10.0,
) -> Stream:
    """Capture from an input device through the ring buffer.

    The PortAudio callback only copies into the ring; this generator, on the processing
    thread, reads it. Audio the ring had to drop because processing fell behind comes out as
    a `Gap(reason="overrun")`, so it is counted and shown, never silently lost.
    """
    from edge.capture import Capture, resolve_device
    from edge.clock import utc_now
    from edge.ringbuffer import RingBuffer

    info = resolve_device(device)
    rate = sample_rate_hz or round(info.default_sample_rate_hz)
    ring = RingBuffer(max(1, round(buffer_seconds * rate)), channels)
    capture = Capture(ring, info, rate, channels, block_seconds)
    capture.start()
    if not capture.wait_for_audio(first_audio_timeout):
        capture.close()
        raise AudioError(
            f"input device {info.describe()}: no audio within {first_audio_timeout:g} s"
        )
    # The first frame was captured about one block before its callback ran.
    anchor = utc_now() - timedelta(seconds=capture.block_frames / rate)
    return Stream(info.name, anchor, rate, channels, _drain(capture, ring, stop))


def _drain(capture: Capture, ring: RingBuffer, stop: threading.Event) -> Iterator[np.ndarray | Gap]:
    buffer = np.empty((capture.block_frames * 4, capture.channels), dtype=np.float32)
    period = capture.block_frames / capture.sample_rate_hz / 2
    try:
        while not stop.wait(period):
            while True:
                n, dropped = ring.read(buffer)
                if dropped:
                    yield Gap(dropped, "overrun")
                if n == 0:
                    break
                yield buffer[:n]
            if time.monotonic() - capture.last_callback_monotonic > SILENT_DEVICE_SECONDS:
                raise AudioError(
                    f"input device {capture.device.describe()}: no audio for"
                    f" {SILENT_DEVICE_SECONDS:g} s (unplugged or stopped)"
                )
    finally:
        capture.close()
