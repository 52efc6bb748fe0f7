"""The clip recorder: a ring of recent audio, and each event's clip written when its audio is in.

A `ClipRecorder` keeps a preallocated ring of the last `pre_roll + max_clip + lag margin`
seconds of the stream's source-rate mono audio, plans each event's clip (edge/outputs/clips/plan.py:
which audio, the name) and hands it to the `ClipStore` (edge/outputs/clips/store.py: retention,
free space, pause and retry) once the audio up to its end has arrived, or at the stream's end
(`end()`, `close()`) with what there is. A long event's clip is written `max_clip_seconds` after
its start, without waiting for the end. Missing audio (gaps) is silence in the clip, so the
clip's time axis stays the stream's. Events may trail the audio by up to `lag_margin_seconds`
(the analyzer's latency); a clip whose event came later than that loses the beginning that has
left the ring.

Interface (the processing thread, one recorder for the daemon's life)::

    recorder = ClipRecorder(settings, folder)   # folder resolved by the caller (e.g. <out>/clips)
    recorder.begin(info)                        # Sink: each stream (rate, anchor, source)
    recorder.push(mono)                         # source-rate float32 mono, BEFORE the analyzer
    recorder.gap(n_frames)                      #   sees the same block, so events find it here
    recorder.retune(rate_hz, at_seconds)        # the device came back at another rate
    event = recorder.stamp(event)               # start and end: clip path set (or None)
    recorder.event(event)                       # Sink: idempotent with stamp/plan
    recorder.end(); recorder.close()            # Sink: write what is pending

`stamp(event)` is `dataclasses.replace(event, clip=plan(event))`: call it before the event goes
to the other sinks, so `start` and `end` messages carry the same path. The store's counters
(clips_written, clips_failed, clips_skipped, clips_deleted, bytes_total, paused) are read
through the recorder by the metrics (edge/ops/counters.py `ClipMetrics`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from edge.outputs.clips.plan import PlannedClip, clip_path
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.clips.store import ClipStore
from edge.records import Event, Sink, StreamInfo

MAX_PATHS = 1024  # event ids remembered so an `end` finds its start's clip path


class ClipRecorder(Sink):
    """Event clips of one lane's audio, for the daemon's life; see the module docstring."""

    def __init__(
        self,
        settings: ClipSettings,
        folder: Path,
        *,
        lag_margin_seconds: float = 10.0,
        retry_seconds: float = 60.0,
    ) -> None:
        """`lag_margin_seconds`: how far the analyzer's events may trail the audio pushed here."""
        self.lag_margin_seconds = lag_margin_seconds
        self.settings = settings
        self.folder = Path(folder)
        self.store = ClipStore(settings, self.folder, retry_seconds)
        self._seconds_total = 0.0  # audio seconds pushed over all streams, gaps included
        self._ring = np.zeros(0, dtype=np.float32)
        self._rate_hz = 0
        self._info: StreamInfo | None = None
        self._written = 0  # samples of this stream pushed since `_origin`, gaps included
        self._origin = 0.0  # stream offset of `_written` 0, s (moves on a retune)
        self._clips: dict[str, PlannedClip] = {}  # by event id, until written
        self._paths: dict[str, Path] = {}  # by event id, the last MAX_PATHS events
        self._next_due = math.inf

    # -- the store's counters, for the metrics ------------------------------------------------

    @property
    def clips_written(self) -> int:
        return self.store.written

    @property
    def clips_failed(self) -> int:
        """Clips that could not be written (a limit, the disk)."""
        return self.store.failed

    @property
    def clips_skipped(self) -> int:
        """Events that got no clip because clips were paused."""
        return self.store.skipped

    @property
    def clips_deleted(self) -> int:
        """Clips removed by retention (size, age)."""
        return self.store.deleted

    @property
    def bytes_total(self) -> int:
        """Bytes of clips in the folder: at start, then after each write."""
        return self.store.bytes_total

    @property
    def paused(self) -> bool:
        return self.store.paused

    @property
    def ring_seconds(self) -> float:
        """Audio kept for clips, s: pre-roll, the longest clip, and the analyzer's lag."""
        s = self.settings
        return s.pre_roll_seconds + s.max_clip_seconds + self.lag_margin_seconds

    def reconfigure(self, settings: ClipSettings, folder: Path) -> None:
        """New settings (a reloaded config) from the next `begin` on; pending clips are
        written first, with the old ones."""
        self._finish_all()
        self.settings, self.folder = settings, Path(folder)
        self.store.reconfigure(settings, self.folder)
        self._rate_hz = 0  # the ring is made anew, at its new length, by `begin`

    # -- the stream ---------------------------------------------------------------------------

    def begin(self, info: StreamInfo) -> None:
        self._finish_all()
        self._info = info
        self._restart(info.source_rate_hz, 0.0)

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        """From stream offset `at_seconds` (after a gap) the audio comes at `rate_hz`.

        Pending clips are written with the audio they have; events keep their clip paths."""
        self._write_pending()
        self._restart(rate_hz, at_seconds)

    def _restart(self, rate_hz: int, origin_seconds: float) -> None:
        """An empty ring for `rate_hz` audio from stream offset `origin_seconds` on."""
        if rate_hz != self._rate_hz:
            self._rate_hz = rate_hz
            self._ring = np.zeros(math.ceil(self.ring_seconds * rate_hz), dtype=np.float32)
        self._written = 0
        self._origin = origin_seconds

    def push(self, mono: np.ndarray) -> None:
        """Source-rate mono float32 audio (1-D) of the current stream."""
        self._feed(mono, len(mono))

    def gap(self, n_frames: int) -> None:
        """`n_frames` source-rate frames are missing: silence in any clip that spans them."""
        self._feed(None, max(0, int(n_frames)))

    def end(self) -> None:
        self._finish_all()

    def close(self) -> None:
        self._finish_all()

    # -- events -------------------------------------------------------------------------------

    def stamp(self, event: Event) -> Event:
        """The event with its clip path set (None when it gets no clip)."""
        return dataclasses.replace(event, clip=self.plan(event))

    def event(self, event: Event) -> None:
        self.plan(event)

    def plan(self, event: Event) -> str | None:
        """The clip path for this event (its start or end message); registers the clip.

        Idempotent per event id and message type, so `stamp` and `event` may both see it.
        """
        if not self.settings.enabled or self._info is None:
            return None
        if event.type == "end":
            path = self._paths.get(event.id)
            clip = self._clips.get(event.id)
            if clip is not None and event.end_offset is not None and not clip.ended:
                clip.end(event.end_offset, self._origin, self.settings, self._rate_hz)
                self._next_due = min(self._next_due, clip.due)
                if self._written >= clip.due:
                    self._write_due()
            return None if path is None else str(path)
        if event.id in self._paths:
            return str(self._paths[event.id])
        if not self.store.admit(self._seconds_total):
            return None
        taken = {clip.path for clip in self._clips.values()}
        path = clip_path(self.folder, event, self._info.source, taken)
        clip = PlannedClip.starting(
            path, event.start_offset, self._origin, self.settings, self._rate_hz
        )
        self._clips[event.id] = clip
        self._paths[event.id] = path
        if len(self._paths) > MAX_PATHS:  # bounded: far more than events open at once
            del self._paths[next(iter(self._paths))]
        self._next_due = min(self._next_due, clip.due)
        if self._written >= clip.due:  # the start came later than max_clip after it happened
            self._write_due()
        return str(path)

    # -- the ring -----------------------------------------------------------------------------

    def _feed(self, mono: np.ndarray | None, n: int) -> None:
        """Store `n` frames (`mono`, or silence for None), writing clips as they fall due.

        A block is cut at each due point, so a block longer than the ring cannot overwrite a
        clip's audio before the clip is written.
        """
        if self._info is None:
            raise RuntimeError("ClipRecorder: push or gap before begin")
        i = 0
        while i < n:
            take = n - i
            if self._next_due < math.inf:
                take = min(take, max(1, int(self._next_due) - self._written))
            self._store(None if mono is None else mono[i : i + take], take)
            i += take
            if self._written >= self._next_due:
                self._write_due()

    def _store(self, mono: np.ndarray | None, n: int) -> None:
        cap = len(self._ring)
        kept = min(n, cap)  # a block longer than the ring leaves only its tail
        at = (self._written + n - kept) % cap
        head = min(kept, cap - at)
        if mono is None:
            self._ring[at : at + head] = 0.0
            self._ring[: kept - head] = 0.0
        else:
            self._ring[at : at + head] = mono[n - kept : n - kept + head]
            self._ring[: kept - head] = mono[n - kept + head :]
        self._written += n
        self._seconds_total += n / self._rate_hz

    def _read(self, first: int, stop: int) -> np.ndarray:
        """Stream samples [first, stop) still in the ring (older ones are gone), as a copy."""
        cap = len(self._ring)
        first = max(first, self._written - cap, 0)
        stop = min(stop, self._written)
        out = np.zeros(max(0, stop - first), dtype=np.float32)
        if len(out):
            at = first % cap
            head = min(len(out), cap - at)
            out[:head] = self._ring[at : at + head]
            out[head:] = self._ring[: len(out) - head]
        return out

    # -- writing ------------------------------------------------------------------------------

    def _write_due(self) -> None:
        for event_id, clip in list(self._clips.items()):
            if clip.due <= self._written:
                del self._clips[event_id]
                self._write(clip, clip.due)
        self._next_due = min((c.due for c in self._clips.values()), default=math.inf)

    def _write_pending(self) -> None:
        """Every pending clip is written now, with the audio there is."""
        for clip in self._clips.values():
            self._write(clip, min(clip.due, self._written))
        self._clips.clear()
        self._next_due = math.inf

    def _finish_all(self) -> None:
        """The stream is over: pending clips are written, and event ids forgotten."""
        self._write_pending()
        self._paths.clear()

    def _write(self, clip: PlannedClip, stop: int) -> None:
        audio = self._read(clip.first, stop)
        if len(audio):
            self.store.write(clip.path, audio, self._rate_hz, self._seconds_total, time.time())
