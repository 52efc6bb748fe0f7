"""MQTT delivery against a real mosquitto: round trip, status and last will, a 30 s broker
outage, a daemon killed during an outage, messages lost on the wire, a full outbox, TLS and
passwords, Home Assistant discovery.

The daemon runs as a subprocess; its own events.jsonl is the truth of what it produced, and a
paho subscriber in this process records what arrived. Each delivery scenario prints a
`FIGURES` line (run with `pytest -s`), which the README quotes: produced, delivered, lost (must
be 0) and duplicated (at least once allows some).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from edge.config import Config
from edge.errors import ConfigError
from edge.outputs.mqtt.messages import (
    event_payload,
    levels_payload,
    probabilities_payload,
    status_payload,
)
from edge.outputs.mqtt.settings import MqttConfig
from edge.outputs.mqtt.sink import MqttSink
from edge.records import ANALYSED, Event, Levels, SecondRow, StreamInfo
from edge.schema import build
from tests.mqtt_broker import Mosquitto, Received, Subscriber, make_certificates
from tests.scenes import Found, check_against_truth, write_scene

ROOT = Path(__file__).resolve().parent.parent
SOUNDWATCH = [sys.executable, "-m", "edge.cli"]
SCHEMAS = {
    name: jsonschema.Draft202012Validator(
        json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    )
    for name in ("event", "status", "probabilities", "levels")
}


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Keeps a persistent subscriber's session and queued messages over its own restarts."""
    b = Mosquitto(tmp_path / "broker", persistent=True)
    b.start()
    yield b
    b.stop()


