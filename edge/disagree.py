"""Where the deployed model and its shadow disagree: `soundwatch shadow-diff`.

Both write events in the daemon's layout (`<day>/events.jsonl`): the deployed model under
`<output.dir>/<device>/`, the shadow under `<output.dir>/shadow/<device>/` (edge/shadow.py).
An event of one is matched when the other has an event of the same label overlapping it in
time; the rest are the disagreements, listed in time order with their scores. The shadow hears
lane 0 only, so with a detector per channel only the deployed model's channel 0 is compared.
Only the time both listened counts: an event is compared when the other model analysed some
second of it (its per-second rows say so), so the deployed model's events from before the
shadow was added, or while it lagged, are no disagreements.
"""

from __future__ import annotations

import bisect
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from edge.errors import SoundwatchError

HOUR_FILE = re.compile(r"^\d{8}T\d{2}(_ch0)?(-\d+)?\.csv$")  # lane 0's per-second rows
SECOND = timedelta(seconds=1)

Spans = list[tuple[datetime, datetime]]
"""Sorted, disjoint [from, to) stretches of time."""


@dataclass(frozen=True)
class Found:
    start: datetime
    end: datetime
    label: str
    score: float


@dataclass(frozen=True)
class Disagreement:
    found: Found
    only: str  # "deployed" or "shadow": the model that made the event


def read_events(root: Path) -> list[Found]:
    """The finished events (end messages) of lane 0 in every `events.jsonl` under `root`."""
    out = []
    for path in sorted(root.glob("*/events.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                m = json.loads(line)
                if m["type"] != "end" or m.get("channel") not in (None, 0) or not m["end"]:
                    continue
                start, end = _time(m["start"]), _time(m["end"])
                out.append(Found(start, end, str(m["label"]), float(m["score_max"])))
            except (ValueError, KeyError, TypeError):
                raise SoundwatchError(f"{path}:{number}: not an event message") from None
    return out


def analysed_spans(root: Path) -> Spans:
    """The stretches of time lane 0 was analysed, from the per-second CSVs under `root`.

    Rows come in time order within a file and files sort by time, so seconds join the last
    stretch as they are read (weeks of rows never sit in memory); the few stretches are then
    sorted and merged, for files that did not follow on."""
    spans: Spans = []
    for path in sorted(root.glob("*/*.csv")):
        if not HOUR_FILE.match(path.name):
            continue
        with path.open(newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if number == 1 or len(row) < 2 or row[1] != "analysed":
                    continue
                try:
                    t = _time(row[0])
                except ValueError:
                    raise SoundwatchError(f"{path}:{number}: not a per-second row") from None
                if spans and spans[-1][0] <= t <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], t + SECOND))
                else:
                    spans.append((t, t + SECOND))
    merged: Spans = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _heard(e: Found, spans: Spans) -> bool:
    """Does `e` overlap one of `spans`?"""
    i = bisect.bisect_left(spans, (e.end,))  # spans starting at or after the end: too late
    return i > 0 and spans[i - 1][1] > e.start


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def disagreements(
    deployed: list[Found],
    shadow: list[Found],
    heard: tuple[Spans, Spans] | None = None,
) -> tuple[list[Disagreement], dict[str, Counter[str]]]:
    """The events only one model made, in time order; and per label, how many events were
    `both`, `deployed` only and `shadow` only. `heard`: when the deployed model and the shadow
    analysed; an event the other did not hear at all is left out (None: all count)."""
    counts: dict[str, Counter[str]] = {}
    out = []
    pairs = ((deployed, shadow, "deployed", 1), (shadow, deployed, "shadow", 0))
    for mine, theirs, name, other in pairs:
        for e in mine:
            if heard is not None and not _heard(e, heard[other]):
                continue
            matched = any(
                o.label == e.label and o.start < e.end and o.end > e.start for o in theirs
            )
            tally = counts.setdefault(e.label, Counter())
            if not matched:
                out.append(Disagreement(e, name))
                tally[name] += 1
            elif name == "deployed":
                tally["both"] += 1
    return sorted(out, key=lambda d: d.found.start), counts


def compare(
    deployed_root: Path, shadow_root: Path
) -> tuple[list[Disagreement], dict[str, Counter[str]]]:
    """`disagreements` between the events the daemon wrote under the two folders."""
    for root in (deployed_root, shadow_root):
        if not root.is_dir():
            raise SoundwatchError(f"{root}: no such folder (has the daemon run with a shadow?)")
    heard = (analysed_spans(deployed_root), analysed_spans(shadow_root))
    return disagreements(read_events(deployed_root), read_events(shadow_root), heard)


def as_json(deployed_root: Path, shadow_root: Path) -> dict[str, object]:
    """The same as `report`, for the review page's /api/shadow."""
    found, counts = compare(deployed_root, shadow_root)
    return {
        "disagreements": [
            {
                "start": _stamp(d.found.start),
                "end": _stamp(d.found.end),
                "label": d.found.label,
                "score": d.found.score,
                "only": d.only,
            }
            for d in found
        ],
        "counts": {
            label: {k: c[k] for k in ("both", "deployed", "shadow")}
            for label, c in sorted(counts.items())
        },
    }


def report(deployed_root: Path, shadow_root: Path) -> str:
    """The disagreements and the per-label counts, as printed by `soundwatch shadow-diff`."""
    found, counts = compare(deployed_root, shadow_root)
    lines = [
        f"{_stamp(d.found.start)}  {d.found.label}  only {d.only}"
        f"  score {d.found.score:.3f}  ({(d.found.end - d.found.start).total_seconds():.2f} s)"
        for d in found
    ]
    for label, c in sorted(counts.items()):
        lines.append(
            f"{label}: {c['both']} events both, {c['deployed']} only deployed,"
            f" {c['shadow']} only shadow"
        )
    return "\n".join(lines) if lines else "no events from either model yet"
