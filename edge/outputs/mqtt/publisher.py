"""The "mqtt-publisher" thread: outbox rows to the broker, in order, each deleted at its PUBACK.

It sends outbox rows while connected, at most `WINDOW` unacknowledged, and deletes each row when
its PUBACK arrives (paho's `on_publish` gives the message id); per-second payloads (QoS 0) go
out as they come, or are dropped and counted. Woken by an event, an ack, a (re)connect or the
stop, so the processing thread never waits on the network.

Messages handed to paho before a connection drops stay in paho's memory and are sent again on
reconnect; after a restart the outbox sends them again. A message may so arrive twice; `(id,
type)` names it, so subscribers can drop the second. What it must never do is arrive out of
order: see `_older_inflight`. Nor may one message hold up all that follow: a broker that
drops the connection on a message (one over its `max_packet_size`; mosquitto's answer to one
over `message_size_limit`, a PUBACK reason paho cannot decode) would otherwise get it again at
every reconnect, forever. See `_check_poison`.

The thread is supervised (edge/threads.py): an error on its way (an SQLite read that fails, a
bug) is logged, counted and the loop started again after a backoff, with its state (what is in
flight, how far it got) kept, so publishing resumes by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge.errors import SoundwatchError
from edge.outputs.mqtt.outbox import Outbox
from edge.threads import Supervised

logger = logging.getLogger(__name__)

WINDOW = 20  # event messages handed to paho and not yet acknowledged (paho's inflight limit)
SECONDS_BACKLOG = 10  # per-second payloads waiting for the publisher; more are dropped
IDLE_SECONDS = 1.0  # the publisher's longest sleep when nothing wakes it
STUCK_SECONDS = 60.0  # after a reconnect, older messages not acknowledged by then are resent
TOTALS_SECONDS = 60.0  # how often the per-second counts are stored with the outbox's totals
# A message still unacknowledged, the oldest, at this many connection losses in a row, each
# within POISON_SECONDS of connecting, is one the broker will not take: it is given up.
POISON_LOSSES = 3
POISON_SECONDS = 10.0


class Publisher:
    """The thread between the outbox and paho, and the connection state it needs.

    paho's network thread reports through `connected_now`, `disconnected` and `acked`; the
    processing thread hands per-second payloads over with `offer`. Counters, totals since the
    outbox was made (they continue after a restart): `events_published` (acknowledged),
    `events_rejected` (refused by an MQTT 5 broker in its PUBACK), both kept in the outbox with
    the delete; `seconds_published`, `seconds_dropped` (QoS 0 payloads dropped while not
    connected or when falling behind), plain ints each written by one thread and stored in the
    outbox every TOTALS_SECONDS and at the stop (a crash loses at most that much of them).
    """

    def __init__(self, client: mqtt.Client, outbox: Outbox) -> None:
        self.client, self.outbox = client, outbox
        self.connected = False
        self.seconds_published = outbox.totals["seconds_published"]
        # processing thread: not connected or backlog full (and the total of earlier runs)
        self._seconds_dropped_early = outbox.totals["seconds_dropped"]
        self._seconds_dropped_late = 0  # publisher thread: connection lost meanwhile
        self._totals_due = 0.0  # time.monotonic() when the per-second counts are stored next
        self.stopping = threading.Event()
        self._wake = threading.Event()  # something to do: a new event, an ack, a connect
        self._settled = threading.Event()  # a round finished (`flush` waits on it)
        self._acks: deque[tuple[int, bool]] = deque()  # (mid, refused), from the network thread
        self._seconds: deque[tuple[str, bytes]] = deque()  # (topic, payload), QoS 0
        # paho message id -> (outbox seq, connection number), written by the publisher only
        self._inflight: dict[int, tuple[int, int]] = {}
        self._cursor = 0  # highest outbox seq handed to paho in this process
        self._connection = 0  # connections made so far
        self._connected_at = 0.0  # time.monotonic() of the last connect
        self._lasted = 0.0  # how long the last connection lasted, s (network thread)
        self._seen_connection = 0  # the connection the publisher last looked at
        self._suspect = (0, 0)  # (seq, losses): the oldest unacknowledged at connection losses
        self.thread = Supervised("mqtt-publisher", self._loop, self.stopping)
        self._started = False

    @property
    def events_published(self) -> int:
        return self.outbox.totals["events_published"]

    @property
    def events_rejected(self) -> int:
        return self.outbox.totals["events_rejected"]

    @property
    def seconds_dropped(self) -> int:
        return self._seconds_dropped_early + self._seconds_dropped_late

    @property
    def in_flight(self) -> int:
        """Outbox messages handed to paho and not yet acknowledged."""
        return len(self._inflight)

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> None:
        self._started = True
        self.thread.start()

    def wake(self) -> None:
        """A new outbox row (processing thread)."""
        self._wake.set()

    def offer(self, topic: str, payload: bytes) -> None:
        """A per-second QoS 0 message (processing thread): dropped, and counted, while offline
        or when the publisher falls behind, never queued for later."""
        if not self.connected or len(self._seconds) >= SECONDS_BACKLOG:
            self._seconds_dropped_early += 1
            return
        self._seconds.append((topic, payload))
        self._wake.set()

    def flush(self, seconds: float) -> None:
        """Wait up to `seconds` for the outbox to empty, then stop the thread."""
        deadline = time.monotonic() + seconds
        while len(self.outbox) and time.monotonic() < deadline:
            self._settled.clear()
            self._wake.set()
            self._settled.wait(0.05)
        self.stopping.set()
        self._wake.set()
        if not self._started:
            return
        self._started = False
        if not self.thread.join(timeout=5.0):
            logger.error("the publisher thread did not stop within 5 s")
            return
        try:
            self._settle_acks()  # acks that came in after the publisher's last round
            self._store_totals()
        except SoundwatchError as exc:
            logger.error("%s", exc)

    # -- paho's network thread ------------------------------------------------------------------

    def connected_now(self) -> None:
        self._connected_at = time.monotonic()
        self._connection += 1
        self.connected = True
        self._wake.set()

    def disconnected(self) -> None:
        self._lasted = time.monotonic() - self._connected_at
        self.connected = False
        self._wake.set()

    def acked(self, mid: int, refused: bool) -> None:
        self._acks.append((mid, refused))
        self._wake.set()

    # -- the publisher thread -------------------------------------------------------------------

    def _loop(self) -> None:
        # Woken by `_wake`, not a fixed tick, so an event goes out at once; the timeout only
        # bounds how long a missed wake-up could delay it. Errors end the loop: the supervisor
        # (Supervised) logs, counts and starts it again.
        while not self.stopping.is_set():
            self._wake.wait(IDLE_SECONDS)
            self._wake.clear()
            self._round()
            now = time.monotonic()
            if now >= self._totals_due:
                self._totals_due = now + TOTALS_SECONDS
                self._store_totals()
            self._settled.set()

    def _store_totals(self) -> None:
        self.outbox.set_totals(
            {"seconds_published": self.seconds_published, "seconds_dropped": self.seconds_dropped}
        )

    def _round(self) -> None:
        self._settle_acks()
        if not self.connected:
            self._seconds_dropped_late += len(self._seconds)
            self._seconds.clear()
            return
        if self._connection != self._seen_connection:
            self._seen_connection = self._connection
            self._check_poison()
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

        paho sends those again right after reconnecting, but only after its `on_connect`
        callback has returned, and the connection is usable before: anything newer must wait
        for their acks, or it could overtake them. Should they never be acknowledged (a broker
        that lost them), after STUCK_SECONDS the outbox is sent again from its oldest message.
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

    def _check_poison(self) -> None:
        """After a reconnect: is the oldest unacknowledged message one the broker drops the
        connection on? The same one, at POISON_LOSSES short connections in a row, is given up:
        deleted, counted as rejected, logged, and taken out of paho's queue too (paho would
        send it again at every reconnect). A connection that lasted longer than POISON_SECONDS
        clears the suspicion: that was the network, not the message."""
        older = [(seq, mid) for mid, (seq, c) in self._inflight.items() if c < self._connection]
        if not older or self._lasted > POISON_SECONDS:
            self._suspect = (0, 0)
            return
        seq, mid = min(older)
        losses = self._suspect[1] + 1 if self._suspect[0] == seq else 1
        self._suspect = (seq, losses)
        if losses < POISON_LOSSES:
            return
        with self.client._out_message_mutex:  # no public way to withdraw a queued message
            message = self.client._out_messages.pop(mid, None)
        size = len(message.payload) if message is not None else 0
        self._inflight.pop(mid, None)
        self.outbox.delete([seq], {"events_rejected": 1})
        self._suspect = (0, 0)
        logger.error(
            "an event message (%d bytes) was unacknowledged at %d connection losses in a row:"
            " the broker drops the connection on it (over its max_packet_size or"
            " message_size_limit?); given up and counted as rejected",
            size,
            losses,
        )

    def _settle_acks(self) -> None:
        acks = []
        while self._acks:
            acks.append(self._acks.popleft())
        done = []
        counts = {"events_published": 0, "events_rejected": 0}
        for mid, refused in acks:
            sent = self._inflight.get(mid)
            if sent is None:
                continue  # status, discovery or probabilities: not from the outbox
            done.append(sent[0])
            counts["events_rejected" if refused else "events_published"] += 1
        try:
            self.outbox.delete(done, counts)
        except Exception:
            self._acks.extendleft(reversed(acks))  # settled again at the next round
            raise
        for mid, _ in acks:
            self._inflight.pop(mid, None)
