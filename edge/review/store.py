"""Verdicts on detections, kept in one SQLite file that survives restarts.

One row per event id: the latest verdict wins (a person may change their mind), with who gave
it and when. WAL mode so the page can read while a verdict is written; each call opens its own
short transaction on one connection guarded by a lock, so the store is safe to share between
the server's threads. No global state: the caller makes a store and passes it on.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge.errors import SoundwatchError

VERDICTS = ("right", "wrong", "relabel")
"""`right`: the label is correct; `wrong`: nothing of that label there (a negative example);
`relabel`: a sound is there but of another label, named in `label`."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    event_id TEXT PRIMARY KEY,
    verdict TEXT NOT NULL CHECK (verdict IN ('right', 'wrong', 'relabel')),
    label TEXT,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Verdict:
    event_id: str
    verdict: str
    label: str | None
    """The new label for `relabel`, else None."""
    reviewer: str
    at: str
    """ISO 8601 UTC with milliseconds, when the verdict was given."""

    def as_json(self) -> dict[str, str | None]:
        return {
            "event_id": self.event_id,
            "verdict": self.verdict,
            "label": self.label,
            "reviewer": self.reviewer,
            "at": self.at,
        }


def check_verdict(event_id: str, verdict: str, label: str | None, reviewer: str) -> None:
    """Raise SoundwatchError naming the one field that is wrong."""
    if not event_id:
        raise SoundwatchError("event_id: empty")
    if verdict not in VERDICTS:
        raise SoundwatchError(f"verdict: {verdict!r} is not one of {', '.join(VERDICTS)}")
    if verdict == "relabel" and not label:
        raise SoundwatchError("label: a relabel verdict needs the new label")
    if verdict != "relabel" and label:
        raise SoundwatchError(f"label: only a relabel verdict takes a label, not {verdict!r}")
    if not reviewer:
        raise SoundwatchError("reviewer: empty")


class VerdictStore:
    """Verdicts by event id in `path` (created with its folder when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise SoundwatchError(f"{self.path}: not a verdict store ({exc})") from None
        self._lock = threading.Lock()

    def put(
        self,
        event_id: str,
        verdict: str,
        reviewer: str,
        label: str | None = None,
        at: datetime | None = None,
    ) -> Verdict:
        """Store (or replace) the verdict on `event_id`; `at` defaults to now (UTC)."""
        check_verdict(event_id, verdict, label, reviewer)
        when = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        row = Verdict(event_id, verdict, label or None, reviewer, stamp)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                (row.event_id, row.verdict, row.label, row.reviewer, row.at),
            )
        return row

    def remove(self, event_id: str) -> bool:
        """Forget the verdict on `event_id` (undo); True if there was one."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM verdicts WHERE event_id = ?", (event_id,))
        return cursor.rowcount > 0

    def get(self, event_id: str) -> Verdict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM verdicts WHERE event_id = ?", (event_id,)
            ).fetchone()
        return Verdict(*row) if row else None

    def all(self) -> dict[str, Verdict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM verdicts ORDER BY at").fetchall()
        return {row[0]: Verdict(*row) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
