"""A candidate model in shadow: it scores the audio the deployed model hears, on its own thread.

    lane 0's conditioner ──tap──► ShadowTap: copy into a preallocated ring (RingBuffer)
                                        │  thread "shadow"
                                        ▼
          feed(a Stream read from the ring) ──► Analyzer (the shadow bundle)
                                                  ──► DaemonFiles(<output.dir>/shadow/)

The processing thread only copies each block into the ring (no allocation, no waiting on a
live source), so the shadow cannot hold up listening. When it falls `shadow.buffer_seconds`
behind, the oldest audio is overwritten: the shadow sees a gap (reason `overload`) and
`soundwatch_shadow_skipped_seconds` counts it. Reading files, nothing is live to lose, so the
processing thread waits for room instead and the shadow scores every second. A shadow whose
bundle fails logs one line and stops; the rest of its audio counts as skipped and the daemon
goes on. It hears lane 0 (the first channel with `source.channel: each`), scores with its
bundle's own labels, thresholds and event rules (the config's `labels` and `events` apply to
the deployed model), writes rows and events in the daemon's layout under
`<output.dir>/shadow/<device>/`, and never publishes to MQTT. `soundwatch shadow-diff` lists
where the two disagree (edge/disagree.py).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from edge.audio.ringbuffer import RingBuffer
from edge.audio.streams import Gap, Stream, Tap
from edge.builders import build_analyzer
from edge.config import EventsConfig, Loaded
from edge.errors import SoundwatchError
from edge.ops.metrics import Metrics
from edge.outputs.files import DaemonFiles
from edge.pipeline import feed
from edge.records import StreamInfo

logger = logging.getLogger(__name__)

_READ_FRAMES = 4096  # frames the shadow thread takes from the ring at a time
_JOIN_SECONDS = 30.0  # at the end of a stream, the most the daemon waits for the shadow


class Shadow:
    """The shadow bundle's analyzer and its outputs; `start` and `end` frame each stream."""

    def __init__(self, loaded: Loaded, metrics: Metrics) -> None:
        config = loaded.config
        self.files = DaemonFiles(loaded.resolve(config.output.dir) / "shadow", config.output.device)
        self.bundle, self.analyzer = build_analyzer(shadow_loaded(loaded), self.files)
        self.buffer_seconds = config.shadow.buffer_seconds
        self.metrics = metrics
        self.tap: ShadowTap | None = None
        self._thread: threading.Thread | None = None
        self._counted_frames = 0

    @classmethod
    def build(cls, loaded: Loaded, metrics: Metrics) -> Shadow | None:
        """The config's shadow, or None (none asked for, or its bundle does not load: then one
        log line, and the deployed model listens on)."""
        if not loaded.config.shadow.bundle:
            return None
        try:
            shadow = cls(loaded, metrics)
        except SoundwatchError as exc:
            logger.error("shadow: %s; going on without it", exc)
            return None
        logger.info("shadow model %s scores beside, into %s", shadow.name, shadow.files.root)
        return shadow

    @property
    def name(self) -> str:
        return f"{self.bundle.manifest.name} {self.bundle.manifest.version}"

    def start(self, stream: Stream, wait_for_room: bool) -> ShadowTap:
        """Score `stream` (as lane 0 hears it) from now on; returns the tap to feed it."""
        frames = max(_READ_FRAMES, round(self.buffer_seconds * stream.rate_hz))
        tap = ShadowTap(RingBuffer(frames), stream.rate_hz, wait_for_room)
        self.tap, self._counted_frames = tap, 0
        labels = [s.label for s in self.analyzer.labels]
        shadow_stream = Stream(stream.name, stream.anchor, stream.rate_hz, 1, tap.blocks())
        info = StreamInfo(stream.name, labels, stream.anchor, stream.rate_hz)
        self._thread = threading.Thread(
            target=self._run, args=(shadow_stream, info, tap), name="shadow", daemon=True
        )
        self._thread.start()
        return tap

    def _run(self, stream: Stream, info: StreamInfo, tap: ShadowTap) -> None:
        try:
            feed(stream, self.analyzer, info, "mix", tap.stop)
        except Exception as exc:  # a failing candidate must not stop the daemon
            logger.error("shadow model %s stopped: %s", self.name, exc)
            tap.failed = True
        finally:
            tap.stop.set()

    def end(self) -> None:
        """The stream ended: let the shadow score what it holds (a while at most), then stop."""
        tap, thread = self.tap, self._thread
        if tap is None or thread is None:
            return
        tap.ended.set()
        thread.join(_JOIN_SECONDS)
        if thread.is_alive():
            logger.warning("shadow model %s still behind at the stream's end: stopped", self.name)
            tap.stop.set()
            thread.join(_JOIN_SECONDS)
        self.update_metrics()
        self.tap = self._thread = None

    def update_metrics(self) -> None:
        """Skipped seconds and lag, from the processing thread (App.tick)."""
        tap = self.tap
        if tap is None:
            return
        waiting = tap.ring.available_frames
        skipped = tap.ring.dropped_frames_total + (waiting if tap.failed else 0)
        if skipped > self._counted_frames:
            self.metrics.shadow_skipped_seconds.inc((skipped - self._counted_frames) / tap.rate_hz)
            self._counted_frames = skipped
        self.metrics.shadow_lag_seconds.set(0.0 if tap.failed else waiting / tap.rate_hz)

    def close(self) -> None:
        self.end()
        self.analyzer.backend.close()
        self.files.close()


