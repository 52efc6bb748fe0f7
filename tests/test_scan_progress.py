"""`soundwatch scan` progress: a bar with the total and the time left on a terminal, nothing
otherwise. The real CLI, its stderr a pseudo-terminal or a pipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.progress import soundwatch_stderr
from tests.scenes import write_scene


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 20 s scenes and one unreadable file: 40 s of audio in the bar's total."""
    work = tmp_path_factory.mktemp("scan-progress")
    write_scene(work / "rec" / "a.wav")
    write_scene(work / "rec" / "b.wav", seed=2)
    (work / "rec" / "broken.wav").write_bytes(b"RIFF not really a wav")
    return work


def test_terminal_gets_a_bar_with_total_and_time_left(recordings: Path) -> None:
    args = ["scan", "rec", "--model", "tone", "--out", "out-tty"]
    code, drawn = soundwatch_stderr(args, recordings, terminal=True)
    assert code == 1  # broken.wav skipped
    final = drawn.split("\r")
    done = [part for part in final if part.startswith("scan: 100%")]
    assert done, drawn[-2000:]
    # Audio done / total, elapsed < left, and which of the 3 files was last.
    assert re.search(
        r"\| 40/40 s audio \[\d\d:\d\d<\d\d:\d\d, [\d.]+s/s audio\], file 2/3", done[-1]
    )
    assert "0/40 s audio" in drawn  # the total is known from the start
    # The skipped file's error is printed above the bar, not into it.
    assert re.search(r"\r?\n?.* ERROR edge\.scan: skipped: rec/broken\.wav", drawn)


def test_no_terminal_no_bar(recordings: Path) -> None:
    args = ["scan", "rec", "--model", "tone", "--out", "out-pipe"]
    code, written = soundwatch_stderr(args, recordings, terminal=False)
    assert code == 1
    assert "\r" not in written and "%|" not in written
    lines = written.splitlines()
    assert len(lines) == 2, written  # the skipped file, then the summary
    assert "skipped: rec/broken.wav" in lines[0]
    assert "2 file(s) scored, 40.0 s of audio" in lines[1]
