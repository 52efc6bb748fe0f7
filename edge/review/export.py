"""Verdicts as annotations the trainer reads (`trainer.annotations`).

For each recording, one SongExplorer CSV (`<wav>-annotated-<reviewer>.csv`, rows
`wav,start_tic,stop_tic,annotated,label`) and one Raven selection table
(`<wav stem>.Table.1.selections.txt`), in a mirror of the scan folder's layout. Labels:
`right` keeps the event's label, `relabel` gives the new one, and `wrong` becomes
`not_<label>`: a negative example of that label, which the trainer's dataset code understands.
Audio is referenced, not copied: the `wav` column and Raven's `Begin File` point at the
original recording, relative to the exported file; for the daemon's events, which have no
recording, at the event's clip (`recording`, with times from the clip's start,
`recording_start` seconds into the stream).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from edge.errors import SoundwatchError
from edge.review.scanfolder import Event
from edge.review.store import Verdict

NEGATIVE_PREFIX = "not_"
_RAVEN_COLUMNS = [
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Begin File",
    "Annotation",
    "Verdict",
    "Reviewer",
]


@dataclass(frozen=True)
class Row:
    recording: Path
    start_seconds: float
    end_seconds: float
    label: str
    verdict: Verdict


def exported_label(event: Event, verdict: Verdict) -> str:
    if verdict.verdict == "relabel" and verdict.label:
        return verdict.label
    if verdict.verdict == "wrong":
        return f"{NEGATIVE_PREFIX}{event['label']}"
    return str(event["label"])


def audio_of(event: Event) -> str:
    """The audio file an event is in: its clip (daemon) or its source recording (scan)."""
    return str(event.get("recording") or event.get("source") or "")


def rows(events: list[Event], verdicts: dict[str, Verdict]) -> list[Row]:
    """One row per judged event with a recording and an end, in recording and time order."""
    found = []
    for event in events:
        verdict = verdicts.get(event["id"])
        if verdict is None or not audio_of(event) or event.get("end_offset") is None:
            continue
        shift = float(event.get("recording_start") or 0.0)
        found.append(
            Row(
                Path(audio_of(event)),
                float(event["start_offset"]) - shift,
                float(event["end_offset"]) - shift,
                exported_label(event, verdict),
                verdict,
            )
        )
    return sorted(found, key=lambda r: (str(r.recording), r.start_seconds))


def export(events: list[Event], verdicts: dict[str, Verdict], folder: Path) -> list[Path]:
    """Write the annotations under `folder`; returns the files written."""
    folder = Path(folder)
    by_recording: dict[Path, list[Row]] = defaultdict(list)
    for row in rows(events, verdicts):
        by_recording[row.recording].append(row)
    keys = {Path(audio_of(e)): e["key"] for e in events if audio_of(e)}
    written: list[Path] = []
    for recording, judged in by_recording.items():
        try:
            rate = int(sf.info(str(recording)).samplerate)
        except (RuntimeError, sf.LibsndfileError, OSError):
            raise SoundwatchError(f"{recording}: recording not readable for export") from None
        place = (folder / keys[recording]).parent
        place.mkdir(parents=True, exist_ok=True)
        written += _songexplorer(recording, judged, rate, place)
        written.append(_raven(recording, judged, place))
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "reviewer"


def _songexplorer(recording: Path, judged: list[Row], rate: int, place: Path) -> list[Path]:
    wav = os.path.relpath(recording, place)
    by_reviewer: dict[str, list[Row]] = defaultdict(list)
    for row in judged:
        by_reviewer[_safe(row.verdict.reviewer)].append(row)
    written = []
    for reviewer, mine in by_reviewer.items():
        path = place / f"{recording.name}-annotated-{reviewer}.csv"
        tics = [(round(r.start_seconds * rate), round(r.end_seconds * rate)) for r in mine]
        lines = [f"{wav},{a},{b},annotated,{r.label}" for (a, b), r in zip(tics, mine, strict=True)]
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def _raven(recording: Path, judged: list[Row], place: Path) -> Path:
    path = place / f"{recording.stem}.Table.1.selections.txt"
    lines = ["\t".join(_RAVEN_COLUMNS)]
    for number, r in enumerate(judged, start=1):
        fields = [number, "Spectrogram 1", 1, f"{r.start_seconds:.3f}", f"{r.end_seconds:.3f}"]
        fields += [os.path.relpath(recording, place), r.label, r.verdict.verdict]
        fields.append(r.verdict.reviewer)
        lines.append("\t".join(str(f) for f in fields))
    path.write_text("\n".join(lines) + "\n")
    return path
