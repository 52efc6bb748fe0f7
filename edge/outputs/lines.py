"""Append-only text files that a full disk cannot tear, and the bookkeeping of failed writes.

The daemon's CSVs and JSONL files gain one line at a time. `LineFile.append` writes a whole
line with one write(2) on an O_APPEND descriptor and, when the disk cuts the write short,
truncates the file back, so a reader never sees half a line and the next line starts clean.
`Failures` counts what could not be written, logs once when writing stops and once when it
works again, and says whether it is failing now (for the metrics): a writer that cannot write
degrades, it never stops the analysis.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class LineFile:
    """A text file opened for appending whole lines (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o644)

    def append(self, text: str) -> None:
        """Write `text` (whole lines) or nothing; OSError when the disk refuses."""
        data = text.encode("utf-8", errors="backslashreplace")  # a name not valid UTF-8
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._truncate(size)
            raise
        if written != len(data):  # the disk took part of it: take that back
            self._truncate(size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def _truncate(self, size: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        os.close(self._fd)


class Failures:
    """What a writer could not write, by kind ("rows", "events"), and whether it fails now.

    Each kind fails and recovers on its own (a file already open may still have room where a
    new one has none); the episode, logged once each way, lasts while any kind fails."""

    def __init__(self, what: str) -> None:
        self.what = what  # for the log lines: "output files"
        self.counts: dict[str, int] = {}
        self._failing: set[str] = set()

    @property
    def failing(self) -> bool:
        return bool(self._failing)

    def failed(self, kind: str, exc: OSError) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not self._failing:
            logger.warning(
                "%s: cannot write %s (%s); rows and events are counted and not written until"
                " it can, analysis and MQTT go on",
                self.what,
                exc.filename or "",
                exc.strerror or exc,
            )
        self._failing.add(kind)

    def worked(self, kind: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            if not self._failing:
                lost = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
                logger.info("%s: writing again (not written so far: %s)", self.what, lost)
