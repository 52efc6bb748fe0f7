"""A live source of detections over a running daemon's own outputs (`soundwatch run`).

The daemon writes, under `<output.dir>/<device>/<YYYY-MM-DD>/`, `events.jsonl` (start and end
messages) and one per-second CSV per UTC hour (`<YYYYMMDDTHH>.csv`, `..._ch<n>.csv`,
`...-2.csv` after a model change), and each event's clip under `clips.folder` (README "What
comes out", "Event clips"). This reads those files as they grow; the page never talks to the
processing thread. An event's audio is its clip (with the clip's pre- and post-roll), never a
path outside the clips folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.errors import SoundwatchError
from edge.review.scanfolder import Event, Excerpt, OutputFolder

EVENTS_FILE = "events.jsonl"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HOUR_FILE = re.compile(r"^\d{8}T\d{2}(_ch\d+)?(-\d+)?\.csv$")


class DaemonFolder(OutputFolder):
    """Events, per-second rows and clips of the daemon writing to `root` (`<output.dir>/<device>`)
    and `clips` (its clips folder; None when clips are off). `pre_roll_seconds`: the clips'
    audio before an event's start, to place a clip on the stream's time axis."""

    KEY = "hour"

    def __init__(self, root: Path, clips: Path | None, pre_roll_seconds: float) -> None:
        super().__init__(root)
        self.clips = clips.resolve() if clips is not None else None
        self.pre_roll_seconds = pre_roll_seconds

    def days(self) -> list[Path]:
        if not self.root.is_dir():  # nothing written yet
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and DAY.match(p.name))

    def _event_files(self) -> dict[str, Path]:
        return {d.name: d / EVENTS_FILE for d in self.days() if (d / EVENTS_FILE).is_file()}

    def _second_files(self) -> dict[str, Path]:
        """`<day>/<hour file stem>` -> the hour's CSV."""
        return {
            f"{d.name}/{p.stem}": p
            for d in self.days()
            for p in d.iterdir()
            if HOUR_FILE.match(p.name)
        }

    def events(self) -> list[Event]:
        """Ended events, each once its clip is on disk.

        A clip is written its post-roll after the event's end, so the newest events wait for
        theirs; an older event whose clip is missing while a later one's is there lost it
        (retention, a full disk) and is shown without audio. Started events are not shown:
        they may still be split or merged."""
        ended = [e for e in super().events() if e.get("type") == "end"]
        if self.clips is None:
            return ended
        shown: list[Event] = []
        later_on_disk = False
        for event in reversed(ended):  # only the newest few are ever looked up on disk
            clip = event.get("clip")
            later_on_disk = later_on_disk or (bool(clip) and Path(str(clip)).is_file())
            if later_on_disk or not clip:
                shown.append(self._in_clip(event) if clip else event)
        return shown[::-1]

    def _in_clip(self, event: Event) -> Event:
        """The event with the audio file its verdicts export against: its clip, which starts
        `recording_start` seconds into the stream (edge/review/export.py)."""
        start = max(0.0, float(event["start_offset"]) - self.pre_roll_seconds)
        return {**event, "recording": event["clip"], "recording_start": start}

    def clip(self, event: Event) -> Path:
        """The event's clip file, inside the clips folder; SoundwatchError naming why not."""
        if self.clips is None:
            raise SoundwatchError("no clip: clips are off (clips: {enabled: true} keeps them)")
        named = str(event.get("clip") or "")
        if not named:
            raise SoundwatchError(f"event {event['id']}: no clip was written for it")
        path = Path(named).resolve()
        if not path.is_relative_to(self.clips):
            raise SoundwatchError(f"event {event['id']}: its clip is outside the clips folder")
        if not path.is_file():
            raise KeyError(f"clip of {event['id']} (removed by retention, or not written yet)")
        return path

    def excerpt(self, event_id: str) -> Excerpt:
        """The event's clip, mono (its channel's audio already: clips are per channel)."""
        event = self.event(event_id)
        if event is None:
            raise KeyError(event_id)
        path = self.clip(event)
        try:
            block, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError, OSError):
            raise SoundwatchError(f"{path.name}: clip not readable") from None
        mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
        return Excerpt(mono, int(rate), float(event["recording_start"]))
