"""Prometheus metrics (README "Watching it"): created in one function, served over HTTP.

Every metric is a plain prometheus_client object in one `Metrics`, made by `create_metrics()`
in its own registry (nothing is registered at import, so tests can make as many as they like).
They are updated where things happen, and cheaply: the parts' own counts are moved over when
the registry is read (`FeedMetrics` and the others in edge/ops/counters.py, run by
edge/ops/scrape.py), the sinks once per second and per event (`MetricsSink`), the model call
once per batch (`TimedBackend`); what other threads own (the ring's fill, the MQTT connection,
the outbox) is read when Prometheus scrapes (`Gauge.set_function`).

    soundwatch_audio_seconds_total              audio received and analysed, s
    soundwatch_audio_overruns_total             times audio was lost before analysis read it
    soundwatch_gap_seconds_total{reason}        audio missing: overrun, device, overload, s
    soundwatch_ring_fill_ratio                  unread audio / ring buffer size
    soundwatch_lag_seconds                      audio captured but not yet analysed, s
    soundwatch_inference_seconds                model call time per batch, s (histogram)
    soundwatch_windows_total                    windows scored
    soundwatch_events_total{label}              events started
    soundwatch_probability{label}               the last second's probability (NaN: not analysed)
    soundwatch_nonfinite_samples_total          NaN/inf input samples replaced by 0, and
                                                absurd ones (beyond ±1000) clipped to ±1
    soundwatch_clipped_samples_total            input samples at full scale
    soundwatch_device_connected                 1 while the input device delivers audio
    soundwatch_device_reconnects_total          input device reopened after a loss
    soundwatch_last_analysed_timestamp_seconds  Unix time of the last analysed second (the
                                                start, before the first), s
    soundwatch_mqtt_connected                   1 while connected to the broker (NaN: no broker
                                                configured, so alerts on 0 stay quiet)
    soundwatch_outbox_pending                   event messages not yet acknowledged
    soundwatch_mqtt_events_total{result}        event messages: published (acknowledged), rejected
                                                (by an MQTT 5 broker), dropped (oldest, from a
                                                full outbox), unstored (refused by the outbox:
                                                sent once directly while connected, else lost)
    soundwatch_mqtt_seconds_total{result}       per-second messages (probabilities, levels, QoS
                                                0): published, dropped (not connected, behind)
    soundwatch_outbox_corrupt_total             corrupt outbox files set aside at a start
    soundwatch_outbox_recovered_total           messages recovered from those
    soundwatch_thread_restarts_total{thread}    threads started again after an error (paho's:
                                                callbacks abandoned, the thread goes on)
    soundwatch_thread_up{thread}                1 while the thread works, 0 while it waits to be
                                                started again after an error
    soundwatch_model_info{name,version,backend} 1, for the model running now
    soundwatch_sound_level_db{band,unit}        the last second's level (band "broadband" or
                                                a nominal centre in Hz), with `levels:` on
    soundwatch_clips_total{result}              event clips: written, failed (disk, limit),
                                                skipped (clips paused after a failure)
    soundwatch_clips_deleted_total              clips removed by retention (size, age)
    soundwatch_clips_bytes                      bytes of clips kept on disk
    soundwatch_clips_paused                     1 while clips are paused after a failure
    soundwatch_output_failures_total{kind}      rows / events the output files could not take
    soundwatch_output_failing                   1 while the output files cannot be written

The MQTT counters and the outbox's continue across restarts: the outbox keeps their totals
(edge/outputs/mqtt/outbox.py), and they start from those.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from edge.errors import ConfigError
from edge.model.runtime.base import Backend
from edge.ops.lastsecond import LastSecond
from edge.ops.scrape import Registry
from edge.records import ANALYSED, Event, SecondRow, Sink, StreamInfo

logger = logging.getLogger(__name__)

# Model calls take from well under a millisecond (small CNN, few windows) to seconds (a big
# model on a Pi): buckets from 0.5 ms to 5 s.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
GAP_REASONS = ("overrun", "device", "overload")
CLIP_RESULTS = ("written", "failed", "skipped")
OUTPUT_KINDS = ("rows", "events")  # what the output files may fail to write
WEB_FAILURES = ("start", "request")  # the review page could not start; a request failed
MQTT_EVENT_RESULTS = ("published", "rejected", "dropped", "unstored")
MQTT_SECOND_RESULTS = ("published", "dropped")
# The supervised threads (edge/threads.py), when in use: the publisher, and paho's network
# thread, whose callbacks are guarded (a "restart" there is a callback abandoned).
THREADS = ("mqtt-publisher", "mqtt-network")


@dataclass(frozen=True)
class Metrics:
    registry: Registry
    audio_seconds: Counter
    overruns: Counter
    gap_seconds: Counter
    ring_fill: Gauge
    lag_seconds: Gauge
    inference_seconds: Histogram
    windows: Counter
    events: Counter
    last_second: LastSecond  # soundwatch_probability and soundwatch_sound_level_db
    nonfinite_samples: Counter
    clipped_samples: Counter
    device_connected: Gauge
    device_reconnects: Counter
    last_analysed: Gauge
    mqtt_connected: Gauge
    outbox_pending: Gauge
    mqtt_events: Counter
    mqtt_seconds: Counter
    outbox_corrupt: Counter
    outbox_recovered: Counter
    thread_restarts: Counter
    thread_up: Gauge
    model_info: Gauge
    clips: Counter
    clips_deleted: Counter
    clips_bytes: Gauge
    clips_paused: Gauge
    output_failures: Counter
    output_failing: Gauge
    web_failures: Counter
    web_up: Gauge
    shadow_skipped_seconds: Counter
    shadow_lag_seconds: Gauge

    def set_model(self, name: str, version: str, backend: str) -> None:
        """The model now running (after a start or a reload)."""
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, backend=backend).set(1)


def create_metrics() -> Metrics:
    """Every soundwatch metric, in a new registry (with the process's CPU and memory)."""
    r = Registry()
    ProcessCollector(registry=r)
    p = "soundwatch_"
    metrics = Metrics(
        registry=r,
        audio_seconds=Counter(p + "audio_seconds", "Audio received and analysed, s", registry=r),
        overruns=Counter(
            p + "audio_overruns", "Times audio was lost before analysis read it", registry=r
        ),
        gap_seconds=Counter(
            p + "gap_seconds", "Audio missing, s, by reason", ["reason"], registry=r
        ),
        ring_fill=Gauge(p + "ring_fill_ratio", "Unread audio / ring buffer size", registry=r),
        lag_seconds=Gauge(p + "lag_seconds", "Audio captured but not yet analysed, s", registry=r),
        inference_seconds=Histogram(
            p + "inference_seconds",
            "Model call time per batch of windows, s",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        ),
        windows=Counter(p + "windows", "Windows scored by the model", registry=r),
        events=Counter(p + "events", "Events started, by label", ["label"], registry=r),
        last_second=LastSecond(r),
        nonfinite_samples=Counter(
            p + "nonfinite_samples",
            "NaN/inf input samples replaced by 0, absurd ones (beyond ±1000) clipped to ±1",
            registry=r,
        ),
        clipped_samples=Counter(p + "clipped_samples", "Input samples at full scale", registry=r),
        device_connected=Gauge(
            p + "device_connected", "1 while the input device delivers audio", registry=r
        ),
        device_reconnects=Counter(
            p + "device_reconnects", "Input device reopened after a loss", registry=r
        ),
        last_analysed=Gauge(
            p + "last_analysed_timestamp_seconds",
            "Unix time of the last analysed second (the start, before the first), s",
            registry=r,
        ),
        mqtt_connected=Gauge(p + "mqtt_connected", "1 while connected to the broker", registry=r),
        outbox_pending=Gauge(
            p + "outbox_pending", "Event messages not yet acknowledged by the broker", registry=r
        ),
        mqtt_events=Counter(
            p + "mqtt_events",
            "Event messages: published, rejected by the broker, dropped from a full outbox",
            ["result"],
            registry=r,
        ),
        mqtt_seconds=Counter(
            p + "mqtt_seconds",
            "Per-second messages (QoS 0): published, dropped (offline or falling behind)",
            ["result"],
            registry=r,
        ),
        outbox_corrupt=Counter(
            p + "outbox_corrupt", "Corrupt outbox files set aside at a start", registry=r
        ),
        outbox_recovered=Counter(
            p + "outbox_recovered", "Event messages recovered from corrupt outboxes", registry=r
        ),
        thread_restarts=Counter(
            p + "thread_restarts", "Threads started again after an error", ["thread"], registry=r
        ),
        thread_up=Gauge(
            p + "thread_up",
            "1 while the thread works, 0 while it waits to be started again",
            ["thread"],
            registry=r,
        ),
        model_info=Gauge(
            p + "model_info", "The model running", ["name", "version", "backend"], registry=r
        ),
        clips=Counter(p + "clips", "Event clips, by result", ["result"], registry=r),
        clips_deleted=Counter(
            p + "clips_deleted", "Clips removed by retention (size, age)", registry=r
        ),
        clips_bytes=Gauge(p + "clips_bytes", "Bytes of clips kept on disk", registry=r),
        clips_paused=Gauge(
            p + "clips_paused", "1 while clips are paused after a failure", registry=r
        ),
        output_failures=Counter(
            p + "output_failures",
            "Rows and events the output files could not take (disk full, read-only)",
            ["kind"],
            registry=r,
        ),
        output_failing=Gauge(
            p + "output_failing", "1 while the output files cannot be written", registry=r
        ),
        web_failures=Counter(
            p + "web_failures",
            "Review page failures: start (address taken, store unreadable), request (handler)",
            ["kind"],
            registry=r,
        ),
        web_up=Gauge(p + "web_up", "1 while the review page serves (web: enabled)", registry=r),
        shadow_skipped_seconds=Counter(
            p + "shadow_skipped_seconds",
            "Audio the shadow model skipped because it fell behind (or failed), s",
            registry=r,
        ),
        shadow_lag_seconds=Gauge(
            p + "shadow_lag_seconds", "Audio waiting for the shadow model, s", registry=r
        ),
    )
    for reason in GAP_REASONS:  # present from the start, so rate() works on the first gap
        metrics.gap_seconds.labels(reason)
    for result in CLIP_RESULTS:
        metrics.clips.labels(result)
    for kind in OUTPUT_KINDS:
        metrics.output_failures.labels(kind)
    for kind in WEB_FAILURES:
        metrics.web_failures.labels(kind)
    for result in MQTT_EVENT_RESULTS:
        metrics.mqtt_events.labels(result)
    for result in MQTT_SECOND_RESULTS:
        metrics.mqtt_seconds.labels(result)
    for thread in THREADS:  # not thread_up: a thread not in use is not down
        metrics.thread_restarts.labels(thread)
    # A health check (edge/ops/health.py) reads the age of this: the start counts as fresh, so
    # loading the model is not "stopped analysing".
    metrics.last_analysed.set_to_current_time()
    metrics.mqtt_connected.set(math.nan)  # until an MQTT sink is watched (MqttMetrics)
    return metrics


def watch(gauge: Gauge, read: Callable[[], float]) -> None:
    """`gauge` reads `read()` when scraped: for values that another thread owns."""

    def value() -> float:
        try:
            return float(read())
        except Exception:  # a scrape must never fail because one source is gone
            return math.nan

    gauge.set_function(value)


class MetricsSink(Sink):
    """Per-second probabilities and levels into the metrics (`LastSecond`) and events; counts
    events for the status."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._labels: list[str] = []
        self._events: deque[float] = deque()  # time.monotonic() of recent event starts
        self._levels: tuple[str | None, tuple[str, ...]] = (None, ())
        self._level_bands: list[str] = []  # "broadband" and the bands
        self._key: object = None  # the second shown (time or offset)
        self._values = np.empty(0)  # the row being read, labels then levels
        self._shown = np.empty(0)  # what a scrape reads

    def begin(self, info: StreamInfo) -> None:
        old = self._shown
        labels_changed = info.labels != self._labels
        levels = (info.level_unit, info.level_bands)
        levels_changed = levels != self._levels
        if not labels_changed and not levels_changed:
            return
        n_old = len(self._labels)
        self._labels = list(info.labels)
        self._levels = levels
        self._level_bands = ["broadband", *info.level_bands] if info.level_unit else []
        # What stays shows on, as a gauge would; what is new shows 0 until the first row.
        shown = np.zeros(len(self._labels) + len(self._level_bands))
        if not labels_changed:
            shown[:n_old] = old[:n_old]
        if not levels_changed:
            shown[len(self._labels) :] = old[n_old:]
        self._shown, self._values, self._key = shown, np.empty(len(shown)), None
        self.metrics.last_second.shown = (self._labels, self._level_bands, info.level_unit, shown)

    def second(self, row: SecondRow) -> None:
        """The last second is shown; with one detector per channel, the highest probability
        and level of the channels in that second."""
        n = len(self._labels)
        values = self._values
        values.fill(np.nan)  # NaN: not analysed, or no audio (a gap is not silence)
        if row.status == ANALYSED:
            values[:n] = row.scores
            self.metrics.last_analysed.set_to_current_time()
        if self._level_bands and row.levels is not None:
            levels = row.levels
            values[n:] = [
                levels.dbfs_or_db if band == "broadband" else levels.bands.get(band, math.nan)
                for band in self._level_bands
            ]
        key = row.time or row.offset_seconds
        if row.channel is not None and key == self._key:
            np.fmax(self._shown, values, out=self._shown)  # another channel's row of this second
        else:
            self._key = key
            np.copyto(self._shown, values)

    def event(self, event: Event) -> None:
        if event.type == "start":
            self.metrics.events.labels(event.label).inc()
            self._events.append(time.monotonic())

    def events_within(self, seconds: float) -> int:
        """Events started in the last `seconds` (processing thread)."""
        since = time.monotonic() - seconds
        while self._events and self._events[0] < since:
            self._events.popleft()
        return len(self._events)


class TimedBackend:
    """A backend whose `predict` calls are timed and its windows counted."""

    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self._backend = backend
        self._observe = metrics.inference_seconds.observe
        self._windows = metrics.windows

    def predict(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        began = time.perf_counter()
        try:
            return self._backend.predict(batch, out=out)
        finally:
            self._observe(time.perf_counter() - began)
            self._windows.inc(len(batch))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def timed(backend: Backend, metrics: Metrics) -> Backend:
    """`backend` with its model calls timed (an `Analyzer.backend` takes it as a Backend)."""
    if isinstance(backend, TimedBackend):
        return backend
    return cast(Backend, TimedBackend(backend, metrics))


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9464`) as (host, port); ValueError says what is wrong."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"must be host:port, e.g. 127.0.0.1:9464, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class MetricsServer:
    """The /metrics endpoint on its own thread (prometheus_client's WSGI server)."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, port = parse_address(address)
        try:
            server, thread = start_http_server(port, host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics.address {address}: cannot serve metrics there: {exc.strerror or exc}"
            ) from None
        self._server, self._thread = server, thread
        self.host, self.port = host, int(server.server_port)
        url_host = f"[{host}]" if ":" in host else host  # IPv6 in brackets
        logger.info("metrics on http://%s:%d/metrics", url_host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)
