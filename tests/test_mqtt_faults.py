"""MQTT when parts fail, against a real mosquitto: a publisher whose SQLite read fails, a broker
that refuses a message, totals that outlive a restart, and a daemon that starts on a corrupt
outbox. Without its fix, each loses events, or the count of them, without a word."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.ops.counters import MqttMetrics, ThreadMetrics
from edge.ops.metrics import create_metrics
from edge.outputs.mqtt.outbox import Outbox
from edge.records import ANALYSED, Event, SecondRow
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.scenes import write_scene
from tests.test_mqtt import arrived, produced, run_daemon, sink_for, write_config


def an_event(name: str, label: str = "a") -> Event:
    return Event(name, "start", label, 1.0, None, None, None, 0.9, 0.9, 0.5, "t")


def wait(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.02)


def test_a_publisher_whose_read_fails_is_restarted_and_publishing_resumes(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox table disappears under the running publisher (renamed by another
    connection, as a broken migration or a tool on the device might): its read fails with an
    SQLite error. The thread must not die: it is restarted, counted, and once the table is
    back the next event goes out."""
    sink = sink_for(broker, tmp_path)
    metrics = create_metrics()
    threads = ThreadMetrics(metrics, sink.threads)
    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    other = sqlite3.connect(tmp_path / "outbox.sqlite3", isolation_level=None)
    publisher = sink.publisher.thread
    try:
        with caplog.at_level(logging.WARNING):
            sink.start()
            sink.event(an_event("e0"))
            subscriber.wait_for(lambda ms: len(ms) >= 1, 10, "e0")
            other.execute("ALTER TABLE outbox RENAME TO outbox_away")
            wait(lambda: publisher.down != "", "the failed read, and a restart coming")
            threads.update()
            assert publisher.down.startswith("OutboxError: ")
            assert "no such table: outbox" in publisher.down
            up = metrics.registry.get_sample_value
            assert up("soundwatch_thread_up", {"thread": "mqtt-publisher"}) == 0
            other.execute("ALTER TABLE outbox_away RENAME TO outbox")
            sink.event(an_event("e1"))
            subscriber.wait_for(lambda ms: len(ms) >= 2, 10, "e1 after the restart")
            threads.update()
    finally:
        other.close()
        sink.close()
        subscriber.close()
    assert [m["id"] for m in arrived(subscriber)] == ["e0", "e1"]
    restarts = metrics.registry.get_sample_value(
        "soundwatch_thread_restarts_total", {"thread": "mqtt-publisher"}
    )
    assert restarts == publisher.restarts >= 1
    assert up("soundwatch_thread_up", {"thread": "mqtt-publisher"}) == 1
    tracebacks = [r for r in caplog.records if r.name == "edge.threads" and r.exc_info]
    assert len(tracebacks) == 1  # once, however often it failed while the table was away
    assert "thread mqtt-publisher failed: OutboxError" in tracebacks[0].message
    assert (sink.events_published, len(sink.outbox)) == (2, 0)


