"""The one loop that drives Analyzers from a stream, for `run` and `scan` alike.

`feed()` scores a stream with one Analyzer, `feed_lanes()` with several (one per channel), so a
file is scored identically by both commands. Between blocks the daemon's hooks may hand over
new analyzers (a reloaded model); the switch happens at the next whole second of the stream.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Protocol

import numpy as np

from edge.audio.files import ChannelChoice
from edge.audio.streams import Conditioner, Counts, Gap, Stream, Tap
from edge.clock import second_phase
from edge.detection.analysis import Analyzer
from edge.records import StreamInfo


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
            if stream.want is not None:
                stream.want(_frames_wanted(lanes, conditioners))
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


def _frames_wanted(lanes: list[Lane], conditioners: list[Conditioner]) -> int:
    """Stream frames still to come before some lane's next window is complete."""
    return min(
        conditioner.frames_wanted(lane.analyzer.samples_wanted())
        for lane, conditioner in zip(lanes, conditioners, strict=True)
    )


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
