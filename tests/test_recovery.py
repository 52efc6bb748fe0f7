"""The daemon keeps going: a device that goes away and comes back (also one missing at start),
a model too slow for real time, a reload by SIGHUP, a stop by SIGTERM.

The in-process tests drive `feed` with streams made here; the others run the daemon as a
subprocess on a real PulseAudio device (conftest.pulse_server) and read its files, log and
metrics endpoint.
"""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from edge.audio.streams import Conditioner, Gap, Stream
from edge.builders import label_setups
from edge.config import Loaded, load_config
from edge.detection.analysis import Analyzer
from edge.model.bundle import Bundle, load_bundle
from edge.pipeline import Lane, feed
from edge.records import Sink, StreamInfo
from tests.audio import tone_events, write_wav
from tests.conftest import Daemon, PulseServer, Scrape, daemon_config
from tests.scenes import TRUTH, Found, check_against_truth, scene
from tests.test_analysis import Collect

# --- in process: one stream through reconnects and reloads ---------------------------------------


@pytest.fixture(scope="module")
def bundle(tone_bundle: Path) -> Bundle:
    return load_bundle(tone_bundle)


def analyzer(bundle: Bundle, sink: Sink) -> Analyzer:
    default = load_config(None)
    labels = label_setups(Loaded(default.config, None, default.where), bundle)
    backend = bundle.open("onnx-fp32")
    return Analyzer(bundle, backend, labels, sink, hop_samples=bundle.hop_samples)


def blocks(x: np.ndarray, rate_hz: int, block_seconds: float = 0.1) -> Iterator[np.ndarray]:
    step = round(rate_hz * block_seconds)
    for i in range(0, len(x), step):
        yield x[i : i + step, None]


ANCHOR = datetime(2026, 11, 22, 10, 0, 0, 300_000, tzinfo=timezone.utc)  # .3 s past a second


def found_in_stream_time(sink: Collect) -> list[Found]:
    """Complete events with times from the stream's anchor, whatever segment found them."""
    out = []
    for e in sink.events:
        if e.type == "end" and e.start is not None and e.end is not None:
            start = (e.start - ANCHOR).total_seconds()
            out.append(Found(e.label, start, (e.end - ANCHOR).total_seconds()))
    return out


class ReloadAt:
    """FeedHooks that hand over to `replacement` once the stream has passed `seconds`."""

    def __init__(self, seconds: float, replacement: Analyzer) -> None:
        self.seconds, self.replacement = seconds, replacement
        self.asked = False
        self.switched_to: list[tuple[Analyzer, StreamInfo]] = []

    def tick(self, conditioner: Conditioner) -> list[Analyzer] | None:
        if not self.asked and conditioner.seconds_in >= self.seconds:
            self.asked = True
            return [self.replacement]
        return None

    def switched(self, lanes: list[Lane]) -> None:
        self.switched_to += [(lane.analyzer, lane.info) for lane in lanes]


def test_a_reloaded_model_takes_over_at_a_whole_second_without_a_break(bundle: Bundle) -> None:
    """The new analyzer begins exactly at a whole UTC second: every second has exactly one
    row, and events on both sides of the switch are found at their true times."""
    rate = 48000
    x = resample_poly(scene(), 3, 1).astype(np.float32)
    sink = Collect()
    first, second = analyzer(bundle, sink), analyzer(bundle, sink)
    hooks = ReloadAt(7.45, second)  # between the 3 kHz event ending at 6.2 and the next at 10
    stream = Stream("mic", ANCHOR, rate, 1, blocks(x, rate))
    info = StreamInfo("mic", ["tone-1k", "tone-3k"], ANCHOR, rate)
    feed(stream, first, info, "mix", threading.Event(), hooks)

    assert [a for a, _ in hooks.switched_to] == [second]
    switch_info = hooks.switched_to[0][1]
    # 7.45 s in is 10:00:07.75: the next whole second is 10:00:08, stream offset 7.7 s.
    assert switch_info.anchor == datetime(2026, 11, 22, 10, 0, 8, tzinfo=timezone.utc)
    times = [row.time for row in sink.rows]
    assert len(times) == len(set(times)) == 21  # 20.0 s from .3 past: 21 seconds touched
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times) if a and b)
    check_against_truth(found_in_stream_time(sink))