def test_refusals_and_drops_are_counted_and_the_totals_outlive_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MQTT 5 broker whose ACL lets nobody write events refuses each in its PUBACK (reason
    135, not authorized): counted as rejected, deleted, not sent again. An outbox of 2 drops
    the oldest of 3 events made offline. A second sink on the same outbox (the daemon
    restarted) starts its counters, and so the exported ones, from those totals."""
    acl = tmp_path / "acl"
    acl.write_text("topic read soundwatch/#\ntopic write soundwatch/box/status\n")
    broker = Mosquitto(tmp_path / "broker", options=[f"acl_file {acl}"])
    broker.start()
    settings = {"protocol": "5", "outbox_max_messages": 2, "probabilities": True}
    try:
        first = sink_for(broker, tmp_path, **settings)
        with caplog.at_level(logging.ERROR, logger="edge.outputs.mqtt.sink"):
            for name in ("e0", "e1", "e2"):
                first.event(an_event(name))  # offline: e0 is dropped for room
            first.second(SecondRow(0.0, None, ANALYSED, np.array([0.5], dtype=np.float32)))
            first.start()
            wait(lambda: first.events_rejected == 2, "two refusals")
            first.close()
        assert "the broker refused message" in caplog.text and "not authorized" in caplog.text
        before = (first.events_published, first.events_rejected, first.events_dropped_full)
        assert before == (0, 2, 1) and first.seconds_dropped == 1
        assert len(first.outbox) == 0  # refused is final: not sent again

        again = sink_for(broker, tmp_path, **settings)
        metrics = create_metrics()
        MqttMetrics(metrics, again)  # at construction, before any scrape: the totals
        counted = metrics.registry.get_sample_value
        events = {
            r: counted("soundwatch_mqtt_events_total", {"result": r})
            for r in ("published", "rejected", "dropped")
        }
        assert events == {"published": 0, "rejected": 2, "dropped": 1}
        assert counted("soundwatch_mqtt_seconds_total", {"result": "dropped"}) == 1
        again.start()
        again.event(an_event("e3"))
        wait(lambda: again.events_rejected == 3, "e3 refused")
        again.close()
    finally:
        broker.stop()
    totals = Outbox(tmp_path / "outbox.sqlite3", 2).totals
    assert (totals["events_published"], totals["events_rejected"]) == (0, 3)
    assert (totals["events_dropped"], totals["seconds_dropped"]) == (1, 1)


def corrupt_outbox(path: Path, how: str) -> list[bytes]:
    """An outbox of 100 unsent event messages, then damaged as a power cut on an SD card
    might leave it; returns the messages it held."""
    box = Outbox(path, max_messages=1000)
    held = []
    for i in range(100):
        payload = json.dumps({"id": f"old{i:03d}", "type": "start", "pad": "x" * 300}).encode()
        box.add("soundwatch/box/events", payload)
        held.append(payload)
    box.close()
    size = path.stat().st_size
    if how == "truncated":
        with path.open("r+b") as f:
            f.truncate(size // 2)
    elif how == "garbage page":
        with path.open("r+b") as f:
            f.seek(size // 2 // 4096 * 4096)
            f.write(bytes(range(256)) * 16)
    else:
        path.write_text("not a database\n" * 500)
    return held


@pytest.mark.parametrize("how", ["truncated", "garbage page", "text"])
def test_the_daemon_starts_on_a_corrupt_outbox_and_sends_what_was_recovered(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto, how: str
) -> None:
    out = tmp_path / "out"
    held = corrupt_outbox(out / "mqtt-outbox.sqlite3", how)
    wav = write_scene(tmp_path / "rec_20261122T100000.wav")
    config = write_config(
        tmp_path, tone_bundle, broker, {"kind": "files", "paths": [str(wav)], "speed": 0}
    )
    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    result = run_daemon(config)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "the MQTT outbox was corrupt" in x]
    count = re.search(r"; (\d+) event messages recovered", line)
    assert count is not None, line
    recovered = int(count.group(1))
    assert ("mqtt-outbox.sqlite3.corrupt-" in line) and len(list(out.glob("*.corrupt-*"))) == 1
    # Seconds kept being analysed: the hour's CSV has each of the recording's 20 seconds.
    (csv,) = out.rglob("20261122T10.csv")
    assert sum(",analysed," in row for row in csv.read_text().splitlines()) == 20
    # Every recovered message and every new event reached the broker, the old ones first.
    made = [json.dumps(m, separators=(",", ":")) for m in produced(out)]
    want = len(made) + recovered
    subscriber.wait_for(lambda ms: len(ms) >= want, 10, f"{want} event messages")
    subscriber.close()
    got = [m.payload for m in subscriber.messages()]
    old = [p for p in got if b'"old' in p]
    assert old == [p for p in held if p in old] and len(old) == recovered
    assert {m["id"] for m in arrived(subscriber)} >= {m["id"] for m in produced(out)}
    if how == "text":
        assert recovered == 0
    else:
        assert 0 < recovered < 100 and old[0] == held[0]


def test_a_message_the_broker_drops_the_connection_on_is_given_up_not_sent_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto's `message_size_limit` answers an MQTT 5 client's oversized event with PUBACK
    reason 149, which paho cannot decode: it drops the connection, reconnects, and sends the
    message again, forever, and every newer event waits behind it. After a few such short
    connections the message is given up (counted as rejected) and the rest go out."""
    broker = Mosquitto(tmp_path / "broker", options=["message_size_limit 1000"])
    broker.start()
    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    sink = sink_for(broker, tmp_path, protocol="5", reconnect_max_seconds=1)
    try:
        with caplog.at_level(logging.ERROR):
            sink.start()
            sink.event(an_event("big", "x" * 2000))
            sink.event(an_event("e1"))
            subscriber.wait_for(lambda ms: len(ms) >= 1, 30, "e1 after the big one")
            wait(lambda: sink.events_published == 1, "e1 acknowledged")
    finally:
        sink.close()
        subscriber.close()
        broker.stop()
    # e1 went out behind it at each of those connections: at least once, so maybe more.
    assert {m["id"] for m in arrived(subscriber)} == {"e1"}
    assert (sink.events_rejected, sink.events_published, len(sink.outbox)) == (1, 1, 0)
    assert "unacknowledged at 3 connection losses in a row" in caplog.text


