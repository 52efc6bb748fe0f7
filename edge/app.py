"""The daemon: one place that builds the pipeline from a config and runs it until stopped.

    source ──► conditioner (channel, resample) ──► Analyzer (frontend, model, seconds, events)
    (edge/audio/live.py: reconnects,  │                            │
     sheds load)                └──► Evidence (levels, clips) ◄┘──► sinks (stdout, files, MQTT,
                                                                     metrics)

The processing loop runs on the calling thread; PortAudio's callback thread only fills the ring
buffer, the metrics endpoint and MQTT have threads of their own. Between blocks, the loop calls
`App.tick`: systemd hears READY/WATCHDOG/STATUS (edge/ops/status.py), and a reload asked for by
SIGHUP is prepared (edge/reload.py) for `feed` to switch to. The parts' counters move into the
metrics when those are read (edge/ops/scrape.py), not between blocks.

Signals:
- SIGINT/SIGTERM set one stop event: the loop finishes its block, open events are closed, files
  flushed, the MQTT outbox flushed (for `mqtt.flush_seconds` at most) and `offline` published,
  and `run()` returns 0.
- SIGHUP re-reads the config file and the model bundle while capture goes on. The new model,
  labels, event rules, sound levels and clip settings take over at the next whole second of
  the stream (an event open then is closed and, if the sound goes on, starts again). A config
  or bundle that does not load is refused with one log line and the running one stays.
  Changes to source, output, mqtt and metrics are reported and take effect at the next start.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edge.audio.demo import demo_stream, scene_for
from edge.audio.files import find_audio_files
from edge.audio.streams import Conditioner, Stream, file_streams, repaired
from edge.builders import build_analyzer
from edge.clock import parse_start, utc_now
from edge.config import Loaded, load_config
from edge.detection.analysis import Analyzer
from edge.errors import AudioError, ConfigError, SoundwatchError
from edge.model.bundle import Bundle
from edge.ops.counters import (
    ClipMetrics,
    FeedMetrics,
    MqttMetrics,
    OutputMetrics,
    ThreadMetrics,
)
from edge.ops.metrics import MetricsServer, MetricsSink, create_metrics, timed, watch
from edge.ops.notify import Notifier
from edge.ops.status import Heartbeat, StatusLine
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.evidence import Evidence
from edge.outputs.files import DaemonFiles, Fanout, Printer
from edge.outputs.mqtt.sink import MqttSink
from edge.pipeline import Lane, feed_lanes
from edge.preflight import clips_folder, outbox_path, preflight
from edge.records import Sink, StreamInfo
from edge.reload import Pending, Reload, Reloader
from edge.shadow import Shadow, Taps
from edge.sources import detected_channels, open_device
from edge.threads import Guarded, Supervised, name_os_threads

if TYPE_CHECKING:  # imported when used: it needs PortAudio; the page only with `web:` on
    from edge.audio.live import LiveSource
    from edge.review.daemon import WebServer

logger = logging.getLogger(__name__)


class App:
    """The daemon. `reload_config` gives the config for SIGHUP (default: the file again)."""

    def __init__(self, loaded: Loaded, reload_config: Callable[[], Loaded] | None = None) -> None:
        problems = preflight(loaded)
        if problems:
            raise ConfigError("\n".join(problems))
        self.loaded = loaded
        name_os_threads()  # each thread by its name in top -H, py-spy and the live bench
        self.reloader = Reloader(
            reload_config or (lambda: load_config(self.loaded.path)), self._build_analyzer
        )
        config = loaded.config
        self.stop = threading.Event()
        self.reload = threading.Event()
        # The device opens before the model loads: a sound server takes 0.5-2 s to deliver the
        # first block, time the loading can share (README "Start-up").
        self.live: LiveSource | None = open_device(config.source, self.stop)
        self.metrics = create_metrics()
        self.metrics_sink = MetricsSink(self.metrics)
        self.sinks: list[Sink] = []
        if config.output.print != "none":
            self.sinks.append(Printer(config.output.print))
        self.fanout = Fanout(self.sinks)
        # One lane per detector: one, or one per channel (source.channel: each). Each lane's
        # Evidence sees its audio before the model and stamps its rows and events (levels,
        # clips) on their way to the shared sinks (edge/outputs/evidence.py).
        self.evidences: list[Evidence] = []
        self.analyzers: list[Analyzer] = []
        self.bundle = self._add_lane(loaded)
        m = self.bundle.manifest
        # The outbox first: an event is committed for delivery before the files record it, so a
        # kill between the two can leave a delivered event unrecorded, never a recorded one lost.
        self.mqtt: MqttSink | None = None
        self._mqtt_metrics: MqttMetrics | None = None
        if config.mqtt.host:
            self.mqtt = MqttSink(
                config.mqtt,
                device=config.output.device,
                model=m.name,
                model_version=m.version,
                labels=[s.label for s in self.analyzer.labels],
                sensor_labels=[s.label for s in self.analyzer.labels if s.events],
                outbox_path=outbox_path(loaded),
                resolve=loaded.resolve,
                channels=detected_channels(config.source),
            )
            self.sinks.append(self.mqtt)
            self._mqtt_metrics = MqttMetrics(self.metrics, self.mqtt)
        self.files: DaemonFiles | None = None
        self._output_metrics: OutputMetrics | None = None
        if config.output.files:
            out = loaded.resolve(config.output.dir)
            self.files = DaemonFiles(out, config.output.device)
            self.sinks.append(self.files)
            self._output_metrics = OutputMetrics(self.metrics, self.files)
        self.sinks.append(self.metrics_sink)
        # The threads soundwatch starts or runs code on, each supervised (edge/threads.py): the
        # MQTT publisher and paho's network thread. Clips, files and the heartbeat run on the
        # processing thread, whose stalls the systemd watchdog catches.
        self.threads: list[Supervised | Guarded] = []
        if self.mqtt is not None:
            self.threads = self.mqtt.threads
        self._thread_metrics = ThreadMetrics(self.metrics, self.threads)
        self.metrics.set_model(m.name, m.version, self.analyzer.backend.key)
        self.files_failed = 0
        self._status_line = StatusLine()
        self.heartbeat = Heartbeat(Notifier.from_environment(), self._status_text)
        self._feed_metrics = FeedMetrics(self.metrics)
        self._clip_metrics = ClipMetrics(self.metrics, self.evidences)
        # The counters move when the metrics are read (edge/ops/scrape.py), not every hop.
        self._counted: Conditioner | None = None  # the stream's first conditioner, per tick
        self._counting = threading.Lock()  # a scrape's thread and the end of a stream
        self.metrics.registry.before_collect.append(self._update_metrics)
        self._server: MetricsServer | None = None
        self._stream: Stream | None = None
        self._pending: Pending | None = None  # a reload being prepared on its own thread
        self._reloading: Reload | None = None  # prepared, until `feed` switches to it
        self._active_lanes = 1
        self.web: WebServer | None = None
        self.started = time.monotonic()  # s, for the uptime
        # A candidate model scoring beside the deployed one (edge/shadow.py), or None.
        self.shadow = Shadow.build(loaded, self.metrics)

    @property
    def analyzer(self) -> Analyzer:
        """The first lane's analyzer (the only one unless detecting per channel)."""
        return self.analyzers[0]

    def _add_lane(self, loaded: Loaded) -> Bundle:
        """Lane `len(self.analyzers)`: its Evidence (kept for the daemon's life) if it has
        none yet, and an analyzer feeding it."""
        config = loaded.config
        if len(self.evidences) == len(self.analyzers):
            recorder = None
            if config.clips.enabled:
                recorder = ClipRecorder(config.clips, clips_folder(loaded))
            self.evidences.append(Evidence(self.fanout, config.levels, recorder))
        bundle, analyzer = self._build_analyzer(loaded, self.evidences[len(self.analyzers)])
        self.analyzers.append(analyzer)
        return bundle

    def _build_analyzer(self, loaded: Loaded, sink: Sink) -> tuple[Bundle, Analyzer]:
        """An analyzer feeding `sink`, its model calls timed into the metrics."""
        bundle, analyzer = build_analyzer(loaded, sink)
        analyzer.backend = timed(analyzer.backend, self.metrics)
        return bundle, analyzer

    def _lanes(self, stream: Stream, info: StreamInfo) -> list[Lane]:
        """The stream's lanes: one, or one per channel (each tagged with its channel).

        Lane c's analyzer always feeds `self.evidences[c]`, also for lanes added after a
        reload left fewer analyzers than evidences."""
        channel = self.loaded.config.source.channel
        if channel != "each":
            lanes = [Lane(self.analyzer, channel, info, self.evidences[0])]
        else:
            while len(self.analyzers) < stream.channels:
                self._add_lane(self.loaded)
            lanes = [
                Lane(self.analyzers[c], c, replace(info, channel=c), self.evidences[c])
                for c in range(stream.channels)
            ]
        if self.shadow is not None:  # files wait for it: nothing live to lose
            shadow = self.shadow.start(stream, wait_for_room=stream.duration_seconds is not None)
            lanes[0].tap = Taps(self.evidences[0], shadow)
        return lanes

    # -- sources -------------------------------------------------------------------------------

    def streams(self) -> Iterator[Stream]:
        source = self.loaded.config.source
        kind = source.kind
        if kind == "auto":
            kind = "device" if self.live is not None else "demo"
            if kind == "demo":
                logger.warning("no input device found: listening to the built-in demo source")
        if kind == "device":
            live = self.live
            assert live is not None  # opened in __init__ for kind device (or auto with one)
            watch(self.metrics.device_connected, lambda: live.connected)
            watch(self.metrics.ring_fill, lambda: live.fill_ratio)
            watch(self.metrics.lag_seconds, lambda: live.lag_seconds)
            yield live.stream()
        elif kind == "demo":
            scene: str = source.demo_scene
            if scene == "auto":
                scene = scene_for([s.label for s in self.analyzer.labels])
            yield demo_stream(scene, source.block_seconds, self.stop, utc_now())
        else:
            files = find_audio_files([self.loaded.resolve(p) for p in source.paths])
            start = parse_start(source.start) if source.start else utc_now().replace(microsecond=0)
            yield from file_streams(
                files,
                block_seconds=source.block_seconds,
                speed=source.speed,
                stop=self.stop,
                start=start,
                on_error=self._skip,
            )

    def _skip(self, path: Path, error: AudioError) -> None:
        self.files_failed += 1
        logger.error("skipped: %s", error)

    # -- the processing loop -------------------------------------------------------------------

    def run(self) -> int:
        """Process until the source ends or stop is requested; 0 on a clean finish."""
        config = self.loaded.config
        m = self.bundle.manifest
        labels = ", ".join(s.label for s in self.analyzer.labels)
        logger.info("model %s %s, labels %s", m.name, m.version, labels)
        try:
            if config.metrics.enabled:
                try:
                    self._server = MetricsServer(self.metrics, config.metrics.address)
                except ConfigError as exc:  # e.g. a second daemon on one machine: detect anyway
                    logger.error("%s; going on without metrics", exc)
            if self.mqtt is not None:
                self.mqtt.start()  # connects in the background; events wait in its outbox
            if config.web.enabled:  # on threads of its own; a port taken is logged, counted
                from edge.review.daemon import start_web

                self.web = start_web(self)
            for stream in self.streams():
                self._stream = stream
                logger.info("listening to %s at %d Hz", stream.name, stream.rate_hz)
                labels_now = [s.label for s in self.analyzer.labels]
                info = StreamInfo(stream.name, labels_now, stream.anchor, stream.rate_hz)
                lanes = self._lanes(stream, info)
                self._active_lanes = len(lanes)
                try:
                    conditioner = feed_lanes(stream, lanes, self.stop, self)[0]
                except SoundwatchError as exc:  # this stream's audio cannot be scored (its rate)
                    logger.error("skipped: %s: %s", stream.name, exc)
                    self.files_failed += 1
                    continue
                finally:
                    if self.shadow is not None:
                        self.shadow.end()
                    close = getattr(stream.blocks, "close", None)
                    if close is not None:  # a generator: release its device or file now
                        close()
                self._counted = conditioner
                self._update_metrics()  # the stream's last counts
                if conditioner.bad_samples:
                    logger.warning(repaired(stream.name, conditioner.bad_samples))
                if self.stop.is_set():
                    break
        finally:
            self.heartbeat.stopping()
            if self.shadow is not None:
                self.shadow.close()
            for evidence in self.evidences:
                if evidence.clips is not None:
                    evidence.clips.close()
            self.fanout.close()
            if self._server is not None:
                self._server.close()
            if self.web is not None:
                self.web.close()
            self.heartbeat.close()
        return 1 if self.files_failed else 0

    def tick(self, conditioner: Conditioner) -> list[Analyzer] | None:
        """Between blocks, on the processing thread (see FeedHooks): cheap unless it is time
        for a status line or a reload."""
        self._counted = conditioner
        if self.shadow is not None:
            self.shadow.update_metrics()
        live = self.live
        waiting = live is not None and not live.connected
        self.heartbeat.beat(time.monotonic(), conditioner.counts.audio_seconds > 0 or waiting)
        if self.reload.is_set() and self._pending is None:
            self.reload.clear()
            self._pending = self._start_reload()
        if self._pending is not None:
            finished, reload = self._pending.poll(time.monotonic())
            if finished:
                self._pending = None
                return self._take(reload)
        return None

    def _update_metrics(self) -> None:
        """The parts' counts into the metrics, as the registry is read (any thread) and at the
        end of a stream."""
        conditioner, live = self._counted, self.live
        overruns, reconnects = (live.overruns, live.reconnects) if live is not None else (0, 0)
        with self._counting:
            if conditioner is not None:
                counts = conditioner.counts
                self._feed_metrics.update(counts, overruns=overruns, reconnects=reconnects)
            self._clip_metrics.update()
            if self._mqtt_metrics is not None:
                self._mqtt_metrics.update()
            if self._output_metrics is not None:
                self._output_metrics.update()
            self._thread_metrics.update()

    def _status_text(self) -> str:
        stream = self._stream
        where = f"{stream.name} at {stream.rate_hz} Hz" if stream is not None else None
        m = self.bundle.manifest
        events = self.metrics_sink.events_within(3600)
        down = [f"{t.name} down ({t.down})" for t in self.threads if t.down]
        if self.web is not None and self.web.problem:
            down.append(self.web.problem)
        return self._status_line.text(self.live, where, f"{m.name} {m.version}", events, down)

    # -- SIGHUP --------------------------------------------------------------------------------

    def _start_reload(self) -> Pending:
        """Prepare the re-read config's analyzers (one per lane) on a thread of their own."""
        self.heartbeat.reloading()
        running = f"{self.bundle.manifest.name} {self.bundle.manifest.version}"
        lanes = self.evidences[: self._active_lanes]
        loaded = self.loaded
        return Pending(lambda: self.reloader.prepare(loaded, running, lanes), running)

    def _take(self, reload: Reload | None) -> list[Analyzer] | None:
        """The prepared reload's analyzers, to take over at the next whole second; None when
        the new config or bundle did not load (logged where it failed)."""
        if reload is None:
            self.heartbeat.reloaded()
            return None
        if reload.evidence_changed:
            folder = clips_folder(reload.loaded)
            for evidence in self.evidences:  # from the switch on, with the new model
                evidence.reconfigure(
                    reload.loaded.config.levels, reload.loaded.config.clips, folder
                )
        self._reloading = reload
        return reload.analyzers

    def switched(self, lanes: list[Lane]) -> None:
        """The reloaded analyzers took over (see FeedHooks)."""
        old = self.analyzers
        self.analyzers = [lane.analyzer for lane in lanes]
        if self._reloading is not None:
            self.loaded, self.bundle = self._reloading.loaded, self._reloading.bundle
            self._reloading = None
        m = self.bundle.manifest
        self.metrics.set_model(m.name, m.version, self.analyzer.backend.key)
        for each in old:
            if each not in self.analyzers:
                each.backend.close()
        logger.info("reload: model %s %s is listening", m.name, m.version)
        self.heartbeat.reloaded()

    # -- signals -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            logger.info("%s: stopping", signal.Signals(signum).name)
            self.stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            logger.info("SIGHUP: reloading %s", self.loaded.path or "the built-in defaults")
            self.reload.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGHUP, reload)