def test_a_device_back_at_another_rate_keeps_time_and_finds_events(bundle: Bundle) -> None:
    """48 kHz for 6 s, the device away for 2 s, back at 44.1 kHz: the gap is two gap:device
    seconds and the events after it are found where they are."""
    x48 = resample_poly(scene(), 3, 1).astype(np.float32)
    x44 = resample_poly(scene(), 441, 160).astype(np.float32)
    items: list[np.ndarray | Gap] = [
        *blocks(x48[: 6 * 48000], 48000),
        Gap(2 * 48000, "device", resume_rate_hz=44100),
        *blocks(x44[8 * 44100 :], 44100),
    ]
    sink = Collect()
    a = analyzer(bundle, sink)
    anchor = ANCHOR.replace(microsecond=0)
    stream = Stream("mic", anchor, 48000, 1, iter(items))
    info = StreamInfo("mic", ["tone-1k", "tone-3k"], anchor, 48000)
    conditioner = feed(stream, a, info, "mix", threading.Event())

    assert a.position_seconds == pytest.approx(20.0)
    assert conditioner.counts.gap_seconds == {"device": 2.0}
    assert conditioner.counts.audio_seconds == pytest.approx(18.0)
    status = [r.status for r in sink.rows]
    assert len(status) == 20 and status[6:8] == ["gap:device", "gap:device"]
    found = [
        Found(e.label, e.start_offset, e.end_offset or 0.0) for e in sink.events if e.type == "end"
    ]
    after = sorted((f for f in found if f.start > 8), key=lambda f: f.start)
    truth_after = sorted(t for t in TRUTH if t[0] > 8)
    assert len(after) == len(truth_after)
    for f, (start, end, _) in zip(after, truth_after, strict=True):
        assert abs(f.start - start) <= 0.1 + 1e-6 and abs(f.end - end) <= 0.1 + 1e-6


# --- a real device that goes away -----------------------------------------------------------------

CLIP_EVENTS = [(1.0, 2.0, 1000.0), (3.5, 4.5, 3000.0)]  # (start s, end s, Hz) in a 6 s clip
CLIP_SECONDS = 6.0


def write_clip(path: Path) -> Path:
    x = tone_events(48000, CLIP_SECONDS, CLIP_EVENTS, noise_amplitude=0.01, tone_amplitude=0.3)
    return write_wav(path, x, 48000)


def complete_events(daemon: Daemon) -> list[Found]:
    found = [
        Found(str(m["label"]), float(m["start_offset"]), float(m["end_offset"]))  # type: ignore[arg-type]
        for m in daemon.events()
        if m["type"] == "end"
    ]
    return sorted(found, key=lambda f: f.start)


def check_clip_events(found: list[Found]) -> None:
    """The two events of one played clip: labels, lengths and spacing as played."""
    assert [f.label for f in found] == ["tone-1k", "tone-3k"], found
    for f, (start, end, _) in zip(found, CLIP_EVENTS, strict=True):
        assert abs((f.end - f.start) - (end - start)) <= 0.2, f
    assert abs((found[1].start - found[0].start) - 2.5) <= 0.15, found


def check_rows_continuous(rows: list[dict[str, str]]) -> None:
    """One row per second, no second twice, none missing."""
    times = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in rows]
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert steps == {1.0}, steps


def test_the_daemon_survives_losing_its_device_and_records_the_gap(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    clip = write_clip(tmp_path / "clip.wav")
    source = "{kind: device, device: pulse, reconnect_min_seconds: 0.2, reconnect_max_seconds: 0.5}"
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle, source)) as daemon:
        daemon.wait_for_log("listening to pulse")
        played_a = time.monotonic()
        pulse_server.play(clip)
        with pulse_server.unplugged():
            unplugged = time.monotonic()
            daemon.wait_for_log("the stream stopped", timeout=5)
            time.sleep(4.0)
        outage = time.monotonic() - unplugged
        daemon.wait_for_log("is back after", timeout=15)
        played_b = time.monotonic()
        pulse_server.play(clip)
        time.sleep(1.0)
        scrape = daemon.scrape()
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    found = complete_events(daemon)
    assert len(found) == 4, found
    check_clip_events(found[:2])
    check_clip_events(found[2:])
    # The stream's clock ran on through the outage: the clips are as far apart in stream
    # time as they were played (paplay's own start-up varies by a few tens of ms).
    assert abs((found[2].start - found[0].start) - (played_b - played_a)) <= 0.3

    rows = daemon.rows()
    check_rows_continuous(rows)
    device_gap = sum(r["status"] == "gap:device" for r in rows)
    # The missing audio runs from the last block before the unplug to the first after the
    # replug: the outage, plus finding the device back (<= 0.5 s) and PulseAudio's 1-2 s to
    # the first block of a new stream; a second partly missing counts as a gap second.
    measured = scrape.value("soundwatch_gap_seconds_total", reason="device")
    assert outage - 0.2 <= measured <= outage + 3.0, (measured, outage)
    assert abs(device_gap - measured) <= 1.5, (device_gap, measured)
    assert scrape.value("soundwatch_device_reconnects_total") == 1
    assert scrape.value("soundwatch_device_connected") == 1
    assert "waiting for it to come back" in daemon.log()


