"""Clips on disk: written whole or not at all, within the folder's limits, paused after a failure.

Each clip is encoded in memory, written to `<name>.partial` and renamed, so no half clip is ever
seen under a final name. Retention (edge/outputs/clips/retention.py), checked before each
write: clips older than `max_age_days` (by file mtime) go, then the oldest until the folder's
clips plus the new one fit in `max_total_mb`. A clip that cannot fit, a filesystem with less
than `min_free_mb` free after the write, ENOSPC, or a folder that cannot be written all mean the
same: the clip is counted in `failed`, one warning is logged, and new clips are refused
(`admit` is False, counted in `skipped`) until `retry_seconds` of stream time have passed; then
clips are tried again. Nothing here raises for a disk problem: events go on. A recovery is
logged once.

Time is passed in: stream seconds for the pause (so a paused daemon retries after so much
audio, also in a file scan at full speed), Unix seconds for the age of clips.
"""

from __future__ import annotations

import errno
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.outputs.clips.retention import Retention
from edge.outputs.clips.settings import ClipSettings

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
SUBTYPES = {"int16": "PCM_16", "float32": "FLOAT"}


class ClipStopped(Exception):
    """A clip cannot be written now (limit or disk); carries the one-line reason."""


class ClipStore:
    """The clips folder (`folder`, day folders under it) and its limits; see the module
    docstring. Counters (plain ints, read any time, for the metrics): written, failed,
    skipped, deleted, bytes_total (bytes of clips in the folder: at start, then after each
    write), and `paused`."""

    def __init__(self, settings: ClipSettings, folder: Path, retry_seconds: float = 60.0) -> None:
        self.settings = settings
        self.folder = Path(folder)
        self.retry_seconds = retry_seconds
        self.written = 0
        self.failed = 0
        self.skipped = 0
        self.deleted = 0
        # Clips kept from earlier runs count from the start, not from the first new clip.
        self._retention = Retention(self.folder)
        self._retry_at: float | None = None  # stream seconds when clips are tried again
        self._failing = False  # the last write failed: log once, and once when it recovers

    @property
    def bytes_total(self) -> int:
        return self._retention.bytes

    @property
    def paused(self) -> bool:
        return self._retry_at is not None

    def reconfigure(self, settings: ClipSettings, folder: Path) -> None:
        if Path(folder) != self.folder:
            self._retention = Retention(Path(folder))
        self.settings, self.folder = settings, Path(folder)

    def admit(self, stream_seconds: float) -> bool:
        """May a new clip begin at `stream_seconds` (audio seconds over all streams)? Not
        while paused: the clip is counted as skipped."""
        if self._retry_at is not None:
            if stream_seconds < self._retry_at:
                self.skipped += 1
                return False
            self._retry_at = None  # try again; a failure pauses once more
        return True

    def write(
        self, path: Path, audio: np.ndarray, rate_hz: int, stream_seconds: float, now: float
    ) -> bool:
        """Save `audio` (float32 mono at `rate_hz`; int16 clips are clipped in place) as
        `path`; True when written. A failure is counted, logged once, and pauses clips for
        `retry_seconds` from `stream_seconds`. `now`: Unix time, s, for `max_age_days`."""
        try:
            self._save(path, audio, rate_hz, now)
        except (OSError, ClipStopped) as exc:
            self.failed += 1
            if not self._failing:
                logger.warning(
                    "clips paused, retried after %g s of audio (events go on): %s",
                    self.retry_seconds,
                    _reason(exc, path),
                )
            self._failing = True
            self._retry_at = stream_seconds + self.retry_seconds
            return False
        if self._failing:
            logger.info("clips resumed: %s written", path)
            self._failing = False
        self.written += 1
        return True

    def _save(self, path: Path, audio: np.ndarray, rate_hz: int, now: float) -> None:
        s = self.settings
        if s.sample_format == "int16":
            np.clip(audio, -1.0, 1.0, out=audio)
        encoded = io.BytesIO()
        sf.write(encoded, audio, rate_hz, subtype=SUBTYPES[s.sample_format], format="WAV")
        data = encoded.getbuffer()
        size = len(data)
        limit = s.max_total_mb * 1e6
        if size > limit:
            raise ClipStopped(f"a {size} byte clip is over max_total_mb ({s.max_total_mb:g} MB)")
        max_age = s.max_age_days * 86400 if s.max_age_days > 0 else None
        self.deleted += self._retention.prune(limit - size, max_age, now)
        # After pruning, which may remove an emptied day folder, this one included.
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free - size < s.min_free_mb * 1e6:
            raise ClipStopped(
                f"{path.parent}: {free / 1e6:.0f} MB free, min_free_mb is {s.min_free_mb:g}"
            )
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            with partial.open("wb") as f:
                f.write(data)
            partial.replace(path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        self._retention.add(path, size, now)


def _reason(exc: BaseException, path: Path) -> str:
    """One line: what failed, and on which file."""
    if isinstance(exc, OSError):
        what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return f"{what} ({exc.filename or path})"
    return str(exc)
