"""A source of detections over a `soundwatch scan --out` folder.

Reads each `<file>.events.jsonl` (start and end messages paired by id) and
`<file>.probabilities.csv` (one row per second), and cuts an event's audio, with pre- and
post-roll, out of the original recording named in the event's `source`. Files are re-read when
they change, so a folder still being scanned shows new results on the next request.

The server only needs the methods of `Source`. `OutputFolder` holds what the scan folder and
the daemon's live outputs (edge/review/daemonfolder.py) share: reading and pairing events,
per-second rows and the coverage counts.

Events files only grow (lines appended), so each is read incrementally: a request reads only
what was appended since the last one, up to its last whole line (a line still being written
waits for the next request). A file that shrank or was replaced is read again from the start.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from edge.errors import SoundwatchError

EVENTS_SUFFIX = ".events.jsonl"
SECONDS_SUFFIX = ".probabilities.csv"
ROLL_SECONDS = 1.0
"""Audio kept before the start and after the end of an event in its excerpt."""
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
"""Event ids the review accepts: they name cache files, so no slashes and no dots alone."""

Event = dict[str, Any]


class Source(Protocol):
    """What the review server needs from a source of detections."""

    def events(self) -> list[Event]: ...
    def event(self, event_id: str) -> Event | None: ...
    def seconds(self, key: str) -> list[dict[str, str]]: ...
    def coverage(self) -> list[dict[str, Any]]: ...
    def model(self) -> dict[str, Any]: ...
    def excerpt(self, event_id: str) -> Excerpt: ...


@dataclass(frozen=True)
class Excerpt:
    samples: np.ndarray
    """float32, mono: the event's channel, or the mix when it has none."""
    rate_hz: int
    start_seconds: float
    """Offset of the first sample in the recording."""


@dataclass
class _Read:
    """How far one events file has been read, and the events in it so far, by id."""

    inode: int
    offset: int = 0  # bytes read: up to the end of the last whole line
    lines: int = 0
    by_id: dict[str, Event] = field(default_factory=dict)