def write_config(tmp_path: Path, bundle: Path, broker: Mosquitto, source: Any, **mqtt: Any) -> Path:
    config = {
        "model": {"path": str(bundle)},
        "source": source,
        "output": {"dir": str(tmp_path / "out"), "device_id": "box", "print": "none"},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_seconds": 2, **mqtt},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Daemon:
    """`soundwatch run` in the background; its log goes to a file we can read at any time."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        with log.open("ab") as f:
            self.process = subprocess.Popen(
                [*SOUNDWATCH, "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=f,
                env={**os.environ, **(env or {})},
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert self.process.poll() is None, f"daemon exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.log()}"
            time.sleep(0.1)


def run_daemon(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOUNDWATCH, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def produced(out: Path) -> list[dict[str, Any]]:
    """Every event message the daemon wrote, in order (its own record of what happened)."""
    return [
        json.loads(line)
        for path in sorted(out.rglob("events.jsonl"))
        for line in path.read_text().splitlines()
    ]


def arrived(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in subscriber.messages("/events")]


def key(message: dict[str, Any]) -> tuple[str, str]:
    return message["id"], message["type"]


@dataclass(frozen=True)
class Figures:
    produced: int
    delivered: int
    lost: int
    duplicated: int


def tally(scenario: str, made: list[dict[str, Any]], got: list[dict[str, Any]]) -> Figures:
    """Compare what arrived with what was produced; print the figures for the README."""
    counts = Counter(key(m) for m in got)
    keys = [key(m) for m in made]
    assert len(set(keys)) == len(keys), "the daemon itself repeated a message"
    assert set(counts) <= set(keys), f"messages nobody produced: {set(counts) - set(keys)}"
    by_key = {key(m): m for m in made}
    for m in got:
        assert m == by_key[key(m)], "a message arrived changed"
        SCHEMAS["event"].validate(m)
    # Order per label: the first copy of each message arrives in the order it was produced.
    first = list(dict.fromkeys(key(m) for m in got))
    for label in {m["label"] for m in made}:
        want = [key(m) for m in made if m["label"] == label and key(m) in counts]
        assert [k for k in first if by_key[k]["label"] == label] == want, f"{label}: order"
    delivered = sum(1 for k in keys if counts[k])
    figures = Figures(
        len(keys), delivered, len(keys) - delivered, sum(counts.values()) - len(counts)
    )
    print(f"\nFIGURES {scenario}: {figures}")
    return figures


def wait_all_delivered(subscriber: Subscriber, out: Path, timeout: float) -> None:
    want = {key(m) for m in produced(out)}
    subscriber.wait_for(
        lambda ms: want <= {key(m.json()) for m in ms if m.topic.endswith("/events")},
        timeout,
        f"all {len(want)} event messages",
    )


# -- round trip, status, discovery -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_round_trip_delivers_every_event_of_a_recording(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto, protocol: str
) -> None:
    """speed 0: the file is scored before the connection is up, so the events go out of the
    outbox, at shutdown at the latest."""
    wav = write_scene(tmp_path / "rec_20261122T100000.wav")
    source = {"kind": "files", "paths": [str(wav)], "speed": 0}
    config = write_config(tmp_path, tone_bundle, broker, source, protocol=protocol)
    subscriber = Subscriber(broker, ["soundwatch/box/#"])
    result = run_daemon(config)
    assert result.returncode == 0, result.stderr
    status = [
        m.json()
        for m in subscriber.wait_for(
            lambda ms: any(b'"offline"' in m.payload for m in ms), 10, "offline status"
        )
        if m.topic == "soundwatch/box/status"
    ]
    subscriber.close()

    got = arrived(subscriber)
    figures = tally(f"round trip (MQTT {protocol})", produced(tmp_path / "out"), got)
    assert figures.produced == 12 and figures.lost == 0 and figures.duplicated == 0
    check_against_truth(
        [Found(m["label"], m["start_offset"], m["end_offset"]) for m in got if m["type"] == "end"]
    )
    for m in got:
        assert m["device"] == "box" and m["model"] == "tone" and m["source"] == str(wav)
    ends = {m["id"]: m for m in got if m["type"] == "end"}
    for start in (m for m in got if m["type"] == "start"):
        end = ends[start["id"]]  # each start has its end: same id, label and start time
        assert (end["label"], end["start"]) == (start["label"], start["start"])
        assert start["start"].startswith("2026-11-22T10:00:") and start["end"] is None
    assert [s["state"] for s in status] == ["online", "offline"]
    for s in status:
        SCHEMAS["status"].validate(s)
        assert (s["device"], s["model"], s["model_version"]) == ("box", "tone", "2026.11.22")
    assert status[1]["since"] is not None  # a clean stop says when


def test_status_retained_last_will_probabilities_and_discovery(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto
) -> None:
    config = write_config(
        tmp_path, tone_bundle, broker, {"kind": "demo"}, probabilities=True, homeassistant=True
    )
    early = Subscriber(broker, ["soundwatch/box/#"])
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        early.wait_for(
            lambda ms: len([m for m in ms if m.topic.endswith("/probabilities")]) >= 3,
            30,
            "three probability messages",
        )
        topics = ["soundwatch/box/status", "soundwatch/box/state/#", "homeassistant/#"]
        late = Subscriber(broker, topics)
        seen = late.wait_for(lambda ms: len(ms) >= 6, 10, "retained status, states, discovery")
    finally:
        daemon.stop(signal.SIGKILL)
    (online,) = [m for m in seen if m.topic == "soundwatch/box/status"]
    assert online.retain and online.json()["state"] == "online"
    SCHEMAS["status"].validate(online.json())
    datetime.strptime(online.json()["since"], "%Y-%m-%dT%H:%M:%S.%fZ")

    probabilities = [m.json() for m in early.messages("/probabilities")]
    for p in probabilities:
        SCHEMAS["probabilities"].validate(p)
        assert set(p["scores"]) == {"tone-1k", "tone-3k"}
    # The first second may be `edge` (too near the start to centre a window); then all are scored.
    analysed = [p for p in probabilities if p["status"] == ANALYSED]
    assert len(analysed) >= 2 and all(None not in p["scores"].values() for p in analysed)
    times = [p["time"] for p in probabilities]
    assert times == sorted(times) and len(set(times)) == len(times)

    discovery = {m.topic: m.json() for m in seen if m.topic.startswith("homeassistant/")}
    assert sorted(discovery) == [
        "homeassistant/binary_sensor/soundwatch_box/tone-1k/config",
        "homeassistant/binary_sensor/soundwatch_box/tone-3k/config",
        "homeassistant/sensor/soundwatch_box/last_detection/config",
    ]
    sensor = discovery["homeassistant/binary_sensor/soundwatch_box/tone-1k/config"]
    assert sensor["state_topic"] == "soundwatch/box/state/tone-1k"
    assert sensor["availability_topic"] == "soundwatch/box/status"
    assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
    states = {m.topic: m.payload for m in seen if "/state/" in m.topic}
    assert sorted(states) == ["soundwatch/box/state/tone-1k", "soundwatch/box/state/tone-3k"]
    assert set(states.values()) <= {b"ON", b"OFF"}
    assert all(m.retain for m in seen)

    # SIGKILL: no goodbye from the daemon; the broker publishes its last will, retained.
    def offline(m: Received) -> bool:
        return m.topic == "soundwatch/box/status" and m.json()["state"] == "offline"

    will = next(
        m for m in late.wait_for(lambda ms: any(map(offline, ms)), 10, "will") if offline(m)
    )
    assert will.json()["since"] is None and will.json()["device"] == "box"
    SCHEMAS["status"].validate(will.json())
    after = Subscriber(broker, ["soundwatch/box/status"])
    retained = after.wait_for(lambda ms: len(ms) >= 1, 10, "retained offline")
    assert retained[0].retain and retained[0].json()["state"] == "offline"
    for s in (early, late, after):
        s.close()


# -- outages ---------------------------------------------------------------------------------------


def test_a_30_s_broker_outage_loses_no_event(
    tone_bundle: Path, tmp_path: Path, persistent_broker: Mosquitto
) -> None:
    broker, out = persistent_broker, tmp_path / "out"
    config = write_config(tmp_path, tone_bundle, broker, {"kind": "demo"})
    subscriber = Subscriber(broker, ["soundwatch/box/events"], client_id="test", persistent=True)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        subscriber.wait_for(lambda ms: len(ms) >= 2, 30, "a first event before the outage")
        broker.stop()
        before = len(produced(out))
        time.sleep(30)
        during = len(produced(out)) - before
        assert daemon.process.poll() is None, daemon.log()
        broker.start()
        wait_all_delivered(subscriber, out, timeout=30)
        assert daemon.stop() == 0, daemon.log()
        wait_all_delivered(subscriber, out, timeout=15)
    finally:
        if daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
        subscriber.close()
    log = daemon.log()
    assert "lost the connection to" in log and log.count("connected to 127.0.0.1") == 2
    assert "connection refused" in log and "Traceback" not in log
    assert during >= 4, "the demo makes several events in 30 s"
    figures = tally("broker down 30 s", produced(out), arrived(subscriber))
    assert figures.lost == 0


def test_a_daemon_killed_during_an_outage_sends_its_outbox_after_restart(
    tone_bundle: Path, tmp_path: Path, persistent_broker: Mosquitto
) -> None:
    broker, out = persistent_broker, tmp_path / "out"
    config = write_config(tmp_path, tone_bundle, broker, {"kind": "demo"})
    subscriber = Subscriber(broker, ["soundwatch/box/events"], client_id="test", persistent=True)
    first = Daemon(config, tmp_path / "first.log")
    second = None
    try:
        subscriber.wait_for(lambda ms: len(ms) >= 2, 30, "a first event before the outage")
        broker.stop()
        time.sleep(12)
        first.stop(signal.SIGKILL)
        unsent = len(produced(out)) - len(subscriber.messages())
        assert unsent >= 2, "events were produced while the broker was down"
        second = Daemon(config, tmp_path / "second.log")
        second.wait_log("unsent event messages", timeout=30)
        time.sleep(6)
        broker.start()
        wait_all_delivered(subscriber, out, timeout=30)
        assert second.stop() == 0, second.log()
        wait_all_delivered(subscriber, out, timeout=15)
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.process.poll() is None:
                daemon.stop(signal.SIGKILL)
        subscriber.close()
    figures = tally("daemon SIGKILLed during a broker outage", produced(out), arrived(subscriber))
    assert figures.lost == 0


def test_a_storm_of_sigkills_loses_no_event_the_daemon_recorded(
    tone_bundle: Path, tmp_path: Path, persistent_broker: Mosquitto
) -> None:
    """Issue 13, item 0: 8 SIGKILLs at random moments while 40 recordings are scored at full
    speed (hundreds of event messages a second), then a run to the end. Every event in the
    daemon's own record (events.jsonl) reaches the broker: the outbox commits an event before
    the files record it. (Written the other way round, 1 in 6,101 was lost.)"""
    import random

    broker, out = persistent_broker, tmp_path / "out"
    folder = tmp_path / "recordings"
    for k in range(40):
        write_scene(folder / f"rec_20261122T10{k:02d}00.wav", seed=k)
    source = {"kind": "files", "paths": [str(folder)], "speed": 0}
    config = write_config(tmp_path, tone_bundle, broker, source)
    subscriber = Subscriber(broker, ["soundwatch/box/events"], client_id="test", persistent=True)
    rng = random.Random(13)
    try:
        for k in range(8):
            daemon = Daemon(config, tmp_path / f"killed{k}.log")
            daemon.wait_log("connected to", timeout=30)
            time.sleep(rng.uniform(0.0, 1.5))
            daemon.stop(signal.SIGKILL)
        last = Daemon(config, tmp_path / "last.log")
        assert last.process.wait(timeout=120) == 0, last.log()
        wait_all_delivered(subscriber, out, timeout=30)
    finally:
        subscriber.close()
    recorded = {key(m) for m in produced(out)}
    delivered = {key(m) for m in arrived(subscriber)}
    lost = recorded - delivered
    print(
        f"kill storm: {len(recorded)} event messages recorded over 9 runs, {len(lost)} lost,"
        f" {len(delivered - recorded)} delivered before the kill let them be recorded"
    )
    assert len(recorded) >= 40 * 12  # the last run alone records every file's 6 events
    assert not lost


def test_messages_lost_on_the_wire_are_sent_again_in_order(
    tone_bundle: Path, tmp_path: Path, persistent_broker: Mosquitto
) -> None:
    """The broker freezes (SIGSTOP: the daemon's messages sit unacknowledged in the socket),
    then dies (SIGKILL: they are lost) and comes back: paho sends them again first."""
    broker, out = persistent_broker, tmp_path / "out"
    config = write_config(tmp_path, tone_bundle, broker, {"kind": "demo"})
    subscriber = Subscriber(broker, ["soundwatch/box/events"], client_id="test", persistent=True)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        subscriber.wait_for(lambda ms: len(ms) >= 2, 30, "a first event before the freeze")
        broker.freeze()
        before = len(produced(out))
        time.sleep(8)
        assert len(produced(out)) > before, "events were published into the frozen broker"
        broker.kill()
        broker.start()
        daemon.wait_log("connected to 127.0.0.1", timeout=10, count=2)
        wait_all_delivered(subscriber, out, timeout=30)
        assert daemon.stop() == 0, daemon.log()
        wait_all_delivered(subscriber, out, timeout=15)
    finally:
        if daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
        subscriber.close()
    # The messages stuck in the frozen broker's socket were still in the outbox at the reconnect.
    in_flight = re.findall(r"connected to .*; (\d+) event messages to send", daemon.log())
    assert len(in_flight) == 2 and int(in_flight[1]) > 0, daemon.log()
    figures = tally("broker frozen, then killed and restarted", produced(out), arrived(subscriber))
    assert figures.lost == 0


def test_a_full_outbox_drops_the_oldest_and_counts(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, to read the counters: 10 events into an outbox of 4 while not connected."""
    sink = sink_for(broker, tmp_path, outbox_max_messages=4, probabilities=True)
    with caplog.at_level(logging.WARNING, logger="edge.outputs.mqtt.sink"):
        for i in range(10):
            sink.event(Event(f"e{i}", "start", "a", float(i), None, None, None, 0.9, 0.9, 0.5, "t"))
            sink.second(SecondRow(float(i), None, ANALYSED, np.array([0.5], dtype=np.float32)))
    assert (sink.events_dropped_full, sink.seconds_dropped, len(sink.outbox)) == (6, 10, 4)
    assert "outbox full (4 messages): dropped the oldest; 1 dropped so far" in caplog.text

    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    sink.start()
    subscriber.wait_for(lambda ms: len(ms) >= 4, 10, "the 4 kept events")
    sink.close()
    subscriber.close()
    assert [m["id"] for m in arrived(subscriber)] == ["e6", "e7", "e8", "e9"]
    assert (sink.events_published, sink.events_dropped_full) == (4, 6)


def test_every_payload_builder_follows_its_schema_without_a_broker() -> None:
    when = datetime.fromisoformat("2026-06-01T12:00:00+00:00")
    event = Event("e1", "start", "a", 3.25, None, when, None, 0.91, 0.8, 0.5, "live", channel=1)
    scores = np.array([0.123456, np.nan], dtype=np.float32)
    levels = Levels(-31.234, {"1000": -40.0, "2000": -45.678}, 1.0)
    row = SecondRow(3.0, when, ANALYSED, scores, levels, channel=1)
    built: dict[str, list[bytes | None]] = {
        "status": [
            status_payload("online", "box", "tone", "1", "2026-06-01T12:00:00.000Z"),
            status_payload("offline", "box", "tone", "1", None),  # the last will
        ],
        "event": [event_payload(event, "tone", "1", "box", 0.0)],
        "probabilities": [probabilities_payload(row, ["a", "b"])],
        "levels": [levels_payload(row, "dBFS"), levels_payload(row, "dB re 20 µPa")],
    }
    for name, payloads in built.items():
        for payload in payloads:
            assert payload is not None
            SCHEMAS[name].validate(json.loads(payload))
    assert json.loads(built["probabilities"][0] or b"")["scores"] == {"a": 0.1235, "b": None}
    assert json.loads(built["levels"][0] or b"")["dbfs"] == -31.23
    assert json.loads(built["levels"][1] or b"")["db"] == -31.23
    assert levels_payload(SecondRow(3.0, when, ANALYSED, scores), "dBFS") is None


def test_many_labels_give_the_payload_json_dumps_gives() -> None:
    """Rows of TABLE_FROM scores and more (BirdNET: 6,522) are written by table look-up: the
    same bytes as json.dumps of the dict of rounded scores, at the roundings' halfway points,
    for labels JSON must escape, NaN rows, and the rows the table cannot take."""
    from edge.outputs.mqtt.messages import TABLE_FROM

    def reference(row: SecondRow, labels: list[str]) -> bytes:
        scores = {
            label: None if np.isnan(p) else round(p, 4)
            for label, p in zip(labels, row.scores.tolist(), strict=True)
        }
        payload: dict[str, object] = {
            "time": "2026-06-01T12:00:00.000Z" if row.time else None,
            "status": row.status,
            "scores": scores,
        }
        if row.channel is not None:
            payload["channel"] = row.channel
        return json.dumps(payload).encode()

    rng = np.random.default_rng(2)
    n = 6522
    labels = [f"Genus species_{i} Common name" for i in range(n)]
    labels[:3] = ['Turdus "quoted"', "Émouchet d'Éurope", "back\\slash"]
    halfway = ((rng.integers(0, 10000, n) + 0.5) / 10000).astype(np.float32)
    when = datetime.fromisoformat("2026-06-01T12:00:00+00:00")
    edges = np.resize(np.array([0, 1, 0.99995, 0.03125], np.float32), n)  # 0.03125: a half
    rows = [
        SecondRow(0.0, None, ANALYSED, rng.random(n).astype(np.float32)),
        SecondRow(1.0, when, ANALYSED, halfway, channel=2),
        SecondRow(2.0, when, ANALYSED, np.nextafter(halfway, np.float32(0))),
        SecondRow(3.0, when, ANALYSED, np.nextafter(halfway, np.float32(1))),
        SecondRow(4.0, when, ANALYSED, edges),
        SecondRow(5.0, when, "gap:overrun", np.full(n, np.nan, np.float32)),
        SecondRow(6.0, when, ANALYSED, np.where(rng.random(n) < 0.1, np.nan, halfway)),
        SecondRow(7.0, when, ANALYSED, np.resize(np.array([0.5, 1.5, -0.0], np.float32), n)),
    ]
    for row in rows:
        assert len(row.scores) >= TABLE_FROM
        assert probabilities_payload(row, labels) == reference(row, labels)


def sink_for(broker: Mosquitto, tmp_path: Path, **mqtt: Any) -> MqttSink:
    config = MqttConfig(host=broker.host, port=broker.port, **mqtt)
    sink = MqttSink(
        config,
        device="box",
        model="tone",
        model_version="1",
        labels=["a"],
        outbox_path=tmp_path / "outbox.sqlite3",
        resolve=Path,
    )
    sink.begin(StreamInfo("test", ["a"], None, 16000))
    return sink


def an_event(i: int) -> Event:
    return Event(f"e{i}", "start", "a", float(i), None, None, None, 0.9, 0.9, 0.5, "t")


def test_after_a_reconnect_newer_events_wait_for_the_ones_paho_sends_again(
    tmp_path: Path, persistent_broker: Mosquitto
) -> None:
    """paho resends the messages it had in flight only after its on_connect callback returns,
    while the connection is already usable: the publisher must hold newer outbox rows back
    until those are acknowledged, or they overtake them. A pause at the end of on_connect (a
    busy network thread) opens that window every time."""
    broker = persistent_broker
    subscriber = Subscriber(broker, ["soundwatch/box/events"], client_id="test", persistent=True)
    sink = sink_for(broker, tmp_path, reconnect_min_seconds=1, reconnect_max_seconds=1)
    on_connect = sink.client.on_connect
    assert on_connect is not None

    def slow_on_connect(*args: Any) -> None:
        on_connect(*args)
        time.sleep(0.5)  # the publisher, woken by the connect, runs meanwhile

    sink.client.on_connect = slow_on_connect
    sink.start()
    try:
        sink.event(an_event(0))
        subscriber.wait_for(lambda ms: len(ms) >= 1, 10, "e0 before the freeze")
        broker.freeze()  # e1..e3 go into the socket and are never acknowledged
        for i in (1, 2, 3):
            sink.event(an_event(i))
        deadline = time.monotonic() + 5
        while sink.publisher.in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.publisher.in_flight == 3
        broker.kill()
        while sink.connected and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert not sink.connected
        for i in (4, 5):  # newer, in the outbox only: nothing is published while offline
            sink.event(an_event(i))
        broker.start()
        subscriber.wait_for(
            lambda ms: {m.json()["id"] for m in ms} >= {f"e{i}" for i in range(6)},
            20,
            "e0..e5 after the broker came back",
        )
    finally:
        sink.close()
        subscriber.close()
    ids = [m["id"] for m in arrived(subscriber)]
    first_seen = list(dict.fromkeys(ids))  # a resent message may arrive twice; order counts
    assert first_seen == ["e0", "e1", "e2", "e3", "e4", "e5"], ids


# -- TLS, passwords, check --connect ---------------------------------------------------------------


def test_tls_with_client_certificate_and_password_file(tone_bundle: Path, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    broker = Mosquitto(
        tmp_path / "broker", tls=certs, require_certificate=True, users={"sw": "s3cret"}
    )
    broker.start()
    try:
        (tmp_path / "password").write_text("s3cret\n")  # as systemd-creds or an editor leaves it
        wav = write_scene(tmp_path / "rec_20261122T100000.wav")
        tls = {"tls": True, "ca_file": str(certs.ca), "cert_file": str(certs.client_cert)}
        config = write_config(
            tmp_path,
            tone_bundle,
            broker,
            {"kind": "files", "paths": [str(wav)], "speed": 0},
            key_file=str(certs.client_key),
            username="sw",
            password_file=str(tmp_path / "password"),
            **tls,
        )
        check = subprocess.run(
            [*SOUNDWATCH, "check", "-c", str(config), "--connect"], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        assert f"mqtt: connected to 127.0.0.1:{broker.port} (MQTT 3.1.1, TLS)" in check.stdout
        subscriber = Subscriber(broker, ["soundwatch/box/events"], username="sw", password="s3cret")
        result = run_daemon(config)
        assert result.returncode == 0, result.stderr
        wait_all_delivered(subscriber, tmp_path / "out", timeout=10)
        subscriber.close()
        figures = tally(
            "TLS, client certificate, password", produced(tmp_path / "out"), arrived(subscriber)
        )
        assert figures.produced == 12 and figures.lost == 0

        # Without the client certificate, or without TLS: the broker hangs up; we say why.
        demo = {"kind": "demo"}
        no_cert = check_connect(
            write_config(tmp_path, tone_bundle, broker, demo, tls=True, ca_file=str(certs.ca))
        )
        assert no_cert.returncode == 2
        assert "closed the connection before answering (does the broker require a client" in (
            no_cert.stderr
        )
        plain = check_connect(write_config(tmp_path, tone_bundle, broker, demo))
        assert plain.returncode == 2
        assert "(does the port expect TLS? set mqtt.tls: true)" in plain.stderr
        assert "Traceback" not in no_cert.stderr + plain.stderr
    finally:
        broker.stop()


def test_a_wrong_password_is_logged_retried_and_loses_nothing(
    tone_bundle: Path, tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path / "broker", users={"sw": "right"})
    broker.start()
    try:
        wav = write_scene(tmp_path / "rec_20261122T100000.wav")
        source = {"kind": "files", "paths": [str(wav)], "speed": 0}
        config = write_config(
            tmp_path,
            tone_bundle,
            broker,
            source,
            username="sw",
            password_env="SW_PASSWORD",
            reconnect_max_seconds=1,
        )
        check = subprocess.run(
            [*SOUNDWATCH, "check", "-c", str(config), "--connect"],
            capture_output=True,
            text=True,
            env={**os.environ, "SW_PASSWORD": "wrong"},
        )
        assert check.returncode == 2
        assert "refused the connection: not authorized (wrong mqtt.username or password?)" in (
            check.stderr
        )
        wrong = run_daemon(config, env={"SW_PASSWORD": "wrong"})
        assert wrong.returncode == 0, wrong.stderr  # the run itself went fine; events wait
        assert f"127.0.0.1:{broker.port} refused the connection: not authorized" in (wrong.stderr)
        assert "retrying in 1 s" in wrong.stderr and "Traceback" not in wrong.stderr
        assert "12 left in the outbox for the next start" in wrong.stderr

        subscriber = Subscriber(broker, ["soundwatch/box/events"], username="sw", password="right")
        right = run_daemon(config, env={"SW_PASSWORD": "right"})  # the same file, scored again
        assert right.returncode == 0, right.stderr
        wait_all_delivered(subscriber, tmp_path / "out", timeout=10)
        subscriber.close()
        # The same file scored twice gives the same 12 messages, ids included (they are derived
        # from the model, source, label and start): each once in the daemon's own record.
        made = produced(tmp_path / "out")
        assert len(made) == 24 and made[:12] == made[12:]
        figures = tally("wrong password, then fixed", made[:12], arrived(subscriber))
        assert figures.produced == 12 and figures.lost == 0
    finally:
        broker.stop()


def check_connect(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOUNDWATCH, "check", "-c", str(config), "--connect"], capture_output=True, text=True
    )


def test_tls_failures_and_unreachable_brokers_are_named(tone_bundle: Path, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs", server_names="DNS:elsewhere.example")
    broker = Mosquitto(tmp_path / "broker", tls=certs)
    broker.start()
    try:

        def config(**mqtt: Any) -> Path:
            return write_config(tmp_path, tone_bundle, broker, {"kind": "demo"}, tls=True, **mqtt)

        untrusted = check_connect(config(ca_file=str(certs.other_ca)))
        assert untrusted.returncode == 2 and "Traceback" not in untrusted.stderr
        refused = f"cannot connect to 127.0.0.1:{broker.port}: TLS: the broker's certificate was"
        assert f"{refused} refused (self-signed certificate in certificate chain)" in (
            untrusted.stderr
        )
        wrong_name = check_connect(config(ca_file=str(certs.ca)))
        assert wrong_name.returncode == 2
        assert f"{refused} refused (IP address mismatch, certificate is not valid for" in (
            wrong_name.stderr
        )
        unchecked = check_connect(config(ca_file=str(certs.ca), tls_check_hostname=False))
        assert unchecked.returncode == 0, unchecked.stderr
        missing = check_connect(config(ca_file=str(tmp_path / "nope.crt")))
        assert missing.returncode == 2 and "mqtt.ca_file:" in missing.stderr
        assert "nope.crt: no such file" in missing.stderr
    finally:
        broker.stop()
    gone = check_connect(config())  # the broker is gone: nothing listens on its port
    assert gone.returncode == 2
    assert f"cannot connect to 127.0.0.1:{broker.port}: connection refused" in gone.stderr


def test_config_problems_name_the_mqtt_key(tmp_path: Path) -> None:
    text = "mqtt:\n  host: b\n  protocol: 4\n  password_env: PW\n  password_file: /pw\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        from edge.config import load_config

        load_config(path)
    message = str(error.value)
    assert f"{path}:3: mqtt.protocol: must be 3.1.1 or 5, got '4'" in message
    assert f"{path}:5: mqtt.password_file: give password_env or password_file, not both" in message
    assert "mqtt.username: a password needs a username" in message
    five = build(Config, {"mqtt": {"host": "b", "protocol": 5}})  # YAML's 5 is a number
    assert five.mqtt.protocol == "5" and five.mqtt.port_or_default == 1883
    assert build(Config, {"mqtt": {"host": "b", "tls": True}}).mqtt.port_or_default == 8883
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file: only used with TLS"):
        build(Config, {"mqtt": {"host": "b", "ca_file": "ca.crt"}})


def test_a_password_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As ssh does for keys (issue 13, item 10); a warning, not a refusal: Docker mounts its
    secrets 0444."""
    from edge.outputs.mqtt.broker import read_password
    from edge.outputs.mqtt.settings import MqttConfig

    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = MqttConfig(host="b", username="sw", password_file=str(secret))
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_password(config, Path) == "s3cret"
    assert caplog.messages == [
        f"mqtt.password_file: {secret} is readable by every user of this machine (mode 0o644);"
        " chmod 600 it (or 640, with the group soundwatch runs as)"
    ]
    caplog.clear()
    for mode in (0o600, 0o640):
        secret.chmod(mode)
        assert read_password(config, Path) == "s3cret"
    assert caplog.messages == []


def test_a_missing_password_variable_stops_the_daemon_with_one_line(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto
) -> None:
    config = write_config(
        tmp_path,
        tone_bundle,
        broker,
        {"kind": "demo"},
        username="sw",
        password_env="SW_UNSET_PASSWORD",
    )
    env = {k: v for k, v in os.environ.items() if k != "SW_UNSET_PASSWORD"}
    result = subprocess.run(
        [*SOUNDWATCH, "run", "-c", str(config)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "mqtt.password_env: environment variable SW_UNSET_PASSWORD is not set"
    )
