"""Evidence for people: sound levels and event clips, taken from the audio the device delivers.

One `Evidence` stands between a stream's audio and its sinks, on two sides:

- the tap (`audio`, `missing`, `retune`, `finish`): the Conditioner hands it every block of
  source-rate mono audio, and every gap, before resampling the block for the model. The level
  meter and the clip ring so see the device's own rate (levels up to its Nyquist frequency,
  clips as recorded), not the model's.
- the sink side (a `Sink` wrapping the real sinks): each per-second row gets that second's
  levels, and each event message the path of its clip, on the way through.

The tap runs ahead of the model by at least the resampler's delay, so second k's levels are
usually complete when row k comes, and an event's audio is already in the clip ring when the
event does. Not at a gap: the Analyzer then emits the rows up to half a window past the gap's
end before the audio after it arrives, so the second the gap ends in has no level yet. Such a
row is held back until the meter completes its second (at most a second of audio later, or at
`finish`), and later rows queue behind it to stay in order; events are not held.

Both sides run on the processing thread: no locks. Per block the tap costs two copies (the
meter's second buffer and the clip ring); the level FFT runs once a second.

    evidence = Evidence(Fanout(sinks), settings.levels, ClipRecorder(settings.clips, folder))
    analyzer = Analyzer(..., sink=evidence)
    feed(stream, analyzer, info, channel, stop, tap=evidence)
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.audio.levels import LevelMeter, LevelSettings
from edge.clock import second_phase
from edge.errors import ConfigError
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.clips.settings import ClipSettings
from edge.records import Event, Levels, SecondRow, Sink, StreamInfo

logger = logging.getLogger(__name__)


class Evidence(Sink):
    """Levels on per-second rows and clips for events (see the module docstring)."""

    def __init__(self, sink: Sink, levels: LevelSettings, clips: ClipRecorder | None) -> None:
        self.sink = sink
        self.settings = levels
        self.clips = clips
        self.meter: LevelMeter | None = None
        self._phase = 0.0  # the stream's second phase, as in SecondAggregator
        self._bin_base = 0  # the stream's second that the meter counts as its second 0
        self._retired: dict[int, Levels] = {}  # seconds measured by a meter before a retune
        self._held: deque[SecondRow] = deque()  # rows whose second the meter is still filling
        self._next: tuple[LevelSettings, ClipSettings, Path] | None = None  # from a reload

    # -- the tap (Conditioner) ----------------------------------------------------------------

    def audio(self, mono: np.ndarray) -> None:
        """Source-rate mono float32 audio, continuing the stream."""
        if self.meter is not None:
            self.meter.push(mono)
            if self._held:
                self._release()
        if self.clips is not None:
            self.clips.push(mono)

    def missing(self, frames: int) -> None:
        """`frames` source-rate frames of the stream are missing."""
        if self.meter is not None:
            self.meter.gap(frames)
            if self._held:
                self._release()
        if self.clips is not None:
            self.clips.gap(frames)

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        """From `at_seconds` into the stream (after a gap) the audio comes at `rate_hz`."""
        if self.meter is not None:
            self.meter.finish()
            done = self.meter.pop(sys.maxsize)
            self._retired.update({self._bin_base + k: v for k, v in done.items()})
            local_phase = (self._phase - at_seconds) % 1.0
            try:
                self.meter = LevelMeter(rate_hz, self.settings, local_phase)
            except ConfigError as exc:  # no band below the new rate's Nyquist frequency
                logger.error("%s: no sound levels from here on", exc)
                self.meter = None
                self._release(everything=True)
            else:
                self._bin_base = round(at_seconds + local_phase - self._phase)
                self._release()
        if self.clips is not None:
            self.clips.retune(rate_hz, at_seconds)

    def finish(self) -> None:
        """The stream (or a model's segment of it) ends: the last partial second completes.

        Call before `Analyzer.end()`, which emits the last rows."""
        if self.meter is not None:
            self.meter.finish()
        self._release(everything=True)

    # -- the sink side (Analyzer) -------------------------------------------------------------

    def reconfigure(self, levels: LevelSettings, clips: ClipSettings, folder: Path) -> None:
        """A reloaded config's level and clip settings (clips under `folder`), taken up at the
        next `begin`: where the reloaded model's segment starts."""
        self._next = (levels, clips, folder)

    def begin(self, info: StreamInfo) -> None:
        self._release(everything=True)  # none, unless a stream ended without `finish`
        if self._next is not None:
            self.settings, clips, folder = self._next
            self._next = None
            if self.clips is not None:
                self.clips.reconfigure(clips, folder)
            elif clips.enabled:
                self.clips = ClipRecorder(clips, folder)
        self.meter = None
        self._retired.clear()
        self._bin_base = 0
        self._phase = second_phase(info.anchor)
        if self.settings.enabled:
            try:
                self.meter = LevelMeter(info.source_rate_hz, self.settings, self._phase)
            except ConfigError as exc:  # e.g. no band below this input's Nyquist frequency
                logger.error("%s: no sound levels for %s", exc, info.source)
            else:
                bands = tuple(self.meter.band_names)
                info = replace(info, level_unit=self.meter.unit, level_bands=bands)
        if self.clips is not None:
            self.clips.begin(info)
        self.sink.begin(info)

    def second(self, row: SecondRow) -> None:
        if self.meter is not None and (self._held or self._filling(row)):
            self._held.append(row)
            return
        self._pass(row)

    def _filling(self, row: SecondRow) -> bool:
        """Is the meter still taking in this row's second?"""
        assert self.meter is not None
        return round(row.offset_seconds - self._phase) >= self._bin_base + self.meter.filling

    def _release(self, *, everything: bool = False) -> None:
        """Pass on the held rows whose seconds are complete (all of them: `everything`)."""
        held = self._held
        while held and (everything or self.meter is None or not self._filling(held[0])):
            self._pass(held.popleft())

    def _pass(self, row: SecondRow) -> None:
        """The row, with its second's levels, to the sinks."""
        if self.meter is not None:
            levels = self._take(round(row.offset_seconds - self._phase))
            if levels is not None:
                row = replace(row, levels=levels)
        self.sink.second(row)

    def _take(self, k: int) -> Levels | None:
        """Second `k`'s levels (and forget the seconds before it)."""
        assert self.meter is not None
        mine = self.meter.pop(k - self._bin_base + 1).get(k - self._bin_base)
        if not self._retired:
            return mine
        older = self._retired.pop(k, None)
        for stale in [j for j in self._retired if j < k]:
            del self._retired[stale]
        if older is None or (mine is not None and mine.audio_seconds > older.audio_seconds):
            return mine  # a second split by a retune: the part with more audio speaks for it
        return older

    def event(self, event: Event) -> None:
        if self.clips is not None:
            event = self.clips.stamp(event)
        self.sink.event(event)

    def end(self) -> None:
        self._release(everything=True)
        if self.clips is not None:
            self.clips.end()
        self.sink.end()

    def close(self) -> None:
        if self.clips is not None:
            self.clips.close()
        self.sink.close()
