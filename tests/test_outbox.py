"""The MQTT outbox: durable, ordered, bounded, and honest about what it drops."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.errors import SoundwatchError
from edge.outputs.mqtt.outbox import Outbox
from edge.outputs.mqtt.salvage import is_corrupt


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


def test_an_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(SoundwatchError, match=r"cannot open the MQTT outbox"):
        Outbox(blocked / "o.sqlite3", max_messages=10)  # its folder is a file


# -- corrupt files: what a power cut on an SD card leaves ------------------------------------------

PAGE = 4096  # SQLite's default page size, which the outbox keeps


def filled(path: Path, n: int, size: int = 300) -> list[bytes]:
    """An outbox of `n` JSON messages of about `size` bytes (12 to a page), checkpointed into the
    main file and closed; with totals from a drop and some acknowledgements."""
    box = Outbox(path, max_messages=n)
    sent = [json.dumps({"id": f"e{i:04d}", "pad": "x" * size}).encode() for i in range(n + 2)]
    for payload in sent:
        box.add("t/events", payload)  # the first 2 are dropped: the outbox holds n
    box.delete([], {"events_published": 5, "events_rejected": 1})
    box.close()  # the last connection: SQLite checkpoints the WAL into the file and removes it
    assert not path.with_name(path.name + "-wal").exists()
    return sent[2:]


def reopened(path: Path, n: int, caplog: pytest.LogCaptureFixture) -> tuple[Outbox, list[bytes]]:
    with caplog.at_level(logging.ERROR, logger="edge.outputs.mqtt.outbox"):
        box = Outbox(path, max_messages=n)
    return box, payloads(box, limit=10 * n)


def aside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + ".corrupt-*"))


def test_a_truncated_outbox_is_set_aside_and_its_first_pages_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite3"
    sent = filled(path, 200)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)  # the second half of the pages never reached the card
    box, got = reopened(path, 200, caplog)
    assert 0 < len(got) < len(sent)
    assert got == sent[: len(got)]  # what came back is the oldest, in order, unchanged
    (moved,) = aside(path)
    assert re.fullmatch(r"o\.sqlite3\.corrupt-\d{8}T\d{6}Z", moved)
    assert (tmp_path / moved).stat().st_size == size // 2  # kept as it was found
    assert f"{len(got)} event messages recovered" in caplog.text
    assert box.totals["corrupt_outboxes"] == 1
    assert box.totals["recovered_messages"] == len(got)
    box.add("t/events", b"new")  # and the fresh outbox works
    assert payloads(box, limit=1000)[-1] == b"new"
    box.close()


def test_a_garbage_page_loses_only_the_rows_on_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite3"
    sent = filled(path, 200)
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as f:
        f.seek(PAGE * (pages // 2))
        f.write(bytes(range(256)) * (PAGE // 256))  # one page in the middle overwritten
    box, got = reopened(path, 200, caplog)
    lost = [p for p in sent if p not in got]
    assert got == [p for p in sent if p in got]  # in order, nothing changed or invented
    assert 0 < len(lost) <= 2 * PAGE // 300  # the rows of that page, no more
    assert got[0] == sent[0] and got[-1] == sent[-1]  # rows after the bad page came back
    # The totals were in the file too: they carry on, plus the recovery itself.
    assert box.totals["events_published"] == 5 and box.totals["events_rejected"] == 1
    assert box.totals["events_dropped"] == 2
    assert box.totals["recovered_messages"] == len(got)
    box.close()


def test_a_file_that_is_not_a_database_gives_a_fresh_outbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_text("this is not a database\n" * 100)
    box, got = reopened(path, 10, caplog)
    assert got == [] and len(box) == 0
    assert "was corrupt (file is not a database)" in caplog.text
    assert "0 event messages recovered" in caplog.text
    assert len(aside(path)) == 1
    box.add("t", b"x")
    box.close()
    # The next start finds a good file: nothing is set aside again.
    again, got = reopened(path, 10, caplog)
    assert got == [b"x"] and len(aside(path)) == 1 and again.totals["corrupt_outboxes"] == 1
    again.close()


def test_a_torn_write_ahead_log_keeps_every_commit_before_the_tear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The process dies with 20 commits in the WAL, then its last bytes are garbage (the
    card lost the final sector). SQLite's frame checksums end the log at the tear."""
    path = tmp_path / "o.sqlite3"
    code = (
        "import os\n"
        "from pathlib import Path\n"
        "from edge.outputs.mqtt.outbox import Outbox\n"
        f"box = Outbox(Path({str(path)!r}), 1000)\n"
        "for i in range(20):\n"
        "    box.add('t', str(i).encode())\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 9, result.stderr
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size
    with wal.open("r+b") as f:
        f.seek(size - 100)
        f.write(b"\xff" * 100)  # the last frame, the 20th commit, torn
    box, got = reopened(path, 1000, caplog)
    assert got == [str(i).encode() for i in range(19)]
    assert aside(path) == []  # a torn log is not corruption: SQLite ignores the torn frame
    box.close()


def test_totals_survive_a_restart_and_count_in_the_same_commit(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, max_messages=2)
    for i in range(5):
        box.add("t", str(i).encode())
    box.delete([m.seq for m in box.after(0, 10)], {"events_published": 1, "events_rejected": 1})
    box.set_totals({"seconds_published": 7, "seconds_dropped": 3})
    box.set_totals({"seconds_published": 9, "seconds_dropped": 3})
    want = {"events_dropped": 3, "events_published": 1, "events_rejected": 1}
    want |= {"seconds_published": 9, "seconds_dropped": 3}
    assert {k: v for k, v in box.totals.items() if v} == want
    box.close()
    again = Outbox(path, max_messages=2)
    assert {k: v for k, v in again.totals.items() if v} == want
    again.close()


def test_corruption_is_told_by_sqlites_code_or_on_python_3_10_its_words() -> None:
    coded = sqlite3.DatabaseError("database disk image is malformed")
    coded.sqlite_errorcode = 11  # type: ignore[attr-defined]
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5  # type: ignore[attr-defined]
    worded = sqlite3.DatabaseError("file is not a database")  # no code before Python 3.11
    assert (is_corrupt(coded), is_corrupt(locked), is_corrupt(worded)) == (True, False, True)
    assert not is_corrupt(sqlite3.OperationalError("unable to open database file"))
