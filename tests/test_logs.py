"""Logs under systemd: syslog priority prefixes and no timestamp when stderr is the journal.

The real CLI runs in a subprocess whose stderr is a pipe; `$JOURNAL_STREAM` names that pipe's
device and inode, exactly as systemd sets it for a unit whose stderr goes to journald.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.scenes import write_scene

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _soundwatch(args: list[str], cwd: Path, journal: str | None) -> tuple[int, str]:
    """Exit code and stderr of `soundwatch ARGS`; `journal`: "stderr" sets JOURNAL_STREAM to
    the stderr pipe, "other" to some other file, None leaves it unset."""
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal == "stderr":
        st = os.fstat(write)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif journal == "other":
        st = os.stat(cwd)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with os.fdopen(read) as stderr:
        done = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=write,
        )
        os.close(write)
        text = stderr.read()
    return done.wait(timeout=120), text


def test_journal_gets_priorities_and_no_timestamp(tmp_path: Path) -> None:
    """A scan with one unreadable file logs an error (`skipped: ...`) and info lines."""
    write_scene(tmp_path / "rec" / "scene.wav")
    (tmp_path / "rec" / "broken.wav").write_bytes(b"RIFF not really a wav")
    args = ["scan", "rec", "--model", "tone", "--out", "out", "--quiet"]

    code, journal = _soundwatch(args, tmp_path, "stderr")
    assert code == 1  # one file skipped
    lines = journal.splitlines()
    assert lines, "nothing logged"
    errors = [ln for ln in lines if ln.startswith("<3>")]
    infos = [ln for ln in lines if ln.startswith("<6>")]
    assert errors and "skipped" in errors[0] and "broken.wav" in errors[0]
    assert any("1 file(s) scored" in ln for ln in infos)
    assert [ln for ln in lines if not re.match(r"<[0-7]>", ln)] == []
    assert not TIMESTAMP.search(journal)

    # On a terminal or in a file (JOURNAL_STREAM unset, or naming another file, as a child of
    # a unit whose stderr was redirected inherits it): timestamps, no prefixes.
    for journal_setting in (None, "other"):
        code, plain = _soundwatch(args, tmp_path, journal_setting)
        assert code == 1
        assert not re.search(r"^<\d>", plain, re.MULTILINE)
        assert len(TIMESTAMP.findall(plain)) == len(plain.splitlines())
        assert re.search(r" ERROR edge\.scan: skipped: .*broken\.wav", plain)


def test_a_user_error_is_an_error_in_the_journal(tmp_path: Path) -> None:
    """`journalctl -p err` shows why the service did not start."""
    (tmp_path / "config.yaml").write_text("model: {path: tone}\nno_such_key: 1\n")
    code, journal = _soundwatch(["check", "-c", "config.yaml"], tmp_path, "stderr")
    assert code == 2
    assert journal.startswith("<3>soundwatch: error: ")
    assert "no_such_key" in journal
