"""MQTT: events that are never lost, status with a last will, probabilities, HA discovery.

Topics under `<topic_prefix>/<device id>/` (README "MQTT"; schemas/*.json):
`status` (QoS 1, retained; the last will sets `offline`), `events` (QoS 1, at least once) and,
when enabled, `probabilities` and `levels` (QoS 0, best effort).

Three threads, and the processing thread never waits on the network:
- the processing thread calls `event()`, which stores the message in the SQLite outbox (fsync'd)
  and wakes the publisher, and `second()`, which hands a payload over through a short queue;
- "mqtt-publisher" (edge/outputs/mqtt/publisher.py) sends outbox rows in order while connected
  and deletes each when the broker acknowledges it;
- paho's network thread (`loop_start`) connects, reconnects with capped exponential backoff,
  moves bytes and runs the callbacks below.
The payloads are built in edge/outputs/mqtt/messages.py, the client in broker.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.clock import utc_now
from edge.outputs.mqtt.broker import (
    Resolve,
    closed_words,
    connect_error_words,
    disconnect_words,
    make_client,
    refusal_words,
    topic_root,
)
from edge.outputs.mqtt.homeassistant import Announcements, SensorStates, discovery_messages
from edge.outputs.mqtt.messages import (
    event_payload,
    levels_payload,
    probabilities_payload,
    status_payload,
)
from edge.outputs.mqtt.outbox import Outbox, OutboxError
from edge.outputs.mqtt.publisher import Publisher
from edge.outputs.mqtt.settings import MqttConfig
from edge.records import Event, SecondRow, Sink, StreamInfo, iso
from edge.threads import Guarded, Supervised

logger = logging.getLogger(__name__)

OFFLINE_SECONDS = 2.0  # at shutdown, how long to wait for the broker to take `offline`


class MqttSink(Sink):
    """Publishes the daemon's events (through the outbox), status and probabilities.

    Counters for the metrics endpoint (edge/ops/counters.py, `MqttMetrics`), totals kept in
    the outbox so they continue after a restart: `events_published`, `events_rejected`,
    `seconds_published`, `seconds_dropped` (from the publisher), `events_dropped_full`
    (dropped from a full outbox), `outbox_corrupt` and `outbox_recovered` (corrupt outboxes
    set aside, messages recovered from them); and `connected`. `threads`: the supervised
    threads it started (edge/threads.py).
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
        self._info: StreamInfo | None = None  # the stream being scored: its labels and model
        self.root = topic_root(config, device)
        self.labels = labels
        self.sensor_labels = labels if sensor_labels is None else sensor_labels
        self.channels: list[int | None] = channels or [None]
        self.client = make_client(config, config.client_id or f"soundwatch-{device}", resolve)
        self.client.will_set(
            f"{self.root}/status", self._status("offline", None), qos=1, retain=True
        )
        # paho's thread ends at the first error in a callback: guarded, it goes on (counted).
        self.network = Guarded("mqtt-network")
        self.client.on_connect = self.network(self._on_connect)
        self.client.on_connect_fail = self.network(self._on_connect_fail)
        self.client.on_disconnect = self.network(self._on_disconnect)
        self.client.on_publish = self.network(self._on_publish)
        self.outbox = Outbox(outbox_path, config.outbox_max_messages)
        self.publisher = Publisher(self.client, self.outbox)
        # Next to the outbox: the state folder, which outlives the process.
        self.announcements = Announcements(outbox_path.parent / "mqtt-homeassistant.json")

        self.events_unstored = 0  # refused by the outbox (sent directly, or lost)
        self._outbox_failing = False
        self.sensor_states = SensorStates(self.root)  # Home Assistant: which sensors are ON
        self._failures = 0  # connect attempts failed since the last success
        self._refused = False  # the broker's CONNACK said no (the disconnect that follows is known)
        self._last_complaint = ""
        self._last_drop_log = -math.inf
        if len(self.outbox):
            logger.info(
                "%d unsent event messages in %s, sent once connected",
                len(self.outbox),
                outbox_path,
            )

    @property
    def connected(self) -> bool:
        return self.publisher.connected

    @property
    def events_published(self) -> int:
        return self.publisher.events_published

    @property
    def events_rejected(self) -> int:
        return self.publisher.events_rejected

    @property
    def seconds_published(self) -> int:
        return self.publisher.seconds_published

    @property
    def seconds_dropped(self) -> int:
        return self.publisher.seconds_dropped

    @property
    def events_dropped_full(self) -> int:
        return self.outbox.totals["events_dropped"]

    @property
    def outbox_corrupt(self) -> int:
        return self.outbox.totals["corrupt_outboxes"]

    @property
    def outbox_recovered(self) -> int:
        return self.outbox.totals["recovered_messages"]

    @property
    def threads(self) -> list[Supervised | Guarded]:
        return [self.publisher.thread, self.network]

    @property
    def _model(self) -> tuple[str, str]:
        """The model listening now: the current stream's (a reload may change it), else the
        one the daemon started with."""
        info = self._info
        if info is None or not info.model:
            return self.model, self.model_version
        return info.model, info.model_version

    def _status(self, state: str, since: str | None) -> bytes:
        return status_payload(state, self.device, *self._model, since)

    # -- the pipeline's side (processing thread) ------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background) and the publisher; returns at once."""
        self.client.connect_async(
            self.config.host or "", self.config.port_or_default, self.config.keepalive_seconds
        )
        self.client.loop_start()
        self.publisher.start()

    def begin(self, info: StreamInfo) -> None:
        self.labels = info.labels
        self._info = info
        if self.connected:  # a reload may bring other labels, or levels on or off
            self._announce(again=False)
            self._publish_sensor_states()

    def event(self, event: Event) -> None:
        offset = 0.0 if self._info is None else self._info.offset_seconds
        payload = event_payload(event, *self._model, self.device, offset)
        if self.config.homeassistant:
            on = event.type == "start"
            self.sensor_states.set(self.client, event.label, event.channel, on)
        topic = f"{self.root}/events"
        try:
            dropped = self.outbox.add(topic, payload)
        except OutboxError as exc:
            self._not_stored(topic, payload, exc)
            return
        if self._outbox_failing:
            self._outbox_failing = False
            logger.info("outbox: storing again (%d event messages were not)", self.events_unstored)
        if dropped:
            now = time.monotonic()
            if now - self._last_drop_log > 60:  # a long outage would otherwise log every event
                self._last_drop_log = now
                logger.warning(
                    "outbox full (%d messages): dropped the oldest; %d dropped so far",
                    self.outbox.max_messages,
                    self.events_dropped_full,
                )
        self.publisher.wake()

    def _not_stored(self, topic: str, payload: bytes, exc: OutboxError) -> None:
        """The outbox refused an event (disk full, a broken file): sent once now if connected,
        without the outbox's guarantee, else lost; counted either way, logged once."""
        self.events_unstored += 1
        if not self._outbox_failing:
            self._outbox_failing = True
            logger.error(
                "%s; event messages go out directly while connected (lost while not) until it"
                " can store again",
                exc,
            )
        if self.client.is_connected():
            self.client.publish(topic, payload, qos=1)

    def second(self, row: SecondRow) -> None:
        if self.config.probabilities:
            self.publisher.offer(
                f"{self.root}/probabilities", probabilities_payload(row, self.labels)
            )
        if self.config.levels and row.levels is not None and self._info is not None:
            payload = levels_payload(row, self._info.level_unit)
            if payload is not None:
                self.publisher.offer(f"{self.root}/levels", payload)

    def close(self) -> None:
        """Flush the outbox (up to flush_seconds), publish `offline`, disconnect."""
        if not self.publisher.running:
            self.outbox.close()
            return
        self.publisher.flush(self.config.flush_seconds)
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
            " %d dropped (outbox full) in all",
            self.events_published,
            left,
            self.events_dropped_full,
        )

    # -- paho's network thread ------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        if reason.is_failure:
            self._complain(f"{self.where} refused the connection: {refusal_words(reason)}")
            self._refused = True
            return
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
        try:
            self._announce(again=True)
            self._publish_sensor_states()
        finally:  # events go out even should Home Assistant's part fail
            self.publisher.connected_now()

    def _announce(self, *, again: bool) -> None:
        """Home Assistant discovery for the labels now running (and none when it is off, which
        removes what an earlier run announced).

        Runs on paho's thread at a connect and on the processing thread at a new stream; a
        stream that begins while a connect announces (and so skips it, not yet connected)
        changes `_info`, which is checked again after publishing."""
        for _ in range(3):
            info = self._info
            messages = []
            if self.config.homeassistant:
                messages = discovery_messages(
                    self.config,
                    self.root,
                    self.device,
                    *self._model,
                    self._sensor_labels_now(),
                    self.channels,
                    None if info is None else info.level_unit,
                )
            self.announcements.publish(self.client, messages, again=again)
            if self._info is info:
                return
            again = False

    def _sensor_labels_now(self) -> list[str]:
        """The labels that get a sensor: the current stream's, or those the daemon began with."""
        info = self._info
        return self.sensor_labels if info is None else _sensor_labels(info)

    def _publish_sensor_states(self) -> None:
        if self.config.homeassistant:
            self.sensor_states.publish_all(self.client, self._sensor_labels_now(), self.channels)

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
        self._refused = False
        self.publisher.disconnected()
        if was and not self.publisher.stopping.is_set():
            logger.warning(
                "lost the connection to %s (%s); unsent events wait in the outbox",
                self.where,
                disconnect_words(reason),
            )
        elif not was and not refused:  # no CONNACK at all: not an MQTT answer we understood
            self._complain(f"{self.where} {closed_words(self.config)}")

    def _on_publish(
        self, client: mqtt.Client, u: Any, mid: int, reason: ReasonCode, p: Any
    ) -> None:
        if reason.is_failure:
            logger.error("the broker refused message %d: %s", mid, str(reason).lower())
        self.publisher.acked(mid, reason.is_failure)


def _sensor_labels(info: StreamInfo) -> list[str]:
    """The labels that make events, and so get a sensor: not the bundle's background ones."""
    return list(info.labels if info.event_labels is None else info.event_labels)
