"""Which audio an event's clip holds, and its file name: pure arithmetic on offsets and settings.

For an event that starts at s and ends at e (stream offsets, s) the clip covers

    [max(0, s - pre_roll), min(e + post_roll, s + max_clip)]

so a long event's clip is cut `max_clip_seconds` after its start. Positions are samples of the
current stretch of the stream: audio at one rate from `origin` (s; 0, or where a device came
back at another rate).

Names: `<folder>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSS.mmmZ>_<label>[_ch<n>][_<k>].wav`, by the event's
UTC start (streams without an anchor: `<folder>/<source name>/<offset>s_<label>.wav`); `_<k>`
from 2 on when the name is taken.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from edge.outputs.clips.settings import ClipSettings
from edge.records import Event, iso

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class PlannedClip:
    """An event's clip: samples [first, due) of the stretch; `due` moves earlier when the
    event ends before `max_clip_seconds`."""

    path: Path
    first: int  # stretch sample of the clip's first frame
    due: int  # stretch sample one past its last frame
    ended: bool = False

    @classmethod
    def starting(
        cls, path: Path, start_offset: float, origin: float, settings: ClipSettings, rate_hz: int
    ) -> PlannedClip:
        """The clip of an event starting at `start_offset` (s into the stream), its stretch
        starting at `origin` (s) at `rate_hz`."""
        start = start_offset - origin
        first = max(0, round((start - settings.pre_roll_seconds) * rate_hz))
        due = round((start + settings.max_clip_seconds) * rate_hz)
        return cls(path, first, due)

    def end(self, end_offset: float, origin: float, settings: ClipSettings, rate_hz: int) -> None:
        """The event ended at `end_offset` (s into the stream): the clip stops `post_roll`
        after it, if that is before `max_clip_seconds`. Only the first end counts."""
        if self.ended:
            return
        stop = end_offset + settings.post_roll_seconds - origin
        self.due = min(self.due, max(self.first, round(stop * rate_hz)))
        self.ended = True


def clip_path(folder: Path, event: Event, source: str, taken: Container[Path]) -> Path:
    """A free name for the event's clip under `folder` (see the module docstring): not in
    `taken` (clips planned, not yet written) and not on disk. `source`: the stream's source,
    naming the folder of clips of streams without an anchor."""
    label = _UNSAFE.sub("_", event.label).strip("._") or "event"
    if event.channel is not None:
        label += f"_ch{event.channel}"
    if event.start is not None:
        stamp = iso(event.start)  # 2026-11-22T10:23:14.350Z
        day = stamp[:10]
        base = stamp[:10].replace("-", "") + "T" + stamp[11:23].replace(":", "") + "Z"
    else:
        day = _UNSAFE.sub("_", Path(source).stem).strip("._") or "stream"
        base = f"{event.start_offset:010.3f}s"
    path = folder / day / f"{base}_{label}.wav"
    k = 1
    while path in taken or path.exists():
        k += 1
        path = folder / day / f"{base}_{label}_{k}.wav"
    return path