def shadow_loaded(loaded: Loaded) -> Loaded:
    """The config the shadow runs with: its bundle, with its own labels and event rules."""
    config = loaded.config
    assert config.shadow.bundle is not None
    model = replace(config.model, path=config.shadow.bundle)
    return replace(loaded, config=replace(config, model=model, labels=None, events=EventsConfig()))


class ShadowTap:
    """Lane 0's audio into the ring (processing thread); `blocks` reads it back (shadow thread)."""

    def __init__(self, ring: RingBuffer, rate_hz: int, wait_for_room: bool) -> None:
        self.ring, self.rate_hz, self.wait_for_room = ring, rate_hz, wait_for_room
        self.stop = threading.Event()  # the shadow thread stops (asked to, or failed)
        self.ended = threading.Event()  # the stream ended: read what is left, then stop
        self.failed = False
        self._read = threading.Event()  # set by the shadow after each read: room again
        # The stream's own gaps and rate changes: (ring position, frames, new rate or None).
        self._marks: deque[tuple[int, int, int | None]] = deque()

    # -- the Tap, on the processing thread -----------------------------------------------------

    def audio(self, mono: np.ndarray) -> None:
        ring = self.ring
        # A stopped (failed) shadow holds nothing up: its audio overwrites, counted as skipped.
        while self.wait_for_room and not self.stop.is_set():
            if ring.capacity - ring.available_frames >= min(len(mono), ring.capacity):
                break
            self._read.wait(0.05)
            self._read.clear()
        ring.write(mono[:, None])

    def missing(self, frames: int) -> None:
        self._marks.append((self.ring.written_frames_total, frames, None))

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        self._marks.append((self.ring.written_frames_total, 0, rate_hz))

    def finish(self) -> None:
        """A segment of the deployed model ends (also at its reloads): the shadow goes on."""

    # -- the shadow thread ---------------------------------------------------------------------

    def blocks(self) -> Iterator[np.ndarray | Gap]:
        out = np.empty((_READ_FRAMES, 1), dtype=np.float32)
        position = 0  # ring frames consumed (read or skipped)
        while not self.stop.is_set():
            if self._marks and self._marks[0][0] <= position:
                _, frames, rate_hz = self._marks.popleft()
                yield Gap(frames, "device", rate_hz)
                continue
            limit = _READ_FRAMES
            if self._marks:
                limit = min(limit, self._marks[0][0] - position)
            n, skipped = self.ring.read(out[:limit])
            self._read.set()
            position += n + skipped
            if skipped:
                yield Gap(skipped, "overload")
            if n:
                yield out[:n]
            elif self.ended.is_set() and self.ring.available_frames == 0 and not self._marks:
                return
            elif not skipped:
                self.stop.wait(0.02)


class Taps:
    """Two taps as one: lane 0's Evidence, then the shadow."""

    def __init__(self, first: Tap, second: Tap) -> None:
        self.first, self.second = first, second

    def audio(self, mono: np.ndarray) -> None:
        self.first.audio(mono)
        self.second.audio(mono)

    def missing(self, frames: int) -> None:
        self.first.missing(frames)
        self.second.missing(frames)

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        self.first.retune(rate_hz, at_seconds)
        self.second.retune(rate_hz, at_seconds)

    def finish(self) -> None:
        self.first.finish()
        self.second.finish()
