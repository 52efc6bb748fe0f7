"""Which clips to delete, without listing the clips folder for every new clip.

The clips live in day folders under the clips folder (`<folder>/<day>/<name>.wav`; a scan's
clips of streams without a clock use the file's name for `<day>`). At start the folder is
read once for a running total and, per day folder, its bytes and the mtime of its oldest clip.
Each new clip is added to those. Only when something must go (the total over its limit, or the
oldest clip over its age) is one folder listed, the one holding the oldest clip, and its clips
are then deleted oldest first from that listing, across writes, until it runs out; then the
next is listed. So the memory held is one day folder's names at most, and the listing is
paid once per day folder, not once per clip. A listing also resets that folder's bytes to what
is on disk (clips deleted by hand are noticed then).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

CLIP_SUFFIX = ".wav"


@dataclass
class _Day:
    oldest: float  # mtime of its oldest clip, Unix s
    bytes: int


class Retention:
    """The clips under `folder` and their total (`bytes`); `add` each clip written, `prune`
    before writing one."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.bytes = 0
        self._days: dict[str, _Day] = {}
        self._listed: str | None = None  # the day folder whose clips `_queue` holds
        self._queue: deque[tuple[float, int, str]] = deque()  # (mtime, size, name), oldest first
        for day in _subfolders(self.folder):
            clips = _clips(self.folder / day)
            if clips:
                self._days[day] = _Day(min(c[0] for c in clips), sum(c[1] for c in clips))
                self.bytes += self._days[day].bytes

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
        """Read day folder `name` into the queue, oldest first; forget it if it has no clips."""
        clips = sorted(_clips(self.folder / name))
        self.bytes -= self._days[name].bytes
        if not clips:
            del self._days[name]
            self._listed, self._queue = None, deque()
            with contextlib.suppress(OSError):
                (self.folder / name).rmdir()  # only succeeds once nothing else is in it
            return
        self._days[name] = _Day(clips[0][0], sum(c[1] for c in clips))
        self.bytes += self._days[name].bytes
        self._listed, self._queue = name, deque(clips)


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError:  # no folder yet, or not a folder: no clips
        return []


def _clips(day: Path) -> list[tuple[float, int, str]]:
    """(mtime, size, name) of the clips in one day folder; files that vanish meanwhile skipped."""
    clips = []
    try:
        with os.scandir(day) as entries:
            for e in entries:
                if e.name.endswith(CLIP_SUFFIX) and not e.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        st = e.stat()
                        clips.append((st.st_mtime, st.st_size, e.name))
    except OSError:
        return []
    return clips
