"""Which clips to delete, without listing the clips folder for every new clip.

The clips live in day folders under the clips folder (`<folder>/<day>/<name>.wav`; a scan's
clips of streams without a clock use the file's name for `<day>`). At start the folder is
read once for a running total and, per day folder, its bytes and the mtime of its oldest clip.
Each new clip is added to those. Only when something must go (the total over its limit, or the
oldest clip over its age) is one folder listed, the one holding the oldest clip, keeping its
`queue` (1024) oldest clips, which are then deleted oldest first, across writes, until they
run out; then it is listed again, or the next one. So the memory held is `queue` names (not a
day's, which the 72-hour soak showed at 7 MiB for 30,000 clips), and a folder is listed once
per `queue` deletions, not once per clip. A listing also resets that folder's bytes to what is
on disk (clips deleted by hand are noticed then).
"""

from __future__ import annotations

import contextlib
import heapq
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

CLIP_SUFFIX = ".wav"
QUEUE = 1024


@dataclass
class _Day:
    oldest: float  # mtime of its oldest clip, Unix s
    bytes: int


class Retention:
    """The clips under `folder` and their total (`bytes`); `add` each clip written, `prune`
    before writing one."""

    def __init__(self, folder: Path, queue: int = QUEUE) -> None:
        self.folder = Path(folder)
        self.bytes = 0
        self.queue = queue
        self._days: dict[str, _Day] = {}
        self._listed: str | None = None  # the day folder whose oldest clips `_queue` holds
        self._queue: deque[tuple[float, int, str]] = deque()  # (mtime, size, name), oldest first
        for day in _subfolders(self.folder):
            oldest, total = _oldest(self.folder / day, 1)
            if oldest:
                self._days[day] = _Day(oldest[0][0], total)
                self.bytes += total

    def add(self, path: Path, size: int, mtime: float) -> None:
        """A clip of `size` bytes was written at `path` (`<folder>/<day>/<name>`)."""
        day = self._days.setdefault(path.parent.name, _Day(mtime, 0))
        day.oldest = min(day.oldest, mtime)
        day.bytes += size
        self.bytes += size

    def prune(self, max_bytes: float, max_age_seconds: float | None, now: float) -> int:
        """Delete clips older than `max_age_seconds` before `now` (Unix s, against mtimes),
        then the oldest until the rest total at most `max_bytes`; how many were deleted.
        A day folder left empty is removed; files that vanish meanwhile are ignored."""
        deleted = 0
        while self._days:
            name = min(self._days, key=lambda d: self._days[d].oldest)
            day = self._days[name]
            too_old = max_age_seconds is not None and now - day.oldest > max_age_seconds
            if not too_old and self.bytes <= max_bytes:
                break
            if self._listed != name or not self._queue:
                self._list(name)
                continue
            _, size, clip = self._queue.popleft()
            (self.folder / name / clip).unlink(missing_ok=True)
            day.bytes -= size
            self.bytes -= size
            deleted += 1
            if self._queue:
                day.oldest = self._queue[0][0]
        return deleted

    def _list(self, name: str) -> None:
        """Read day folder `name`'s oldest clips into the queue; forget it if it has none."""
        clips, total = _oldest(self.folder / name, self.queue)
        self.bytes -= self._days[name].bytes
        if not clips:
            del self._days[name]
            self._listed, self._queue = None, deque()
            with contextlib.suppress(OSError):
                (self.folder / name).rmdir()  # only succeeds once nothing else is in it
            return
        self._days[name] = _Day(clips[0][0], total)
        self.bytes += total
        self._listed, self._queue = name, deque(clips)


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError:  # no folder yet, or not a folder: no clips
        return []


def _oldest(day: Path, n: int) -> tuple[list[tuple[float, int, str]], int]:
    """The `n` oldest clips of one day folder as (mtime, size, name), oldest first, and the
    bytes of all its clips; never a list of the whole folder. Files that vanish are skipped."""
    kept: list[tuple[float, int, str]] = []  # (-mtime, size, name): the newest kept on top
    total = 0
    try:
        with os.scandir(day) as entries:
            for e in entries:
                if not e.name.endswith(CLIP_SUFFIX) or e.name.startswith("."):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                total += st.st_size
                item = (-st.st_mtime, st.st_size, e.name)
                if len(kept) < n:
                    heapq.heappush(kept, item)
                elif kept and item > kept[0]:  # older than the newest kept
                    heapq.heapreplace(kept, item)
    except OSError:
        return [], 0
    return sorted((-m, size, name) for m, size, name in kept), total
