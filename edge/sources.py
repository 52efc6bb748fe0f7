"""Audio sources as streams of blocks, and the conditioner that readies them for the model.

A source yields `Stream`s: a file, a live capture session, the demo (edge/demo.py). Each
stream yields float32 blocks (frames, channels) at its own rate, or `Gap`s where audio is
missing. `feed()` is the one loop that drives an Analyzer from a stream, for `run` and `scan`
alike, so both score a file identically.

A live stream is one stream for the daemon's whole life, whatever happens to the device: a lost
and reopened device is a `Gap(reason="device")` inside it (edge/live.py), so its clock and the
hourly CSVs run on without a break. A device that comes back at another rate says so in the gap
(`resume_rate_hz`); `feed` then re-tunes the resampler, and time keeps counting in seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.analysis import Analyzer
from edge.audiofile import (
    CLIP_LEVEL,
    AudioFile,
    ChannelChoice,
    count_clipped,
    sanitize,
    select_channel,
    start_time_from_name,
)
from edge.errors import AudioError
from edge.records import StreamInfo
from edge.resample import StreamingResampler
from edge.seconds import second_phase

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


@dataclass
class Counts:
    """What went through a feed, for metrics and logs; shared by every conditioner of a stream."""

    audio_seconds: float = 0.0  # received and analysed
    gap_seconds: dict[str, float] = field(default_factory=dict)  # missing, by reason
    bad_samples: int = 0  # NaN or inf samples replaced by 0
    clipped_samples: int = 0  # at full scale (|x| >= CLIP_LEVEL): legal but suspicious


class Tap(Protocol):
    """Sees the stream's source-rate mono audio before it is resampled (edge/evidence.py)."""

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
    """Channel choice, NaN/inf repair and resampling: stream rate to model rate, mono.

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
            if not (math.isfinite(high) and math.isfinite(low)):
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


class FeedHooks(Protocol):
    """The daemon's view into `feed`, called on the processing thread between blocks."""

    def tick(self, conditioner: Conditioner) -> list[Analyzer] | None:
        """After every block or gap. Returning analyzers (one per lane) asks `feed` to switch
        to them at the next whole second of the stream (a reloaded model), without a break in
        the stream."""
        ...

    def switched(self, lanes: list[Lane]) -> None:
        """The new analyzers now score the stream; each lane's `info` describes the segment
        it began."""
        ...


@dataclass
class Lane:
    """One detector on a stream: its analyzer, the channel it hears, its segment, its tap.

    A stream has one lane, or one per channel (`source.channel: each`) whose events and rows
    are tagged with the channel (`info.channel`)."""

    analyzer: Analyzer
    channel: ChannelChoice
    info: StreamInfo
    tap: Tap | None = None


def feed(
    stream: Stream,
    analyzer: Analyzer,
    info: StreamInfo,
    channel: ChannelChoice,
    stop: threading.Event,
    hooks: FeedHooks | None = None,
    tap: Tap | None = None,
) -> Conditioner:
    """Drive `analyzer` with every block of `stream` until it ends or `stop` is set; `tap`
    sees the audio before the analyzer does."""
    return feed_lanes(stream, [Lane(analyzer, channel, info, tap)], stop, hooks)[0]