def test_a_device_missing_at_start_is_waited_for(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    """Started with the device away: the daemon says so, is ready for systemd, writes gap
    seconds, and listens once the device is there."""
    clip = write_clip(tmp_path / "clip.wav")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    source = "{kind: device, device: pulse, reconnect_min_seconds: 0.2, reconnect_max_seconds: 0.5}"
    config = daemon_config(tmp_path, tone_bundle, source)
    pulse_server.unplug()
    plugged = False
    try:
        with Daemon(tmp_path, config, env={"NOTIFY_SOCKET": str(tmp_path / "notify")}) as daemon:
            ready = notify.recv(4096).decode()
            assert "READY=1" in ready, ready
            assert "STATUS=waiting for input device pulse" in ready, ready
            daemon.wait_for_log("waiting for it to come back")
            time.sleep(2.0)  # still away: the seconds go by as gaps
            scrape = daemon.scrape()
            assert scrape.value("soundwatch_device_connected") == 0
            assert scrape.value("soundwatch_gap_seconds_total", reason="device") >= 1.0
            pulse_server.plug()
            plugged = True
            daemon.wait_for_log("is back after", timeout=20)
            pulse_server.play(clip)
            time.sleep(1.0)
            code, _ = daemon.stop()
    finally:
        notify.close()
        if not plugged:
            pulse_server.plug()
    assert code == 0, daemon.log()
    check_clip_events(complete_events(daemon))
    rows = daemon.rows()
    check_rows_continuous(rows)
    assert rows[0]["status"] == "gap:device"
    assert sum(r["status"] == "gap:device" for r in rows) >= 2


# --- load shedding --------------------------------------------------------------------------------


def write_loud_tone(path: Path, seconds: float = 6.0) -> Path:
    """A 1 kHz tone from 0.5 s to `seconds` - 0.5 s: loud enough to slow the slow bundle."""
    x = tone_events(48000, seconds, [(0.5, seconds - 0.5, 1000.0)], tone_amplitude=0.3)
    return write_wav(path, x, 48000)


def test_a_model_too_slow_for_real_time_sheds_audio_and_recovers(
    slow_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    """While a loud tone plays, each model call takes 1.5 s for at most 0.4 s of audio: the
    daemon drops what it cannot analyse as gap:overload instead of falling behind, and once
    the tone (and so the load) is gone it analyses every second again, by itself."""
    loud = write_loud_tone(tmp_path / "loud.wav")
    source = "{kind: device, device: pulse, buffer_seconds: 10, max_lag_seconds: 1}"
    with Daemon(tmp_path, daemon_config(tmp_path, slow_bundle, source)) as daemon:
        daemon.wait_for_log("listening to pulse")
        pulse_server.play(loud)
        time.sleep(3.0)  # the last slow call ends, the rest of the backlog is shed
        before = daemon.scrape()
        time.sleep(3.0)
        after = daemon.scrape()
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    def gap(scrape: Scrape, reason: str) -> float:
        return scrape.value("soundwatch_gap_seconds_total", reason=reason)

    status = [r["status"] for r in daemon.rows()]
    figures = (before.text, after.text, status, daemon.log())
    assert gap(before, "overload") >= 1.0, figures  # about 3 s of the 5 s tone
    assert gap(after, "overload") == gap(before, "overload"), figures  # recovered
    assert gap(after, "overrun") == 0, figures  # shed before the 10 s ring could overflow
    audio = after.value("soundwatch_audio_seconds_total") - before.value(
        "soundwatch_audio_seconds_total"
    )
    assert 2.5 <= audio <= 3.5, figures  # keeping up: 3 s of audio in 3 s
    assert after.value("soundwatch_lag_seconds") < 0.5, figures
    assert "dropping audio it cannot analyse" in daemon.log()

    check_rows_continuous(daemon.rows())
    assert status.count("gap:overload") >= 1, status
    # After the last dropped second (and the one that holds the first window after it), every
    # second is analysed; the last row, cut by the stop, may be too short to centre a window.
    last_overload = max(i for i, s in enumerate(status) if s == "gap:overload")
    recovered = status[last_overload + 2 : -1]
    assert len(recovered) >= 3 and set(recovered) == {"analysed"}, status


# --- signals --------------------------------------------------------------------------------------


def test_sigterm_while_live_closes_events_flushes_and_exits_within_5_s(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    """SIGTERM in the middle of an event: the event is closed (in the files and over MQTT),
    the outbox is empty, `offline` is published, and the process exits 0 within 5 s."""
    import sqlite3

    from tests.mqtt_broker import Mosquitto, Subscriber

    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker, ["soundwatch/box/#"])
    tone = write_loud_tone(tmp_path / "tone.wav", seconds=8.0)
    mqtt = f"mqtt: {{host: {broker.host}, port: {broker.port}}}\n"
    player = threading.Thread(target=pulse_server.play, args=(tone,))
    try:
        with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle, extra=mqtt)) as daemon:
            daemon.wait_for_log("listening to pulse")
            daemon.wait_for_log("connected to")
            player.start()
            deadline = time.monotonic() + 10
            while not any(m["type"] == "start" for m in daemon.events()):
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.05)
            time.sleep(1.0)  # well inside the 7 s tone
            code, seconds = daemon.stop(signal.SIGTERM)
        player.join()
        statuses = subscriber.wait_for(
            lambda got: any(m.topic.endswith("/status") and b"offline" in m.payload for m in got),
            timeout=10,
            what="offline status",
        )
    finally:
        subscriber.close()
        broker.stop()
    assert code == 0, daemon.log()
    assert seconds < 5.0, seconds
    written = daemon.events()
    assert [m["type"] for m in written] == ["start", "end"], written
    assert written[0]["id"] == written[1]["id"] and written[1]["end"] is not None
    sent = [m.json() for m in statuses if m.topic.endswith("/events")]
    assert [(m["id"], m["type"]) for m in sent] == [(m["id"], m["type"]) for m in written]
    with sqlite3.connect(tmp_path / "out" / "mqtt-outbox.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def copy_bundle(source: Path, folder: Path, version: str) -> Path:
    """`source` as another version (the manifest hashes the model files, not itself)."""
    import shutil

    import yaml

    shutil.copytree(source, folder)
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["version"] = version
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def test_sighup_reloads_the_model_without_stopping_capture(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    clip = write_clip(tmp_path / "clip.wav")
    newer = copy_bundle(tone_bundle, tmp_path / "tone-newer", "2026.12.01")
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle)) as daemon:
        daemon.wait_for_log("listening to pulse")
        pulse_server.play(clip)
        daemon.config.write_text(daemon_config(tmp_path, newer))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload: model tone 2026.12.01 is listening")
        pulse_server.play(clip)
        time.sleep(1.0)
        scrape = daemon.scrape()
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    log = daemon.log()
    assert log.count("listening to pulse") == 1  # one capture stream all along
    assert "reload refused" not in log
    info = scrape.samples
    assert [dict(k[1])["version"] for k in info if k[0] == "soundwatch_model_info"] == [
        "2026.12.01"
    ]
    ends = [m for m in daemon.events() if m["type"] == "end"]
    assert [m["model_version"] for m in ends] == ["2026.11.22"] * 2 + ["2026.12.01"] * 2
    # Both clips found, each as played; no second lost or written twice across the switch.
    found = [
        Found(str(m["label"]), float(m["start_offset"]), float(m["end_offset"]))  # type: ignore[arg-type]
        for m in ends
    ]
    check_clip_events(found[:2])
    check_clip_events(found[2:])
    rows = daemon.rows()
    check_rows_continuous(rows)
    assert not any(r["status"].startswith("gap") for r in rows)


