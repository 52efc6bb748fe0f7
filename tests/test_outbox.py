"""The MQTT outbox: durable, ordered, bounded, and honest about what it drops."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.errors import SoundwatchError
from edge.outputs.mqtt.outbox import Outbox


def payloads(box: Outbox, after: int = 0, limit: int = 1000) -> list[bytes]:
    return [m.payload for m in box.after(after, limit)]


def test_messages_come_out_in_order_and_go_when_deleted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_messages=100)
    for i in range(5):
        assert box.add("t/events", f"m{i}".encode()) == 0
    first = box.after(0, 3)
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
    assert [m.topic for m in first] == ["t/events"] * 3
    assert payloads(box, after=first[-1].seq) == [b"m3", b"m4"]  # the publisher's cursor
    assert box.delete([first[1].seq, first[0].seq]) == 2
    assert box.delete([first[0].seq]) == 0  # an ack for a message already gone
    assert len(box) == 3
    assert payloads(box) == [b"m2", b"m3", b"m4"]
    box.close()


def test_pending_messages_survive_a_restart_and_numbers_keep_growing(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, max_messages=100)
    for i in range(4):
        box.add("t", f"m{i}".encode())
    last = box.after(0, 10)[-1].seq
    box.delete([m.seq for m in box.after(0, 10)])  # everything acknowledged...
    box.add("t", b"m4")  # ...then one more that is not
    box.close()

    again = Outbox(path, max_messages=100)
    assert len(again) == 1
    (pending,) = again.after(0, 10)
    assert pending.payload == b"m4"
    again.add("t", b"m5")
    seqs = [m.seq for m in again.after(0, 10)]
    assert seqs[0] > last and seqs[1] > seqs[0]  # never reused, even after deleting all
    again.close()


def test_a_full_outbox_drops_the_oldest_and_says_how_many(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_messages=3)
    dropped = [box.add("t", f"m{i}".encode()) for i in range(7)]
    assert dropped == [0, 0, 0, 1, 1, 1, 1]
    assert len(box) == 3
    assert payloads(box) == [b"m4", b"m5", b"m6"]
    box.close()
    # A smaller limit after a restart: the next add trims down to it at once.
    smaller = Outbox(tmp_path / "o.sqlite3", max_messages=2)
    assert smaller.add("t", b"m7") == 2
    assert payloads(smaller) == [b"m6", b"m7"]
    smaller.close()


def test_write_ahead_log_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, max_messages=10)
    box.add("t", b"x")
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # Committed means readable by another connection (another process after a crash).
    other = sqlite3.connect(path)
    assert other.execute("SELECT payload FROM outbox").fetchall() == [(b"x",)]
    other.close()
    box.close()


def test_a_killed_writer_loses_nothing_it_returned_from(tmp_path: Path) -> None:
    """The process dies right after add() returned (os._exit: no cleanup, no close)."""
    path = tmp_path / "o.sqlite3"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from edge.outputs.mqtt.outbox import Outbox\n"
        f"box = Outbox(Path({str(path)!r}), 1000)\n"
        "for i in range(50):\n"
        "    box.add('t', str(i).encode())\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 9, result.stderr
    box = Outbox(path, max_messages=1000)
    assert payloads(box) == [str(i).encode() for i in range(50)]
    box.close()


def test_adding_and_deleting_from_two_threads(tmp_path: Path) -> None:
    """The processing thread adds while the publisher reads and deletes."""
    box = Outbox(tmp_path / "o.sqlite3", max_messages=10_000)
    n = 300
    done = threading.Event()
    seen: list[bytes] = []

    def publisher() -> None:
        cursor = 0
        while not done.is_set() or len(box):
            batch = box.after(cursor, 20)
            if batch:
                cursor = batch[-1].seq
                seen.extend(m.payload for m in batch)
                box.delete(m.seq for m in batch)
            else:
                done.wait(0.001)

    thread = threading.Thread(target=publisher)
    thread.start()
    for i in range(n):
        box.add("t", str(i).encode())
    done.set()
    thread.join(timeout=30)
    assert seen == [str(i).encode() for i in range(n)]
    assert len(box) == 0
    box.close()


def test_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SoundwatchError, match=r"junk.sqlite3: cannot open the MQTT outbox"):
        Outbox(junk, max_messages=10)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(SoundwatchError, match=r"cannot open the MQTT outbox"):
        Outbox(blocked / "o.sqlite3", max_messages=10)  # its folder is a file