class OutputFolder:
    """Events and per-second rows read from files under `root`, re-read when they change.

    A subclass says where the files are (`_event_files`, `_second_files`: key -> path) and
    how to cut an event's audio (`excerpt`); reading, pairing and counting are shared."""

    KEY = "file"
    """What a key of `seconds` names, for the error when there is none."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._read: dict[Path, _Read] = {}
        self._counts: dict[Path, tuple[int, dict[str, Counter[str]]]] = {}

    def _event_files(self) -> dict[str, Path]:
        raise NotImplementedError

    def _second_files(self) -> dict[str, Path]:
        raise NotImplementedError

    def excerpt(self, event_id: str) -> Excerpt:
        raise NotImplementedError

    def events(self) -> list[Event]:
        found: list[Event] = []
        for key, path in sorted(self._event_files().items()):
            found += self._events_of(key, path)
        return sorted(found, key=lambda e: (e["start"] or "", e["key"], e["start_offset"]))

    def event(self, event_id: str) -> Event | None:
        return next((e for e in self.events() if e["id"] == event_id), None)

    def _events_of(self, key: str, path: Path) -> list[Event]:
        st = path.stat()
        read = self._read.get(path)
        if read is None or read.inode != st.st_ino or st.st_size < read.offset:
            read = self._read[path] = _Read(st.st_ino)
        if st.st_size > read.offset:
            with path.open("rb") as f:
                f.seek(read.offset)
                appended = f.read(st.st_size - read.offset)
            whole = appended[: appended.rfind(b"\n") + 1]
            lines = whole.decode("utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, start=read.lines + 1):
                if line.strip():
                    _pair(read.by_id, key, f"{path}:{number}", line)
            read.offset += len(whole)
            read.lines += len(lines)
        return list(read.by_id.values())

    def seconds(self, key: str) -> list[dict[str, str]]:
        path = self._second_files().get(key)
        if path is None:
            raise KeyError(f"no {self.KEY} {key!r}")
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    def coverage(self) -> list[dict[str, Any]]:
        """Per UTC hour (or per file and hour of offset when the file has no absolute time):
        seconds analysed, seconds at a stream's edge, and seconds of gap by reason."""
        hours: dict[str, Counter[str]] = defaultdict(Counter)
        for key, path in sorted(self._second_files().items()):
            for hour, counts in self._counts_of(key, path).items():
                hours[hour].update(counts)
        return [
            {
                "hour": hour,
                "analysed": counts["analysed"],
                "edge": counts["edge"],
                "gaps": {k[4:]: n for k, n in counts.items() if k.startswith("gap:")},
            }
            for hour, counts in sorted(hours.items())
        ]

    def _counts_of(self, key: str, path: Path) -> dict[str, Counter[str]]:
        """Seconds by status per hour of one file, counted again only when the file changes."""
        mtime = path.stat().st_mtime_ns if path.is_file() else 0
        cached = self._counts.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        hours: dict[str, Counter[str]] = defaultdict(Counter)
        for row in self.seconds(key):
            time = row.get("time") or ""
            offset_hours = int(float(row.get("offset_seconds") or 0) // 3600)
            hour = f"{time[:13]}:00Z" if time else f"{key} +{offset_hours}h"
            status = row.get("status") or "gap:unknown"
            hours[hour][status] += 1
        self._counts[path] = (mtime, hours)
        return hours

    def model(self) -> dict[str, Any]:
        """Models, labels and thresholds as the events report them."""
        models: dict[str, dict[str, Any]] = {}
        for e in self.events():
            name = f"{e.get('model')} {e.get('model_version')}"
            labels = models.setdefault(name, {"model": e.get("model"), "labels": {}})["labels"]
            seen = labels.setdefault(e["label"], {"threshold": e.get("threshold"), "events": 0})
            seen["events"] += 1
        return {"models": list(models.values())}


class ScanFolder(OutputFolder):
    """Detections and per-second rows from the scan outputs under `root`."""

    KEY = "scanned file"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        if not self.root.is_dir():
            raise SoundwatchError(f"{root}: no such folder (expected a `soundwatch scan --out`)")

    def keys(self) -> list[str]:
        """Each scanned file, as its output path relative to the root without the suffix."""
        return sorted(
            str(p.relative_to(self.root))[: -len(EVENTS_SUFFIX)]
            for p in self.root.rglob(f"*{EVENTS_SUFFIX}")
        )

    def _event_files(self) -> dict[str, Path]:
        return {key: self.root / f"{key}{EVENTS_SUFFIX}" for key in self.keys()}

    def _second_files(self) -> dict[str, Path]:
        return {key: self.root / f"{key}{SECONDS_SUFFIX}" for key in self.keys()}

    def excerpt(self, event_id: str) -> Excerpt:
        """The event's audio with ROLL_SECONDS either side, clamped to the recording."""
        event = self.event(event_id)
        if event is None:
            raise KeyError(event_id)
        source = Path(str(event.get("source") or ""))
        try:
            info = sf.info(str(source))
        except (RuntimeError, sf.LibsndfileError, OSError):
            raise SoundwatchError(f"{source}: recording not readable") from None
        rate = int(info.samplerate)
        end_offset = event.get("end_offset")
        if end_offset is None:
            end_offset = event["start_offset"]
        first = max(0, int((float(event["start_offset"]) - ROLL_SECONDS) * rate))
        last = min(info.frames, int((float(end_offset) + ROLL_SECONDS) * rate))
        block = sf.read(str(source), start=first, stop=last, dtype="float32", always_2d=True)[0]
        channel = event.get("channel")
        mono = block[:, int(channel)] if channel is not None else block.mean(axis=1)
        return Excerpt(np.ascontiguousarray(mono, dtype=np.float32), rate, first / rate)


def _pair(by_id: dict[str, Event], key: str, where: str, line: str) -> None:
    """Add one event message (`where`: file and line) to the events by id."""
    try:
        message = json.loads(line)
        event_id = str(message["id"])
    except (ValueError, KeyError, TypeError):
        raise SoundwatchError(f"{where}: not an event message") from None
    if not SAFE_ID.match(event_id):
        raise SoundwatchError(f"{where}: id {event_id!r} is not a plain id")
    # The end message carries everything the start did, plus the end and final scores.
    if message.get("type") == "end" or event_id not in by_id:
        by_id[event_id] = {**message, "key": key}
