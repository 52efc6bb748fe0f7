"""Audio sources as streams of blocks, and the conditioner that readies them for the model.

A source yields `Stream`s: a file, a live capture session, the demo (edge/audio/demo.py). Each
stream yields float32 blocks (frames, channels) at its own rate, or `Gap`s where audio is
missing. The `Conditioner` picks the channel, repairs bad samples (NaN, inf, absurd) and
resamples to the model's rate; edge/pipeline.py drives the analyzers from it.

A live stream is one stream for the daemon's whole life, whatever happens to the device: a lost
and reopened device is a `Gap(reason="device")` inside it (edge/audio/live.py), so its clock and
the hourly CSVs run on without a break. A device that comes back at another rate says so in the
gap (`resume_rate_hz`); the pipeline then re-tunes the resampler, and time keeps counting in
seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.audio.files import (
    CLIP_LEVEL,
    AudioFile,
    ChannelChoice,
    count_clipped,
    is_sane,
    sanitize,
    select_channel,
    start_time_from_name,
)
from edge.audio.resample import StreamingResampler
from edge.errors import AudioError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    frames: int  # at the stream's rate before the gap
    reason: str  # overrun | device | overload
    resume_rate_hz: int | None = None  # the stream's rate after the gap, if it changed


@dataclass
class Stream:
    name: str  # file path or device name
    anchor: datetime | None  # UTC time of the first frame
    rate_hz: int  # of the first block; a Gap's resume_rate_hz may change it later
    channels: int
    blocks: Iterator[np.ndarray | Gap]
    duration_seconds: float | None = None  # known for files
    # A live source's: deliver the next block only once this many more frames have come (the
    # rest of the analyser's next window), so the reader wakes once a hop, not once a block.
    want: Callable[[int], None] | None = None


@dataclass
class Counts:
    """What went through a feed, for metrics and logs; shared by every conditioner of a stream."""

    audio_seconds: float = 0.0  # received and analysed
    gap_seconds: dict[str, float] = field(default_factory=dict)  # missing, by reason
    bad_samples: int = 0  # NaN or inf samples replaced by 0
    clipped_samples: int = 0  # at full scale (|x| >= CLIP_LEVEL): legal but suspicious


class Tap(Protocol):
    """Sees the stream's source-rate mono audio before resampling (edge/outputs/evidence.py)."""

    def audio(self, mono: np.ndarray) -> None:
        """A block (1-D float32, valid only during the call)."""
        ...

    def missing(self, frames: int) -> None:
        """`frames` source-rate frames are missing."""
        ...

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        """From stream offset `at_seconds` on, the audio comes at `rate_hz`."""
        ...

    def finish(self) -> None:
        """The stream, or the segment of it one model scored, ends here."""
        ...


