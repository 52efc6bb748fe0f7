"""A durable FIFO of messages waiting for the broker: SQLite, WAL, fsync'd on every commit.

Every event message is added here before it is published and deleted only when the broker has
acknowledged it, so a broker outage, a lost network or a killed daemon loses nothing: what is
still here when the daemon starts again is sent first, in order. Rows are numbered by an
AUTOINCREMENT key, so numbers only grow, even across deletes and restarts; the publisher uses
that to remember how far it has handed rows over.

Bounded: beyond `max_messages`, adding one drops the oldest, and the drop is counted, never
silent. The counts live here too (`totals`, the table of the same name), each updated in the
transaction that does what it counts, so they survive a crash and continue after a restart:
events published, rejected and dropped, per-second messages published and dropped (written
by the publisher about once a minute), corrupt outboxes set aside and messages recovered.

A corrupt file (a power cut on an SD card) does not stop the daemon: it is moved aside, what
SQLite can still read of it is copied into a fresh outbox (edge/outputs/mqtt/salvage.py), and
one log line says how many messages came back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.errors import SoundwatchError
from edge.outputs.mqtt.salvage import Salvage, is_corrupt, salvage, set_aside

logger = logging.getLogger(__name__)

TOTALS = (
    "events_published",  # acknowledged by the broker
    "events_rejected",  # refused by an MQTT 5 broker in its PUBACK
    "events_dropped",  # the oldest, dropped from a full outbox
    "seconds_published",  # per-second messages (QoS 0) handed to the network
    "seconds_dropped",  # per-second messages dropped: offline, or falling behind
    "corrupt_outboxes",  # corrupt outbox files set aside
    "recovered_messages",  # messages copied out of those into a fresh outbox
)


class OutboxError(SoundwatchError):
    """The outbox file cannot be opened or written; the message names the file."""


@dataclass(frozen=True)
class Message:
    seq: int  # position in the outbox; grows forever
    topic: str
    payload: bytes


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, count INTEGER NOT NULL)",
)
ADD_TO_TOTAL = (
    "INSERT INTO totals (name, count) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET count = count + excluded.count"
)
SET_TOTAL = (
    "INSERT INTO totals (name, count) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET count = excluded.count"
)


class Outbox:
    """Thread-safe: the processing thread adds, the publisher thread reads and deletes.

    One connection behind a lock; each call is one short transaction. `add()` returns once the
    row is on disk (synchronous=FULL: the WAL is fsync'd at every commit), a few milliseconds
    on an SD card, which is why only events (a few a minute) come here, not per-second rows.
    `totals` holds the persistent counts (TOTALS), as loaded at start and added to since.
    """

    def __init__(self, path: Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self.totals = dict.fromkeys(TOTALS, 0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._db = self._recover(str(exc))
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            for name, count in self._db.execute("SELECT name, count FROM totals"):
                self.totals[str(name)] = int(count)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{path}: cannot open the MQTT outbox ({exc})") from None

    def _open(self) -> sqlite3.Connection:
        """The outbox file, checked page by page (a corrupt one raises SQLITE_CORRUPT)."""
        # isolation_level=None: we write BEGIN/COMMIT ourselves, one transaction per call.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{self.path}: SQLite refused WAL mode (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            # Reads every page of the file once: a torn page shows now, at start, not later on
            # the publisher's read path. A full outbox (100,000 events, 46 MB): 45 ms cached on
            # a PC, a second or two read off an SD card.
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                error = sqlite3.DatabaseError("; ".join(map(str, problems)))
                error.sqlite_errorcode = 11  # type: ignore[attr-defined]  # SQLITE_CORRUPT
                raise error
            for statement in SCHEMA:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        return db

    def _recover(self, problem: str) -> sqlite3.Connection:
        """Move the corrupt file aside, start a fresh one, copy into it what can be read."""
        aside = set_aside(self.path)
        found: Salvage = salvage(aside)
        db = self._open()
        messages = found.messages[-self.max_messages :]
        totals = {name: found.totals.get(name, 0) for name in TOTALS}
        totals["events_dropped"] += len(found.messages) - len(messages)
        totals["corrupt_outboxes"] += 1
        totals["recovered_messages"] += len(messages)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", messages)
        db.executemany(SET_TOTAL, totals.items())
        db.execute("COMMIT")
        logger.error(
            "%s: the MQTT outbox was corrupt (%s): moved aside to %s; %d event messages"
            " recovered from it into a fresh outbox",
            self.path,
            problem,
            aside.name,
            len(messages),
        )
        return db

    def __len__(self) -> int:
        """Messages waiting (added, not yet deleted)."""
        return self._count

    def add(self, topic: str, payload: bytes) -> int:
        """Store one message durably; returns how many of the oldest were dropped for room."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                dropped = max(0, self._count + 1 - self.max_messages)
                if dropped:
                    self._db.execute(
                        "DELETE FROM outbox WHERE seq IN"
                        " (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                        (dropped,),
                    )
                    self._db.execute(ADD_TO_TOTAL, ("events_dropped", dropped))
                self._db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot store a message ({exc})") from None
            self._count += 1 - dropped
            self.totals["events_dropped"] += dropped
            return dropped

    def after(self, seq: int, limit: int) -> list[Message]:
        """Up to `limit` messages numbered above `seq`, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot read messages ({exc})") from None
        return [Message(int(s), str(t), bytes(p)) for s, t, p in rows]

    def delete(self, seqs: Iterable[int], counts: Mapping[str, int] | None = None) -> int:
        """Delete these messages (acknowledged) and add `counts` to the totals, in one
        transaction; returns how many messages were still here."""
        keys = [(s,) for s in seqs]
        counts = {name: n for name, n in (counts or {}).items() if n}
        if not keys and not counts:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", keys)
                deleted = self._db.total_changes - before
                self._db.executemany(ADD_TO_TOTAL, counts.items())
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot delete sent messages ({exc})") from None
            self._count -= deleted
            for name, n in counts.items():
                self.totals[name] += n
            return deleted

    def set_totals(self, totals: Mapping[str, int]) -> None:
        """Store these totals as they are now (the per-second counts, kept by the publisher)."""
        changed = {name: n for name, n in totals.items() if self.totals[name] != n}
        if not changed:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(SET_TOTAL, changed.items())
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot store the totals ({exc})") from None
            self.totals.update(changed)

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the error that brought us here is the one to report

    def close(self) -> None:
        with self._lock:
            self._db.close()
