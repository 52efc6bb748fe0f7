"""MQTT: events that are never lost, status with a last will, probabilities, HA discovery.

Topics under `<topic_prefix>/<device id>/` (ARCHITECTURE.md, contract 2; schemas/*.json):
`status` (QoS 1, retained; the last will sets `offline`), `events` (QoS 1, at least once) and,
when enabled, `probabilities` and `levels` (QoS 0, best effort).

Three threads, and the processing thread never waits on the network:
- the processing thread calls `event()`, which stores the message in the SQLite outbox (fsync'd)
  and wakes the publisher, and `second()`, which hands a payload over through a short queue;
- "mqtt-publisher" sends outbox rows in order while connected, at most `WINDOW` unacknowledged,
  and deletes each row when its PUBACK arrives (`on_publish` gives the message id);
- paho's network thread (`loop_start`) connects, reconnects with capped exponential backoff,
  moves bytes and runs the callbacks. Messages handed to paho before a connection drops stay
  in paho's memory and are sent again on reconnect; after a restart the outbox sends them again.
  A message may so arrive twice; `(id, type)` names it, so subscribers can drop the second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.clock import utc_now
from edge.errors import SoundwatchError
from edge.outputs.mqtt.broker import (
    Resolve,
    closed_words,
    connect_error_words,
    disconnect_words,
    make_client,
    refusal_words,
    topic_root,
)
from edge.outputs.mqtt.homeassistant import discovery_messages
from edge.outputs.mqtt.outbox import Outbox
from edge.outputs.mqtt.settings import MqttConfig
from edge.records import Event, SecondRow, Sink, StreamInfo, iso

logger = logging.getLogger(__name__)

WINDOW = 20  # event messages handed to paho and not yet acknowledged (paho's inflight limit)
SECONDS_BACKLOG = 10  # per-second payloads waiting for the publisher; more are dropped
IDLE_SECONDS = 1.0  # the publisher's longest sleep when nothing wakes it
STUCK_SECONDS = 60.0  # after a reconnect, older messages not acknowledged by then are resent
OFFLINE_SECONDS = 2.0  # at shutdown, how long to wait for the broker to take `offline`


class MqttSink(Sink):
    """Publishes the daemon's events (through the outbox), status and probabilities.

    Counters for the metrics endpoint (plain ints, each written by one thread):
    `events_published` (acknowledged by the broker), `events_rejected` (refused by an MQTT 5
    broker in its PUBACK), `events_dropped_full` (dropped from a full outbox),
    `seconds_published`, `seconds_dropped` (per-second probabilities and levels, QoS 0: dropped
    while not connected, or when falling behind) and
    `connected`.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        device: str,
        model: str,
        model_version: str,
        labels: list[str],
        outbox_path: Path,
        resolve: Resolve,
        channels: list[int | None] | None = None,
        sensor_labels: list[str] | None = None,
    ) -> None:
        """`channels`: the input channels with a detector each (None: one detector);
        `sensor_labels`: the labels that make events and so get a Home Assistant sensor (None:
        all)."""
        assert config.host is not None
        self.config = config
        self.where = f"{config.host}:{config.port_or_default}"
        self.device, self.model, self.model_version = device, model, model_version
        self.root = topic_root(config, device)
        self.labels = labels
        self.sensor_labels = labels if sensor_labels is None else sensor_labels
        self.channels: list[int | None] = channels or [None]
        self.client = make_client(config, config.client_id or f"soundwatch-{device}", resolve)
        self.client.will_set(
            f"{self.root}/status", self._status("offline", None), qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.outbox = Outbox(outbox_path, config.outbox_max_messages)

        self.connected = False
        self.events_published = 0
        self.events_rejected = 0
        self.events_dropped_full = 0
        self.seconds_published = 0
        self._seconds_dropped_early = 0  # processing thread: not connected or backlog full
        self._seconds_dropped_late = 0  # publisher thread: connection lost meanwhile
        self._info: StreamInfo | None = None

        self._stop = threading.Event()
        self._wake = threading.Event()  # something to do: a new event, an ack, a connect
        self._settled = threading.Event()  # the publisher finished a round (close() waits on it)
        self._acks: deque[tuple[int, bool]] = deque()  # (mid, refused), from the network thread
        self._seconds: deque[tuple[str, bytes]] = deque()  # (topic, payload), QoS 0
        # paho message id -> (outbox seq, connection number), written by the publisher only
        self._inflight: dict[int, tuple[int, int]] = {}
        self._cursor = 0  # highest outbox seq handed to paho in this process
        self._connection = 0  # connections made so far
        self._connected_at = 0.0  # time.monotonic() of the last connect
        self._failures = 0  # connect attempts failed since the last success
        self._refused = False  # the broker's CONNACK said no (the disconnect that follows is known)
        self._last_complaint = ""
        self._last_drop_log = -math.inf
        self._thread: threading.Thread | None = None
        if len(self.outbox):
            logger.info(
                "%d unsent event messages in %s, sent once connected",
                len(self.outbox),
                outbox_path,
            )

    @property
    def seconds_dropped(self) -> int:
        return self._seconds_dropped_early + self._seconds_dropped_late

    def _status(self, state: str, since: str | None) -> bytes:
        payload = {
            "state": state,
            "device": self.device,
            "model": self.model,
            "model_version": self.model_version,
            "since": since,
        }
        return json.dumps(payload).encode()

    # -- the pipeline's side (processing thread) ------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background) and the publisher; returns at once."""
        self.client.connect_async(
            self.config.host or "", self.config.port_or_default, self.config.keepalive_seconds
        )
        self.client.loop_start()
        self._thread = threading.Thread(
            target=self._publish_loop, name="mqtt-publisher", daemon=True
        )
        self._thread.start()

    def begin(self, info: StreamInfo) -> None:
        self.labels = info.labels
        self.sensor_labels = info.labels if info.event_labels is None else list(info.event_labels)
        self._info = info

    def event(self, event: Event) -> None:
        offset = 0.0 if self._info is None else self._info.offset_seconds
        message = event.to_json(self.model, self.model_version, self.device, offset)
        payload = json.dumps(message).encode()
        dropped = self.outbox.add(f"{self.root}/events", payload)
        if dropped:
            self.events_dropped_full += dropped
            now = time.monotonic()
            if now - self._last_drop_log > 60:  # a long outage would otherwise log every event
                self._last_drop_log = now
                logger.warning(
                    "outbox full (%d messages): dropped the oldest; %d dropped so far",
                    self.outbox.max_messages,
                    self.events_dropped_full,
                )
        self._wake.set()

    def second(self, row: SecondRow) -> None:
        time_ = iso(row.time) if row.time else None
        channel = row.channel
        if self.config.probabilities:
            scores = {
                label: None if math.isnan(p) else round(p, 4)
                for label, p in zip(self.labels, row.scores.tolist(), strict=True)
            }
            payload: dict[str, object] = {"time": time_, "status": row.status, "scores": scores}
            if channel is not None:
                payload["channel"] = channel
            self._queue("probabilities", payload)
        levels = row.levels
        if self.config.levels and levels is not None and self._info is not None:
            unit = self._info.level_unit or "dBFS"
            message: dict[str, object] = {
                "time": time_,
                "dbfs" if unit == "dBFS" else "db": round(levels.dbfs_or_db, 2),
                "unit": unit,
                "bands": {band: round(db, 2) for band, db in levels.bands.items()},
                "audio_seconds": round(levels.audio_seconds, 4),
            }
            if channel is not None:
                message["channel"] = channel
            self._queue("levels", message)

    def _queue(self, topic: str, payload: dict[str, object]) -> None:
        """A per-second QoS 0 message for the publisher: dropped (and counted) while offline
        or when the publisher falls behind."""
        if not self.connected or len(self._seconds) >= SECONDS_BACKLOG:
            self._seconds_dropped_early += 1  # best effort: never queued while offline
            return
        self._seconds.append((f"{self.root}/{topic}", json.dumps(payload).encode()))
        self._wake.set()

    def close(self) -> None:
        """Flush the outbox (up to flush_seconds), publish `offline`, disconnect."""
        if self._thread is None:
            self.outbox.close()
            return
        deadline = time.monotonic() + self.config.flush_seconds
        while len(self.outbox) and time.monotonic() < deadline:
            self._settled.clear()
            self._wake.set()
            self._settled.wait(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():
            logger.error("the publisher thread did not stop within 5 s")
        else:
            self._settle_acks()  # acks that came in after the publisher's last round
        if self.connected:
            since = iso(utc_now())
            info = self.client.publish(
                f"{self.root}/status", self._status("offline", since), qos=1, retain=True
            )
            # If the connection goes meanwhile, the last will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(OFFLINE_SECONDS)
        self.client.disconnect()
        self.client.loop_stop()
        left = len(self.outbox)
        self.outbox.close()
        logger.info(
            "%d event messages published, %d left in the outbox for the next start,"
            " %d dropped (outbox full)",
            self.events_published,
            left,
            self.events_dropped_full,
        )
        self._thread = None

    # -- the publisher thread -------------------------------------------------------------------

    def _publish_loop(self) -> None:
        # Woken by `_wake` (new event, ack, connect, stop), not a fixed tick, so an event goes
        # out at once; the timeout only bounds how long a missed wake-up could delay it.
        while not self._stop.is_set():
            self._wake.wait(IDLE_SECONDS)
            self._wake.clear()
            try:
                self._round()
            except SoundwatchError as exc:  # the outbox file: keep trying, never kill the thread
                logger.error("%s", exc)
                self._stop.wait(IDLE_SECONDS)
            self._settled.set()

    def _round(self) -> None:
        self._settle_acks()
        if not self.connected:
            self._seconds_dropped_late += len(self._seconds)
            self._seconds.clear()
            return
        if self._older_inflight():
            return
        room = WINDOW - len(self._inflight)
        connection = self._connection
        for message in self.outbox.after(self._cursor, room) if room > 0 else ():
            info = self.client.publish(message.topic, message.payload, qos=1)
            # NO_CONN: paho keeps the message and sends it once reconnected, so it is in flight.
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                break
            self._inflight[info.mid] = (message.seq, connection)
            self._cursor = message.seq
        while self._seconds:
            info = self.client.publish(*self._seconds.popleft(), qos=0)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.seconds_published += 1
            else:
                self._seconds_dropped_late += 1

    def _older_inflight(self) -> bool:
        """Are messages from before the last reconnect still unacknowledged?

        paho sends those again right after reconnecting; anything newer must wait for their
        acks, or it could overtake them. Should they never be acknowledged (a broker that lost
        them), after STUCK_SECONDS the outbox is sent again from its oldest message instead.
        """
        connection = self._connection
        if all(c == connection for _, c in self._inflight.values()):
            return False
        if time.monotonic() - self._connected_at < STUCK_SECONDS:
            return True
        logger.warning(
            "%d messages unacknowledged since the reconnect: sending again", len(self._inflight)
        )
        self._inflight.clear()
        self._cursor = 0
        return False

    def _settle_acks(self) -> None:
        done = []
        while self._acks:
            mid, refused = self._acks.popleft()
            sent = self._inflight.pop(mid, None)
            if sent is None:
                continue  # status, discovery or probabilities: not from the outbox
            done.append(sent[0])
            if refused:
                self.events_rejected += 1
            else:
                self.events_published += 1
        self.outbox.delete(done)

    # -- paho's network thread ------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        if reason.is_failure:
            self._complain(f"{self.where} refused the connection: {refusal_words(reason)}")
            self._refused = True
            return
        self._connected_at = time.monotonic()
        self._connection += 1
        self.connected = True
        self._failures = 0
        self._last_complaint = ""
        tls = ", TLS" if self.config.tls else ""
        logger.info(
            "connected to %s (MQTT %s%s) as %s; %d event messages to send",
            self.where,
            self.config.protocol,
            tls,
            self.root,
            len(self.outbox),
        )
        client.publish(
            f"{self.root}/status", self._status("online", iso(utc_now())), qos=1, retain=True
        )
        if self.config.homeassistant:
            for topic, config in discovery_messages(
                self.config,
                self.root,
                self.device,
                self.model,
                self.model_version,
                self.sensor_labels,
                self.channels,
            ):
                client.publish(topic, json.dumps(config), qos=1, retain=True)
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` block, so the error is still at hand.
        self._complain(f"cannot connect to {self.where}: {connect_error_words(sys.exc_info()[1])}")

    def _complain(self, problem: str) -> None:
        self._failures += 1
        delay = min(
            self.config.reconnect_min_seconds * 2 ** (self._failures - 1),
            self.config.reconnect_max_seconds,
        )
        # Once per distinct problem, so an outage of hours is a line, not thousands.
        level = logging.WARNING if problem != self._last_complaint else logging.DEBUG
        self._last_complaint = problem
        logger.log(
            level,
            "%s; retrying in %d s (then at most every %d s)",
            problem,
            delay,
            self.config.reconnect_max_seconds,
        )

    def _on_disconnect(
        self, client: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any
    ) -> None:
        was, refused = self.connected, self._refused
        self.connected = self._refused = False
        if was and not self._stop.is_set():
            logger.warning(
                "lost the connection to %s (%s); unsent events wait in the outbox",
                self.where,
                disconnect_words(reason),
            )
        elif not was and not refused:  # no CONNACK at all: not an MQTT answer we understood
            self._complain(f"{self.where} {closed_words(self.config)}")
        self._wake.set()

    def _on_publish(
        self, client: mqtt.Client, u: Any, mid: int, reason: ReasonCode, p: Any
    ) -> None:
        if reason.is_failure:
            logger.error("the broker refused message %d: %s", mid, str(reason).lower())
        self._acks.append((mid, reason.is_failure))
        self._wake.set()