class Conditioner:
    """Channel choice, bad-sample repair and resampling: stream rate to model rate, mono.

    A `tap` sees the mono audio at the stream's rate, before resampling."""

    def __init__(
        self,
        in_rate_hz: int,
        out_rate_hz: int,
        channel: ChannelChoice = "mix",
        counts: Counts | None = None,
        tap: Tap | None = None,
        primary: bool = True,
    ) -> None:
        self.in_rate_hz, self.out_rate_hz, self.channel = in_rate_hz, out_rate_hz, channel
        self.counts = counts or Counts()
        self.tap = tap
        # With one detector per channel, several conditioners see each block: the first
        # (primary) repairs the block in place and counts it; the others only take their channel.
        self.primary = primary
        self._resampler = StreamingResampler(in_rate_hz, out_rate_hz)
        self._mono = np.empty(0, dtype=np.float32)
        self.frames_in = 0  # stream frames consumed at in_rate_hz, gaps included: the clock
        self.frames_out = 0  # model-rate samples produced, gaps included
        self._base_seconds = 0.0  # stream seconds before the last retune
        self._base_out = 0  # model-rate samples before the last retune

    @property
    def bad_samples(self) -> int:
        return self.counts.bad_samples

    @property
    def seconds_in(self) -> float:
        """Stream time consumed, s, gaps included."""
        return self._base_seconds + self.frames_in / self.in_rate_hz

    def process(self, block: np.ndarray) -> np.ndarray:
        if len(block) > len(self._mono):
            self._mono = np.empty(len(block), dtype=np.float32)  # grows once, to the block size
        counts = self.counts
        if self.primary and len(block):
            # One max and one min answer both questions in the common case (finite, unclipped).
            high, low = block.max(), block.min()
            if not is_sane(high, low):
                counts.bad_samples += sanitize(block)
                high, low = block.max(), block.min()
            if high >= CLIP_LEVEL or low <= -CLIP_LEVEL:
                counts.clipped_samples += count_clipped(block)
        mono = select_channel(block, self.channel, self._mono)
        if self.tap is not None:
            self.tap.audio(mono)
        out = self._resampler.process(mono)
        self.frames_in += len(block)
        self.frames_out += len(out)
        if self.primary:
            counts.audio_seconds += len(block) / self.in_rate_hz
        return out

    def frames_wanted(self, samples: int) -> int:
        """Stream frames still to come before `samples` more model-rate samples are out."""
        return self._resampler.inputs_wanted(samples)

    def flush(self) -> np.ndarray:
        """The resampler's withheld tail, at the end of a stream or before a gap."""
        out = self._resampler.flush()
        self.frames_out += len(out)
        return out

    def gap(self, frames: int, reason: str) -> int:
        """`frames` stream frames are missing (`reason`): the model-rate samples that stand
        for them.

        Counted from the stream's total so rounding never drifts the clock.
        """
        if self.primary:
            seconds = frames / self.in_rate_hz
            gaps = self.counts.gap_seconds
            gaps[reason] = gaps.get(reason, 0.0) + seconds
        self.frames_in += frames
        target = self._base_out + round(self.frames_in * self.out_rate_hz / self.in_rate_hz)
        missing = max(0, target - self.frames_out)
        self.frames_out += missing
        self._resampler.reset()
        if self.tap is not None:
            self.tap.missing(frames)
        return missing

    def retune(self, in_rate_hz: int) -> None:
        """From now on the stream comes at `in_rate_hz` (call after a flush or a gap)."""
        if in_rate_hz == self.in_rate_hz:
            return
        self._base_seconds = self.seconds_in
        self._base_out = self.frames_out
        self.frames_in = 0
        self.in_rate_hz = in_rate_hz
        self._resampler = StreamingResampler(in_rate_hz, self.out_rate_hz)
        if self.tap is not None:
            self.tap.retune(in_rate_hz, self._base_seconds)

    def finish(self) -> None:
        """This stream or segment ends: the tap completes its last partial second."""
        if self.tap is not None:
            self.tap.finish()


def repaired(name: str, bad_samples: int) -> str:
    """The log line for a stream whose bad samples the Conditioner repaired."""
    return f"{name}: {bad_samples} bad samples (NaN, infinite, beyond ±1000) replaced or clipped"


def anchor_for(path: Path, start: datetime | None, following: datetime | None) -> datetime | None:
    """A file's absolute start: the time in its name; else, with `start`, where the file before
    it ended (`following`; the first file: `start`); else none (a file without a time in its
    name never borrows one from the file before it)."""
    return start_time_from_name(path) or (following if start is not None else None)


def file_streams(
    files: list[Path],
    *,
    block_seconds: float,
    speed: float,
    stop: threading.Event,
    start: datetime | None = None,
    on_error: Callable[[Path, AudioError], None] | None = None,
    anchors: Mapping[Path, datetime | None] | None = None,
) -> Iterator[Stream]:
    """One stream per file, replayed at `speed` (1 real time, 0 as fast as possible).

    Each file is anchored by `anchor_for`, or by `anchors` when the caller worked them out
    over a longer list (a resumed scan, a worker's share). Unusable files go to `on_error`
    (or raise).
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
        anchor = anchors[path] if anchors is not None else anchor_for(path, start, next_anchor)
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
