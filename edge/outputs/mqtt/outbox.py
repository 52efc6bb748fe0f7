"""A durable FIFO of messages waiting for the broker: SQLite, WAL, fsync'd on every commit.

Every event message is added here before it is published and deleted only when the broker has
acknowledged it, so a broker outage, a lost network or a killed daemon loses nothing: what is
still here when the daemon starts again is sent first, in order. Rows are numbered by an
AUTOINCREMENT key, so numbers only grow, even across deletes and restarts; the publisher uses
that to remember how far it has handed rows over.

Bounded: beyond `max_messages`, adding one drops the oldest, and the drop is counted by the
caller (the MQTT sink), never silent.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import SoundwatchError


class OutboxError(SoundwatchError):
    """The outbox file cannot be opened or written; the message names the file."""


@dataclass(frozen=True)
class Message:
    seq: int  # position in the outbox; grows forever
    topic: str
    payload: bytes


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""


class Outbox:
    """Thread-safe: the processing thread adds, the publisher thread reads and deletes.

    One connection behind a lock; each call is one short transaction. `add()` returns once the
    row is on disk (synchronous=FULL: the WAL is fsync'd at every commit), a few milliseconds
    on an SD card, which is why only events (a few a minute) come here, not per-second rows.
    """

    def __init__(self, path: Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we write BEGIN/COMMIT ourselves, one transaction per call.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{path}: SQLite refused WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"{path}: cannot open the MQTT outbox ({exc})") from None

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
                self._db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot store a message ({exc})") from None
            self._count += 1 - dropped
            return dropped

    def after(self, seq: int, limit: int) -> list[Message]:
        """Up to `limit` messages numbered above `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Message(int(s), str(t), bytes(p)) for s, t, p in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete these messages (acknowledged); returns how many were still here."""
        keys = [(s,) for s in seqs]
        if not keys:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", keys)
                deleted = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"{self.path}: cannot delete sent messages ({exc})") from None
            self._count -= deleted
            return deleted

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the error that brought us here is the one to report

    def close(self) -> None:
        with self._lock:
            self._db.close()
