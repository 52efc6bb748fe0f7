"""Prometheus metrics: made in one function, served over real HTTP, and moving as they should
while the daemon runs as a subprocess (live on PulseAudio, replaying a file, falling behind)."""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge.audio.streams import Counts
from edge.config import load_config
from edge.errors import ConfigError
from edge.model.bundle import load_bundle
from edge.model.runtime.base import FILE_FORMATS
from edge.ops.counters import FeedMetrics, MqttMetrics
from edge.ops.metrics import (
    MetricsServer,
    MetricsSink,
    create_metrics,
    parse_address,
)
from edge.records import ANALYSED, Event, Levels, SecondRow, StreamInfo, gap_status
from tests.audio import tone_events, write_wav
from tests.conftest import Daemon, PulseServer, Scrape, daemon_config
from tests.mqtt_broker import Mosquitto
from tests.test_mqtt import sink_for

# --- in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9000", ("::1", 9000)),
        (":9464", ("0.0.0.0", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_addresses_are_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", "host:70000", ""])
def test_a_bad_address_is_refused_in_the_config_with_its_line(address: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"metrics:\n  enabled: true\n  address: '{address}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:3" in str(caught.value) and "metrics.address" in str(caught.value)
    assert "host:port" in str(caught.value)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return Scrape(answer.read().decode())


def test_metrics_are_served_and_a_taken_port_is_one_clear_error() -> None:
    first, second = create_metrics(), create_metrics()  # own registries: no clash
    server = MetricsServer(first, "127.0.0.1:0")
    try:
        first.set_model("tone", "2026.11.22", "onnx")
        got = scrape(f"http://127.0.0.1:{server.port}/metrics")
        assert got.value("soundwatch_audio_seconds_total") == 0
        assert got.labelled("soundwatch_gap_seconds_total") == {
            "overrun": 0,
            "device": 0,
            "overload": 0,
        }
        assert got.value("soundwatch_model_info", name="tone", version="2026.11.22", backend="onnx")
        assert got.value("process_resident_memory_bytes") > 0
        with pytest.raises(ConfigError, match=f"metrics.address 127.0.0.1:{server.port}: cannot"):
            MetricsServer(second, f"127.0.0.1:{server.port}")
    finally:
        server.close()


def test_mqtt_drops_and_deliveries_are_counters_on_the_endpoint(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """10 events into an outbox of 4 while not connected (6 dropped, 10 probabilities dropped),
    then connected: the 4 kept are published. Read back through a real /metrics."""
    sink = sink_for(broker, tmp_path, outbox_max_messages=4, probabilities=True)
    metrics = create_metrics()
    mqtt_metrics = MqttMetrics(metrics, sink)
    server = MetricsServer(metrics, "127.0.0.1:0")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        assert scrape(url).labelled("soundwatch_mqtt_events_total") == {
            "published": 0,
            "rejected": 0,
            "dropped": 0,
            "unstored": 0,
        }
        for i in range(10):
            sink.event(Event(f"e{i}", "start", "a", float(i), None, None, None, 0.9, 0.9, 0.5, "t"))
            sink.second(SecondRow(float(i), None, ANALYSED, np.array([0.5], dtype=np.float32)))
        mqtt_metrics.update()
        offline = scrape(url)
        sink.start()
        deadline = time.monotonic() + 10
        while sink.events_published < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        mqtt_metrics.update()
        online = scrape(url)
    finally:
        sink.close()
        server.close()
    assert offline.labelled("soundwatch_mqtt_events_total")["dropped"] == 6
    assert offline.labelled("soundwatch_mqtt_seconds_total") == {"published": 0, "dropped": 10}
    assert offline.value("soundwatch_outbox_pending") == 4
    assert offline.value("soundwatch_mqtt_connected") == 0
    assert online.labelled("soundwatch_mqtt_events_total") == {
        "published": 4,
        "rejected": 0,
        "dropped": 6,
        "unstored": 0,
    }
    assert online.value("soundwatch_outbox_pending") == 0
    assert online.value("soundwatch_mqtt_connected") == 1


def test_an_analysed_second_refreshes_the_last_analysed_time() -> None:
    metrics = create_metrics()
    metrics.last_analysed.set(0)
    sink = MetricsSink(metrics)
    sink.begin(StreamInfo("live", ["a"], None, 16000))
    gap = SecondRow(0.0, None, gap_status("device"), np.array([np.nan], dtype=np.float32))
    sink.second(gap)
    assert metrics.last_analysed._value.get() == 0  # a gap is not analysed audio
    sink.second(SecondRow(1.0, None, ANALYSED, np.array([0.5], dtype=np.float32)))
    assert abs(metrics.last_analysed._value.get() - time.time()) < 60


def test_the_gauges_show_the_last_second_as_served() -> None:
    """Probabilities and levels as a scrape reads them: the last row's, NaN where it was not
    analysed; a new label set replaces the old, and a segment with the same labels keeps them."""
    metrics = create_metrics()
    server = MetricsServer(metrics, "127.0.0.1:0")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        sink = MetricsSink(metrics)
        info = StreamInfo("live", ["a", "b"], None, 16000, level_unit="dBFS", level_bands=("1000",))
        sink.begin(info)
        first = scrape(url)
        assert first.labelled("soundwatch_probability") == {"a": 0.0, "b": 0.0}
        levels = Levels(-30.5, {"1000": -41.25}, 1.0)
        sink.second(SecondRow(0.0, None, ANALYSED, np.array([0.25, 0.75], np.float32), levels))
        got = scrape(url)
        assert got.labelled("soundwatch_probability") == {"a": 0.25, "b": 0.75}
        assert got.value("soundwatch_sound_level_db", band="broadband", unit="dBFS") == -30.5
        assert got.value("soundwatch_sound_level_db", band="1000", unit="dBFS") == -41.25
        sink.begin(info)  # a new segment, the same labels: the gauges go on showing the last
        assert scrape(url).labelled("soundwatch_probability") == {"a": 0.25, "b": 0.75}
        sink.second(SecondRow(1.0, None, gap_status("device"), np.full(2, np.nan, np.float32)))
        gap = scrape(url)
        assert all(math.isnan(p) for p in gap.labelled("soundwatch_probability").values())
        assert math.isnan(gap.value("soundwatch_sound_level_db", band="broadband", unit="dBFS"))
        sink.begin(StreamInfo("live", ["c"], None, 16000, level_unit="dBFS", level_bands=("1000",)))
        sink.second(SecondRow(2.0, None, ANALYSED, np.array([0.5], np.float32), levels))
        again = scrape(url)
        assert again.labelled("soundwatch_probability") == {"c": 0.5}
        assert again.value("soundwatch_sound_level_db", band="1000", unit="dBFS") == -41.25
    finally:
        server.close()


def test_feed_counters_move_by_difference_across_streams() -> None:
    metrics = create_metrics()
    feed = FeedMetrics(metrics)
    counts = Counts()
    counts.audio_seconds = 2.5
    counts.gap_seconds["overrun"] = 0.5
    counts.bad_samples, counts.clipped_samples = 3, 7
    feed.update(counts, overruns=2, reconnects=1)
    feed.update(counts, overruns=2, reconnects=1)  # nothing new: nothing added
    counts.audio_seconds = 4.0
    counts.gap_seconds["device"] = 1.25
    feed.update(counts, overruns=5, reconnects=1)
    fresh = Counts()  # the next stream starts from 0; the totals go on
    fresh.audio_seconds = 1.0
    feed.update(fresh, overruns=5, reconnects=2)

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, labels)
        assert got is not None, name
        return got

    assert value("soundwatch_audio_seconds_total") == 5.0
    assert value("soundwatch_gap_seconds_total", reason="overrun") == 0.5
    assert value("soundwatch_gap_seconds_total", reason="device") == 1.25
    assert value("soundwatch_nonfinite_samples_total") == 3
    assert value("soundwatch_clipped_samples_total") == 7
    assert value("soundwatch_audio_overruns_total") == 5
    assert value("soundwatch_device_reconnects_total") == 2


# --- the daemon ---------------------------------------------------------------------------------

# (start s, end s, Hz): two 1 kHz events and one 3 kHz event in 7 s.
EVENTS = [(1.0, 2.0, 1000.0), (3.0, 3.8, 3000.0), (5.0, 6.0, 1000.0)]


def write_events(path: Path) -> Path:
    x = tone_events(48000, 7.0, EVENTS, noise_amplitude=0.01, tone_amplitude=0.3)
    return write_wav(path, x, 48000)


def test_counters_move_when_the_registry_is_read_over_http_and_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the daemon does: the counts move at every read (a scrape, a restricted scrape,
    get_sample_value), not on the processing thread; a refresh that fails costs a log line,
    never the scrape."""
    metrics = create_metrics()
    feed, counts = FeedMetrics(metrics), Counts()
    metrics.registry.before_collect.append(lambda: feed.update(counts))
    server = MetricsServer(metrics, "127.0.0.1:0")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        counts.audio_seconds = 1.5
        assert (
            Scrape(urllib.request.urlopen(url).read().decode()).value(
                "soundwatch_audio_seconds_total"
            )
            == 1.5
        )
        counts.audio_seconds = 4.0
        restricted = f"{url}?name[]=soundwatch_audio_seconds_total"
        assert (
            "soundwatch_audio_seconds_total 4.0"
            in urllib.request.urlopen(restricted).read().decode()
        )
        counts.audio_seconds = 6.25
        assert metrics.registry.get_sample_value("soundwatch_audio_seconds_total") == 6.25

        def broken() -> None:
            raise RuntimeError("the sink is gone")

        metrics.registry.before_collect.insert(0, broken)
        counts.audio_seconds = 7.0
        for _ in range(2):
            assert metrics.registry.get_sample_value("soundwatch_audio_seconds_total") == 7.0
        failed = [r for r in caplog.records if "the sink is gone" in r.getMessage()]
        assert len(failed) == 1  # once, not at every scrape
    finally:
        server.close()


def test_metrics_follow_the_live_daemon(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    wav = write_events(tmp_path / "events.wav")
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle)) as daemon:
        daemon.wait_for_log("listening to pulse")
        first = daemon.scrape()
        began = time.monotonic()
        pulse_server.play(wav)
        time.sleep(1.0)
        second = daemon.scrape()
        elapsed = time.monotonic() - began
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    grew = second.value("soundwatch_audio_seconds_total") - first.value(
        "soundwatch_audio_seconds_total"
    )
    assert abs(grew - elapsed) <= 0.5, (grew, elapsed)  # all the audio, in real time
    starts: dict[str, int] = {}
    for message in daemon.events():
        if message["type"] == "start":
            label = str(message["label"])
            starts[label] = starts.get(label, 0) + 1
    assert starts == {"tone-1k": 2, "tone-3k": 1}
    assert second.labelled("soundwatch_events_total") == starts
    probabilities = second.labelled("soundwatch_probability")
    assert set(probabilities) == {"tone-1k", "tone-3k"}
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    calls = second.value("soundwatch_inference_seconds_count")
    windows = second.value("soundwatch_windows_total")
    audio = second.value("soundwatch_audio_seconds_total")
    assert 0 < calls <= windows
    assert abs(windows - audio / 0.1) <= 20  # one window per 0.1 s hop
    assert second.value("soundwatch_inference_seconds_sum") < audio  # faster than real time
    assert second.labelled("soundwatch_gap_seconds_total") == {
        "overrun": 0,
        "device": 0,
        "overload": 0,
    }
    assert second.value("soundwatch_audio_overruns_total") == 0
    assert 0 <= second.value("soundwatch_ring_fill_ratio") < 0.05
    assert 0 <= second.value("soundwatch_lag_seconds") < 0.5
    assert second.value("soundwatch_device_connected") == 1
    assert math.isnan(second.value("soundwatch_mqtt_connected"))  # no broker configured
    # model.file auto: the backend that runs the bundle's first file in PREFERENCE
    backend = FILE_FORMATS[load_bundle(tone_bundle).choose_file().partition("-")[0]]
    assert second.value("soundwatch_model_info", name="tone", version="2026.11.22", backend=backend)


def test_audio_seconds_grow_with_a_replayed_file(tone_bundle: Path, tmp_path: Path) -> None:
    wav = write_events(tmp_path / "rec_20261122T100000.wav")
    source = f"{{kind: files, paths: [{wav}], speed: 1}}"
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle, source)) as daemon:
        daemon.wait_for_log("listening to")
        first = daemon.scrape()
        time.sleep(2.0)
        second = daemon.scrape()
        code = daemon.process.wait(timeout=20)  # the file ends: so does the daemon
    assert code == 0, daemon.log()
    a = first.value("soundwatch_audio_seconds_total")
    b = second.value("soundwatch_audio_seconds_total")
    assert 1.5 <= b - a <= 2.5 and b < 7.0, (a, b)
    assert second.value("soundwatch_lag_seconds") == 0  # not a live source
    assert first.value("soundwatch_device_connected") == 0


def test_overruns_are_counted_when_the_consumer_is_too_slow(
    slow_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    """Load shedding off and a 2 s ring: a model slower than real time makes the ring
    overflow, and the lost audio shows as overruns and gap:overrun seconds."""
    loud = tmp_path / "loud.wav"
    write_wav(loud, tone_events(48000, 6.0, [(0.5, 5.5, 1000.0)], tone_amplitude=0.3), 48000)
    source = "{kind: device, device: pulse, buffer_seconds: 2, max_lag_seconds: null}"
    with Daemon(tmp_path, daemon_config(tmp_path, slow_bundle, source)) as daemon:
        daemon.wait_for_log("listening to pulse")
        pulse_server.play(loud)
        time.sleep(3.0)
        after = daemon.scrape()
        code, _ = daemon.stop()
    assert code == 0, daemon.log()
    assert after.value("soundwatch_audio_overruns_total") > 0
    lost = after.value("soundwatch_gap_seconds_total", reason="overrun")
    assert lost >= 1.0
    assert after.value("soundwatch_gap_seconds_total", reason="overload") == 0
    status = [r["status"] for r in daemon.rows()]
    assert status.count("gap:overrun") >= 1, status


def test_a_taken_metrics_port_is_logged_and_detection_goes_on(
    tone_bundle: Path, tmp_path: Path
) -> None:
    import socket

    wav = write_events(tmp_path / "rec_20261122T100000.wav")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    source = f"{{kind: files, paths: [{wav}], speed: 0}}"
    config = daemon_config(tmp_path, tone_bundle, source).replace(
        "127.0.0.1:0", f"127.0.0.1:{port}"
    )
    try:
        with Daemon(tmp_path, config) as daemon:
            code = daemon.process.wait(timeout=60)
    finally:
        taken.close()
    assert code == 0, daemon.log()
    assert f"metrics.address 127.0.0.1:{port}: cannot serve metrics there" in daemon.log()
    assert "going on without metrics" in daemon.log()
    assert sum(m["type"] == "end" for m in daemon.events()) == len(EVENTS)