def feed_lanes(
    stream: Stream, lanes: list[Lane], stop: threading.Event, hooks: FeedHooks | None = None
) -> list[Conditioner]:
    """Drive every lane's analyzer with every block of `stream` until it ends or `stop` is
    set. The first lane's conditioner counts the stream (audio, gaps, repaired samples)."""
    counts = Counts()
    conditioners = [
        Conditioner(stream.rate_hz, lane.analyzer.rate_hz, lane.channel, counts, lane.tap, i == 0)
        for i, lane in enumerate(lanes)
    ]
    for lane in lanes:
        lane.analyzer.begin(lane.info)
    pending: list[Analyzer] | None = None  # to switch to at the next whole second
    try:
        for item in stream.blocks:
            while pending is not None:
                frames = len(item) if isinstance(item, np.ndarray) else item.frames
                at = _frames_to_next_second(conditioners[0], lanes[0].info)
                if at > frames:
                    break
                if at > 0:  # the part before the boundary still belongs to the old analyzers
                    head = _head(item, at)
                    for lane, conditioner in zip(lanes, conditioners, strict=True):
                        _one(head, lane.analyzer, conditioner)
                    item = _tail(item, at)
                switched = [
                    _switch(lane, new, conditioner)
                    for lane, new, conditioner in zip(lanes, pending, conditioners, strict=True)
                ]
                lanes = [lane for lane, _ in switched]
                conditioners = [conditioner for _, conditioner in switched]
                pending = None
                if hooks is not None:
                    hooks.switched(lanes)
            for lane, conditioner in zip(lanes, conditioners, strict=True):
                _one(item, lane.analyzer, conditioner)
            if hooks is not None:
                replacement = hooks.tick(conditioners[0])
                if replacement is not None:
                    if len(replacement) != len(lanes):
                        raise ValueError(f"{len(replacement)} analyzers for {len(lanes)} lanes")
                    pending = replacement
            if stop.is_set():
                break
        for lane, conditioner in zip(lanes, conditioners, strict=True):
            lane.analyzer.push(conditioner.flush())
    finally:
        for lane, conditioner in zip(lanes, conditioners, strict=True):
            conditioner.finish()
            lane.analyzer.end()
    return conditioners


def _one(item: np.ndarray | Gap, analyzer: Analyzer, conditioner: Conditioner) -> None:
    if isinstance(item, Gap):
        analyzer.push(conditioner.flush())
        analyzer.gap(conditioner.gap(item.frames, item.reason), item.reason)
        if item.resume_rate_hz is not None:
            conditioner.retune(item.resume_rate_hz)
    elif len(item):
        analyzer.push(conditioner.process(item))


def _head(item: np.ndarray | Gap, frames: int) -> np.ndarray | Gap:
    if isinstance(item, Gap):
        return Gap(frames, item.reason)
    return item[:frames]


def _tail(item: np.ndarray | Gap, frames: int) -> np.ndarray | Gap:
    if isinstance(item, Gap):
        return replace(item, frames=item.frames - frames)
    return item[frames:]


def _frames_to_next_second(conditioner: Conditioner, info: StreamInfo) -> int:
    """Stream frames from now to the next whole (UTC) second of this segment, at most."""
    phase = second_phase(info.anchor)
    now = conditioner.seconds_in
    boundary = phase + math.ceil(now - phase - 1e-9)
    return max(0, math.floor((boundary - now) * conditioner.in_rate_hz + 1e-6))


def _switch(lane: Lane, new: Analyzer, conditioner: Conditioner) -> tuple[Lane, Conditioner]:
    """End the lane's analyzer's segment at this whole second and begin `new`'s there.

    The old segment must end at or before the boundary, or both would write a row for the
    second that starts there: the resampler's tail is cut at the boundary (it may reach up to
    one model sample past it).
    """
    old, info = lane.analyzer, lane.info
    offset = conditioner.seconds_in
    tail = conditioner.flush()
    allowed = math.floor(offset * old.rate_hz + 1e-6) - (conditioner.frames_out - len(tail))
    old.push(tail[: max(0, allowed)])
    conditioner.finish()
    old.end()
    anchor = None
    if info.anchor is not None:  # exactly the whole second, free of float rounding
        at = info.anchor + timedelta(seconds=offset, microseconds=500_000)
        anchor = at.replace(microsecond=0)
    labels = [s.label for s in new.labels]
    info = replace(
        info,
        labels=labels,
        anchor=anchor,
        source_rate_hz=conditioner.in_rate_hz,
        offset_seconds=info.offset_seconds + round(offset),
    )
    c = conditioner
    fresh = Conditioner(c.in_rate_hz, new.rate_hz, c.channel, c.counts, c.tap, c.primary)
    new.begin(info)
    return replace(lane, analyzer=new, info=info), fresh


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
