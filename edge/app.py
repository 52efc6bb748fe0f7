"""The daemon: one place that builds the pipeline from a config and runs it until stopped.

    source ──► conditioner (channel, resample) ──► Analyzer (frontend, model, seconds, events)
                                                        └──► sinks (stdout, files, MQTT)

The processing loop runs on the calling thread; PortAudio's callback thread only fills the ring
buffer. SIGINT/SIGTERM set one stop event: the loop finishes its block, open events are closed,
files flushed, the MQTT outbox flushed (for a few seconds at most) and `offline` published, and
`run()` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from edge.analysis import Analyzer
from edge.audiofile import find_audio_files
from edge.bundle import Bundle, load_bundle
from edge.clock import parse_start, utc_now
from edge.config import Loaded, label_setups, model_folder
from edge.errors import AudioError
from edge.mqtt import MqttSink
from edge.records import StreamInfo
from edge.sinks import DaemonFiles, Fanout, Printer, Sink
from edge.sources import Stream, demo_stream, feed, file_streams, live_stream

logger = logging.getLogger(__name__)


def build_analyzer(
    loaded: Loaded, sinks: list[Sink], *, batch_windows: int | None = None
) -> tuple[Bundle, Analyzer]:
    """Bundle, backend and Analyzer as the config says; raises SoundwatchError on problems."""
    config = loaded.config
    bundle = load_bundle(model_folder(loaded))
    labels = label_setups(loaded, bundle)
    hop = bundle.hop_for(config.model.hop_seconds)
    backend = bundle.open(config.model.file, config.model.threads)
    analyzer = Analyzer(
        bundle,
        backend,
        labels,
        Fanout(sinks),
        hop_samples=hop,
        batch_windows=batch_windows or config.model.batch_windows,
    )
    return bundle, analyzer


class App:
    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        config = loaded.config
        self.stop = threading.Event()
        self.sinks: list[Sink] = []
        if config.output.print != "none":
            self.sinks.append(Printer(config.output.print))
        self.bundle, self.analyzer = build_analyzer(loaded, self.sinks)
        if config.output.files:
            out = loaded.resolve(config.output.dir)
            m = self.bundle.manifest
            self.sinks.append(DaemonFiles(out, m.name, m.version, config.output.device))
        self.mqtt: MqttSink | None = None
        if config.mqtt.host:
            m = self.bundle.manifest
            outbox = config.mqtt.outbox or str(Path(config.output.dir) / "mqtt-outbox.sqlite3")
            self.mqtt = MqttSink(
                config.mqtt,
                device=config.output.device,
                model=m.name,
                model_version=m.version,
                labels=[s.label for s in self.analyzer.labels],
                outbox_path=loaded.resolve(outbox),
                resolve=loaded.resolve,
            )
            self.sinks.append(self.mqtt)
        self.files_failed = 0

    def streams(self) -> Iterator[Stream]:
        source = self.loaded.config.source
        kind = source.kind
        if kind == "auto":
            kind = "device" if _has_input_device() else "demo"
            if kind == "demo":
                logger.warning("no input device found: listening to the built-in demo source")
        if kind == "device":
            yield live_stream(
                source.device,
                sample_rate_hz=source.sample_rate_hz,
                channels=source.channels,
                block_seconds=source.block_seconds,
                buffer_seconds=source.buffer_seconds,
                stop=self.stop,
            )
        elif kind == "demo":
            yield demo_stream(source.block_seconds, self.stop, utc_now())
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

    def run(self) -> int:
        """Process until the source ends or stop is requested; 0 on a clean finish."""
        source = self.loaded.config.source
        labels = [s.label for s in self.analyzer.labels]
        m = self.bundle.manifest
        logger.info("model %s %s, labels %s", m.name, m.version, ", ".join(labels))
        try:
            if self.mqtt is not None:
                self.mqtt.start()  # connects in the background; events wait in its outbox
            for stream in self.streams():
                logger.info("listening to %s at %d Hz", stream.name, stream.rate_hz)
                info = StreamInfo(stream.name, labels, stream.anchor, stream.rate_hz)
                conditioner = feed(stream, self.analyzer, info, source.channel, self.stop)
                if conditioner.bad_samples:
                    logger.warning(
                        "%s: %d NaN/inf samples replaced by 0", stream.name, conditioner.bad_samples
                    )
                if self.stop.is_set():
                    break
        finally:
            for sink in self.sinks:
                sink.close()
        return 1 if self.files_failed else 0

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("%s: stopping", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def _has_input_device() -> bool:
    try:
        from edge.capture import list_devices

        return bool(list_devices())
    except (OSError, AudioError):  # no PortAudio library at all: no device either
        return False