def test_an_error_in_a_paho_callback_does_not_end_mqtt(
    tmp_path: Path,
    broker: Mosquitto,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug cannot be made on demand, so one is put in: Home Assistant's announcement raises
    on paho's network thread at every connect. Unguarded, paho's thread ends there: no
    connection is ever usable, and none is made again after the broker restarts. Guarded, the
    callback is abandoned and counted, and events still go out, also after a reconnect."""
    sink = sink_for(broker, tmp_path, homeassistant=True, reconnect_max_seconds=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in discovery")

    monkeypatch.setattr(sink.announcements, "publish", broken)
    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    try:
        with caplog.at_level(logging.WARNING):
            sink.start()
            sink.event(an_event("e0"))
            subscriber.wait_for(lambda ms: len(ms) >= 1, 10, "e0")
            broker.stop()
            wait(lambda: not sink.connected, "the connection lost")
            broker.start()
            # A new subscriber, subscribed before e1 is sent: the old one's session went with
            # the broker (not persistent), and its own reconnect races the daemon's.
            after = Subscriber(broker, ["soundwatch/box/events"])
            sink.event(an_event("e1"))
            after.wait_for(lambda ms: len(ms) >= 1, 15, "e1 after the broker came back")
    finally:
        sink.close()
        subscriber.close()
    after.close()
    assert [m["id"] for m in arrived(subscriber)][:1] == ["e0"]
    assert [m["id"] for m in arrived(after)] == ["e1"]
    assert sink.network.restarts == 2  # one per connect
    tracebacks = [r for r in caplog.records if r.name == "edge.threads" and r.exc_info]
    assert len(tracebacks) == 1
    assert "thread mqtt-network: _on_connect failed: RuntimeError: a bug in discovery" in (
        tracebacks[0].message
    )


def test_an_outbox_that_cannot_store_is_counted_and_events_still_go_out(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox's disk full or its file gone read-only: SQLite refuses the INSERT (made so
    here with `PRAGMA query_only`, SQLite's own refusal to write). The event must not take the
    processing thread down: it is sent directly while connected, counted, and logged once;
    once the outbox stores again, events go through it as before (issue 13, item 2)."""
    sink = sink_for(broker, tmp_path)
    subscriber = Subscriber(broker, ["soundwatch/box/events"])
    try:
        sink.start()
        wait(lambda: sink.connected, "connected")
        with caplog.at_level(logging.INFO):
            sink.outbox._db.execute("PRAGMA query_only = 1")
            for k in range(3):
                sink.event(an_event(f"direct{k}"))  # raises nothing
            subscriber.wait_for(lambda ms: len(ms) >= 3, 10, "the events sent directly")
            sink.outbox._db.execute("PRAGMA query_only = 0")
            sink.event(an_event("stored"))
            subscriber.wait_for(lambda ms: len(ms) >= 4, 10, "the stored event")
    finally:
        sink.close()
        subscriber.close()
    assert [m["id"] for m in arrived(subscriber)] == ["direct0", "direct1", "direct2", "stored"]
    assert sink.events_unstored == 3 and sink.events_published == 1
    refusals = [
        r.getMessage() for r in caplog.records if "cannot store a message" in r.getMessage()
    ]
    assert len(refusals) == 1  # once per episode
    assert any(
        "storing again (3 event messages were not)" in r.getMessage() for r in caplog.records
    )
