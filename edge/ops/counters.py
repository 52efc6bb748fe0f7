"""The parts' own counters into the metrics (edge/ops/metrics.py), by difference.

Each part counts in plain ints, written by its own thread (edge/audio/streams.py `Counts`, the
clip recorders, the MQTT sink and its outbox, the supervised threads); these move what changed
into the Prometheus counters when the metrics are read (edge/ops/scrape.py; the daemon calls
`update` from there, under one lock): a few subtractions, nothing when nothing happened. What
another thread owns and may change at any time (a connection, a queue's length, whether a
thread is up) is read at scrape time (`watch`).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.audio.streams import Counts
from edge.ops.metrics import (
    CLIP_RESULTS,
    MQTT_EVENT_RESULTS,
    MQTT_SECOND_RESULTS,
    OUTPUT_KINDS,
    Metrics,
    watch,
)
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.evidence import Evidence
from edge.outputs.files import DaemonFiles
from edge.outputs.mqtt.sink import MqttSink
from edge.threads import Guarded, Supervised


class FeedMetrics:
    """Moves a feed's counters (and the live source's) into the metrics, by difference."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._counts: Counts | None = None
        self._audio = 0.0
        self._gaps: dict[str, float] = {}
        self._bad = self._clipped = self._overruns = self._reconnects = 0

    def update(self, counts: Counts, *, overruns: int = 0, reconnects: int = 0) -> None:
        """When the metrics are read: a few subtractions, nothing when idle."""
        m = self.metrics
        if counts is not self._counts:  # a new stream: its counts start from 0
            self._counts = counts
            self._audio, self._gaps, self._bad, self._clipped = 0.0, {}, 0, 0
        if counts.audio_seconds != self._audio:
            m.audio_seconds.inc(max(0.0, counts.audio_seconds - self._audio))
            self._audio = counts.audio_seconds
        for reason, seconds in list(counts.gap_seconds.items()):  # a copy: another thread adds
            before = self._gaps.get(reason, 0.0)
            if seconds != before:
                m.gap_seconds.labels(reason).inc(max(0.0, seconds - before))
                self._gaps[reason] = seconds
        if counts.bad_samples != self._bad:
            m.nonfinite_samples.inc(max(0, counts.bad_samples - self._bad))
            self._bad = counts.bad_samples
        if counts.clipped_samples != self._clipped:
            m.clipped_samples.inc(max(0, counts.clipped_samples - self._clipped))
            self._clipped = counts.clipped_samples
        if overruns != self._overruns:
            m.overruns.inc(max(0, overruns - self._overruns))
            self._overruns = overruns
        if reconnects != self._reconnects:
            m.device_reconnects.inc(max(0, reconnects - self._reconnects))
            self._reconnects = reconnects


class ClipMetrics:
    """Moves the clip recorders' counters (one per lane, where clips are on) into the metrics,
    by difference. Lanes and recorders may be added, never removed."""

    def __init__(self, metrics: Metrics, evidences: list[Evidence]) -> None:
        self.metrics, self.evidences = metrics, evidences
        self._seen = dict.fromkeys(CLIP_RESULTS, 0)
        self._deleted = 0
        # The lanes share one folder, and each recorder knows its size after its last write.
        watch(metrics.clips_bytes, lambda: max((r.bytes_total for r in self.recorders), default=0))
        watch(metrics.clips_paused, lambda: any(r.paused for r in self.recorders))

    @property
    def recorders(self) -> list[ClipRecorder]:
        return [e.clips for e in self.evidences if e.clips is not None]

    def update(self) -> None:
        recorders = self.recorders
        if not recorders:
            return
        totals = [
            sum(r.clips_written for r in recorders),
            sum(r.clips_failed for r in recorders),
            sum(r.clips_skipped for r in recorders),
        ]
        for result, now in zip(CLIP_RESULTS, totals, strict=True):
            if now != self._seen[result]:
                self.metrics.clips.labels(result).inc(now - self._seen[result])
                self._seen[result] = now
        deleted = sum(r.clips_deleted for r in recorders)
        if deleted != self._deleted:
            self.metrics.clips_deleted.inc(deleted - self._deleted)
            self._deleted = deleted


class OutputMetrics:
    """The output files' failed writes into the metrics, by difference."""

    def __init__(self, metrics: Metrics, files: DaemonFiles) -> None:
        self.metrics, self.files = metrics, files
        self._seen = dict.fromkeys(OUTPUT_KINDS, 0)
        watch(metrics.output_failing, lambda: files.failures.failing)

    def update(self) -> None:
        for kind in OUTPUT_KINDS:
            now = self.files.failures.counts.get(kind, 0)
            if now != self._seen[kind]:
                self.metrics.output_failures.labels(kind).inc(now - self._seen[kind])
                self._seen[kind] = now


class MqttMetrics:
    """The MQTT sink's counters into the metrics, by difference; its connection and outbox
    are read at scrape time."""

    def __init__(self, metrics: Metrics, sink: MqttSink) -> None:
        self.sink = sink
        self._counters = [metrics.mqtt_events.labels(r) for r in MQTT_EVENT_RESULTS]
        self._counters += [metrics.mqtt_seconds.labels(r) for r in MQTT_SECOND_RESULTS]
        self._counters += [metrics.outbox_corrupt, metrics.outbox_recovered]
        self._seen = [0] * len(self._counters)
        watch(metrics.mqtt_connected, lambda: sink.connected)
        watch(metrics.outbox_pending, lambda: len(sink.outbox))
        # Now, before the first scrape: the totals of earlier runs, so a restart is not seen as
        # a counter that fell to 0 and jumped (which rate() and increase() would count again).
        self.update()

    def update(self) -> None:
        s = self.sink
        now = (
            s.events_published,
            s.events_rejected,
            s.events_dropped_full,
            s.events_unstored,
            s.seconds_published,
            s.seconds_dropped,
            s.outbox_corrupt,
            s.outbox_recovered,
        )
        for i, (counter, value) in enumerate(zip(self._counters, now, strict=True)):
            if value != self._seen[i]:
                counter.inc(max(0, value - self._seen[i]))
                self._seen[i] = value


class ThreadMetrics:
    """The supervised threads' restarts into the metrics, by difference; whether each works
    is read at scrape time."""

    def __init__(self, metrics: Metrics, threads: Sequence[Supervised | Guarded]) -> None:
        self.threads = threads
        self._counters = [metrics.thread_restarts.labels(t.name) for t in threads]
        self._seen = [0] * len(threads)
        for t in threads:
            watch(metrics.thread_up.labels(t.name), lambda t=t: not t.down)  # type: ignore[misc]

    def update(self) -> None:
        for i, thread in enumerate(self.threads):
            if thread.restarts != self._seen[i]:
                self._counters[i].inc(thread.restarts - self._seen[i])
                self._seen[i] = thread.restarts
