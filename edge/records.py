"""What the pipeline hands to its sinks: per-second rows and event messages.

Times are absolute UTC (`datetime`) when the stream has an anchor (a live device, a file with a
timestamp in its name, `--start`), and always also as seconds from the start of the stream, which
is what SongExplorer tics and `offset_seconds` need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import numpy as np

ANALYSED = "analysed"
EDGE = "edge"  # audio arrived, but too near a stream start or end to centre a window here


def gap_status(reason: str) -> str:
    """Status of a second with no audio analysed: `gap:overrun`, `gap:device`, ..."""
    return f"gap:{reason}"


def iso(t: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z: 2026-11-22T10:23:14.350Z."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class StreamInfo:
    """One continuous stretch of audio: a file, or a live stream until it is reopened."""

    source: str  # file path or device name
    labels: list[str]  # the labels kept, in column order
    anchor: datetime | None  # UTC time of the first sample, when known
    source_rate_hz: int  # the recording's own rate (SongExplorer tics count these)
    channel: int | None = None  # which input channel, when detecting per channel
    level_unit: str | None = None  # sound levels in the rows: dBFS, dB re 20 µPa, ...; None: off
    level_bands: tuple[str, ...] = ()  # band names (nominal centre, Hz) of the rows' levels
    # Where this segment starts in the stream, s: 0, or the whole second a reloaded model took
    # over. Offsets in rows and events count from the segment; outputs add this back.
    offset_seconds: float = 0.0
    # The labels that make events, set by the Analyzer: all of them (None), or all but the
    # bundle's background labels, which are scored per second but never an event.
    event_labels: tuple[str, ...] | None = None
    # The model that scores this segment (bundle name and version), set by the Analyzer:
    # event messages name it, and a reload that switches models begins a new segment.
    model: str = ""
    model_version: str = ""

    def at(self, offset_seconds: float) -> datetime | None:
        return None if self.anchor is None else self.anchor + timedelta(seconds=offset_seconds)


@dataclass(frozen=True)
class SecondRow:
    """One second of one stream: its status and, when analysed, a probability per kept label."""

    offset_seconds: float  # start of this second, seconds from the stream's first sample
    time: datetime | None  # absolute start of this second, when the stream has an anchor
    status: str  # ANALYSED, EDGE or gap_status(reason)
    scores: np.ndarray  # float32 per kept label; NaN when not analysed
    levels: Levels | None = None  # the second's sound levels, when on and audio arrived
    channel: int | None = None  # the input channel, with one detector per channel


@dataclass(frozen=True)
class Event:
    """A `start` or `end` message of one detected event; both messages share `id`."""

    id: str
    type: Literal["start", "end"]
    label: str
    start_offset: float  # seconds from the stream's first sample
    end_offset: float | None
    start: datetime | None
    end: datetime | None
    score_max: float
    score_mean: float
    threshold: float
    source: str
    channel: int | None = None
    clip: str | None = None
    # A piece after a split at max_duration_seconds: it began without crossing `threshold`.
    continued: bool = False

    def to_json(
        self, model: str, model_version: str, device: str, offset_seconds: float = 0.0
    ) -> dict[str, object]:
        """The event payload of the MQTT contract (also one JSONL line); `offset_seconds` is
        where the event's segment starts in its stream (StreamInfo.offset_seconds)."""
        start_offset = self.start_offset + offset_seconds
        end_offset = None if self.end_offset is None else self.end_offset + offset_seconds
        return {
            "id": self.id,
            "type": self.type,
            "label": self.label,
            "start": iso(self.start) if self.start else None,
            "end": iso(self.end) if self.end else None,
            "start_offset": round(start_offset, 4),
            "end_offset": None if end_offset is None else round(end_offset, 4),
            "score_max": round(self.score_max, 4),
            "score_mean": round(self.score_mean, 4),
            "threshold": self.threshold,
            "model": model,
            "model_version": model_version,
            "device": device,
            "source": self.source,
            "channel": self.channel,
            "clip": self.clip,
            "continued": self.continued,
        }


class Sink:
    """Base: does nothing. Subclasses override what they need."""

    def begin(self, info: StreamInfo) -> None:
        pass

    def second(self, row: SecondRow) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def end(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Levels:
    """One second's levels, in the meter's `unit` (dBFS or calibrated dB)."""

    dbfs_or_db: float  # broadband
    bands: dict[str, float]  # nominal centre frequency (Hz, as text) -> band level
    audio_seconds: float  # how much audio this second held (less than 1 at edges and gaps)
