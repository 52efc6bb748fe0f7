"""What can still be read from a corrupt outbox: a power cut on an SD card, a torn page.

`set_aside` moves the bad file (and its `-wal`/`-shm`, renamed alike so SQLite still pairs
them) to `<name>.corrupt-<UTC time>`; `salvage` reads what it can from there: the messages, in
order, skipping the rows SQLite cannot read and those it reads but that are not a whole JSON
message (a page cut short reads as zeros: such a row must not reach a subscriber as an event),
and the persistent totals.

Reading around damage: the rows are scanned in `seq` order; when the scan hits a page SQLite
cannot read, a seek to a higher `seq` usually still works (the b-tree's interior pages lead
past the bad leaf). `_resume_after` finds the lowest such `seq`, doubling the step and then
halving it back, so a damaged page costs a few dozen queries, not one per possible number.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

READ_ROW = "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq"
# SQLite's own words for a file that is not (or no longer) a database: SQLITE_CORRUPT (11) and
# SQLITE_NOTADB (26). Anything else (a locked file, a missing folder) is not corruption.
CORRUPT_CODES = {11, 26}
MAX_SEQ = 2**63 - 1  # SQLite's largest integer key


@dataclass
class Salvage:
    messages: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload), in order
    totals: dict[str, int] = field(default_factory=dict)


def is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11 on
    if code is None:  # 3.10: SQLite's fixed words for those two codes
        return str(exc).startswith(("file is not a database", "database disk image is malformed"))
    return code in CORRUPT_CODES


def set_aside(path: Path, now: datetime | None = None) -> Path:
    """Rename `path` and its -wal/-shm to `<name>.corrupt-<UTC time>[-wal|-shm]`; the new name."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # a second corrupt file within the same second
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):  # the database last: a crash halfway leaves it found
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside


def salvage(path: Path) -> Salvage:
    """Every message and total SQLite can still read from the outbox file at `path`."""
    found = Salvage()
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error:
        return found
    try:
        # Lets SQLite read a file shorter than its header says (a truncated one): without it,
        # every query is refused as corrupt. Nothing is written through this connection.
        db.execute("PRAGMA writable_schema=ON")
        found.messages = _messages(db)
        rows = db.execute("SELECT name, count FROM totals").fetchall()
        found.totals = {str(n): int(c) for n, c in rows if isinstance(c, int) and c >= 0}
    except sqlite3.Error:
        pass  # what was read so far is kept; totals not read start again from 0
    finally:
        db.close()
    return found


def _messages(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
    kept: list[tuple[str, bytes]] = []
    cursor: int | None = 0
    while cursor is not None:
        try:
            for seq, topic, payload in db.execute(READ_ROW, (cursor,)):
                cursor = int(seq)
                if _intact(topic, payload):
                    kept.append((topic, payload))
            return kept
        except sqlite3.Error:
            cursor = _resume_after(db, cursor)
    return kept


def _intact(topic: object, payload: object) -> bool:
    """A topic and a payload that are what the outbox stores: text, and one JSON object."""
    if not isinstance(topic, str) or not topic or "\x00" in topic:
        return False
    if not isinstance(payload, bytes):
        return False
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:  # not UTF-8, or not JSON: torn
        return False


def _readable_after(db: sqlite3.Connection, seq: int) -> bool:
    try:
        db.execute(READ_ROW + " LIMIT 1", (seq,)).fetchone()
        return True
    except sqlite3.Error:
        return False


def _resume_after(db: sqlite3.Connection, failed: int) -> int | None:
    """The lowest `seq` above `failed` after which the next row reads again (None: none)."""
    step = 1
    while not _readable_after(db, failed + step):
        step *= 2
        if failed + step > MAX_SEQ:
            return None
    low, high = failed + step // 2, failed + step  # after `low` it fails, after `high` it reads
    while high - low > 1:
        middle = (low + high) // 2
        if _readable_after(db, middle):
            high = middle
        else:
            low = middle
    return high