def test_sighup_with_a_bad_config_or_bundle_keeps_the_running_one(
    tone_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    clip = write_clip(tmp_path / "clip.wav")
    broken = copy_bundle(tone_bundle, tmp_path / "tone-broken", "2026.12.02")
    model = broken / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-10] + bytes(10))  # no longer its sha256
    good = daemon_config(tmp_path, tone_bundle)
    with Daemon(tmp_path, good) as daemon:
        daemon.wait_for_log("listening to pulse")
        daemon.config.write_text(good.replace("model: {", "model: {threads: 0, "))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused, still running model tone 2026.11.22")
        daemon.config.write_text(daemon_config(tmp_path, broken))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused", count=2)
        before = daemon.scrape()
        pulse_server.play(clip)
        time.sleep(1.0)
        after = daemon.scrape()
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    refusals = [line for line in daemon.log().splitlines() if "reload refused" in line]
    assert len(refusals) == 2, refusals
    assert "threads" in refusals[0] and "must be within 1..256" in refusals[0]
    assert "model.int8.onnx" in refusals[1] and "sha256" in refusals[1]
    versions = [dict(k[1])["version"] for k in after.samples if k[0] == "soundwatch_model_info"]
    assert versions == ["2026.11.22"]
    grew = after.value("soundwatch_audio_seconds_total") - before.value(
        "soundwatch_audio_seconds_total"
    )
    assert grew >= CLIP_SECONDS
    check_clip_events(complete_events(daemon))
