"""`soundwatch summarize`: what a scan found, per hour and per day, for people with too much
audio to read row by row.

From a `scan --out` folder (read through `edge.review.scanfolder.ScanFolder`, which pairs the
events and counts each hour's seconds by status), into `<folder>/summary/` unless told where:

- `detections_per_hour.csv`: `hour,analysed_seconds,<label>...`, events by the UTC hour they
  start in, for every hour that has audio or events: call density is a label's count over the
  hour's analysed seconds.
- `detections_per_day.csv`: the same per UTC day, every day from the first to the last.
- `coverage_per_day.csv`: `day,analysed_seconds,edge_seconds,gap_seconds,gap_<reason>_seconds...`
  (statuses as in the probabilities CSV: README "What comes out").
- with matplotlib (the `plots` extra): `detections_<label>.png`, a heat map of events by day
  and hour (hours without audio grey, so "no calls" and "not listened" differ), and
  `coverage.png`, a bar per day of analysed, edge and gap hours.

Files without an absolute time (no time in the name, no `--start`) cannot be placed on the
calendar: they are left out, and counted in the line summarize prints.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from edge.audio.levels import UNIT_COLUMNS
from edge.errors import SoundwatchError
from edge.review.scanfolder import SECONDS_SUFFIX, ScanFolder

logger = logging.getLogger(__name__)

_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}):00Z$")  # ScanFolder.coverage's UTC hours
_FIRST_COLUMNS = ("time", "offset_seconds", "status")
_LEVELS = tuple(UNIT_COLUMNS.values())
HEATMAP_WIDTH_IN, HEATMAP_ROW_IN, HEATMAP_MARGIN_IN = 10.0, 0.4, 1.5
COVERAGE_SIZE_IN = (10.0, 4.0)
DPI = 100


@dataclass
class Summary:
    labels: list[str]
    detections: dict[str, Counter[str]]  # hour ("2026-11-22T10:00Z") -> label -> events
    seconds: dict[str, Counter[str]]  # hour -> status ("analysed", "edge", "gap:<reason>")
    untimed_files: int = 0
    written: list[Path] = field(default_factory=list)

    def days(self) -> list[str]:
        """Every UTC day from the first to the last with audio or events."""
        found = sorted({hour[:10] for hour in (*self.detections, *self.seconds)})
        if not found:
            return []
        first, last = date.fromisoformat(found[0]), date.fromisoformat(found[-1])
        return [str(first + timedelta(days=n)) for n in range((last - first).days + 1)]

    def gap_reasons(self) -> list[str]:
        return sorted({s[4:] for c in self.seconds.values() for s in c if s.startswith("gap:")})

    def per_day(self, table: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
        days: dict[str, Counter[str]] = {day: Counter() for day in self.days()}
        for hour, counts in table.items():
            days[hour[:10]].update(counts)
        return days


def summarize(folder: Path) -> Summary:
    """Count the events and seconds of the scan outputs in `folder` by UTC hour."""
    source = ScanFolder(folder)
    keys = source.keys()
    if not keys:
        raise SoundwatchError(f"{folder}: no scan outputs (*.events.jsonl) in it")
    labels: list[str] = []
    for key in keys:
        labels += [
            c for c in _label_columns(source.root / f"{key}{SECONDS_SUFFIX}") if c not in labels
        ]
    detections: dict[str, Counter[str]] = defaultdict(Counter)
    untimed: set[str] = set()
    for event in source.events():
        start = event.get("start")
        if not start:
            untimed.add(event["key"])
            continue
        detections[f"{start[:13]}:00Z"][event["label"]] += 1
        if event["label"] not in labels:
            labels.append(event["label"])
    try:
        coverage = source.coverage()
    except (ValueError, KeyError) as exc:  # a row without its offset, a number that is not one
        raise SoundwatchError(
            f"{folder}: a *{SECONDS_SUFFIX} is not as scan writes it ({exc})"
        ) from None
    seconds: dict[str, Counter[str]] = {}
    for hour in coverage:
        if not _HOUR.match(hour["hour"]):  # "<key> +3h": a file without an absolute time
            untimed.add(hour["hour"].rsplit(" +", 1)[0])
            continue
        counts = Counter({"analysed": hour["analysed"], "edge": hour["edge"]})
        counts.update({f"gap:{reason}": n for reason, n in hour["gaps"].items()})
        seconds[hour["hour"]] = counts
    return Summary(labels, dict(detections), seconds, len(untimed))


def _label_columns(path: Path) -> list[str]:
    """The labels of a probabilities CSV: its columns after the first three, less levels."""
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except OSError:
        return []
    return [
        c
        for c in header
        if c not in _FIRST_COLUMNS and c not in _LEVELS and not c.startswith(_LEVELS)
    ]


def write_csvs(summary: Summary, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    hours = sorted({*summary.detections, *summary.seconds})
    rows = [
        [hour, summary.seconds.get(hour, Counter())["analysed"]]
        + [summary.detections.get(hour, Counter())[label] for label in summary.labels]
        for hour in hours
    ]
    _write(
        summary, to / "detections_per_hour.csv", ["hour", "analysed_seconds", *summary.labels], rows
    )
    per_day_seconds = summary.per_day(summary.seconds)
    per_day_events = summary.per_day(summary.detections)
    rows = [
        [day, per_day_seconds[day]["analysed"]] + [per_day_events[day][x] for x in summary.labels]
        for day in summary.days()
    ]
    _write(
        summary, to / "detections_per_day.csv", ["day", "analysed_seconds", *summary.labels], rows
    )
    reasons = summary.gap_reasons()
    rows = []
    for day, counts in per_day_seconds.items():
        gaps = [counts[f"gap:{r}"] for r in reasons]
        rows.append([day, counts["analysed"], counts["edge"], sum(gaps), *gaps])
    header = ["day", "analysed_seconds", "edge_seconds", "gap_seconds"]
    _write(
        summary, to / "coverage_per_day.csv", header + [f"gap_{r}_seconds" for r in reasons], rows
    )


def _write(summary: Summary, path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    summary.written.append(path)


def write_plots(summary: Summary, to: Path) -> bool:
    """The PNGs; False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed, none opened
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return False
    days = summary.days()
    heard = np.zeros((len(days), 24), dtype=bool)
    for hour, seen in summary.seconds.items():
        if sum(seen.values()):
            heard[days.index(hour[:10]), int(hour[11:13])] = True
    for label in summary.labels:
        grid = np.zeros((len(days), 24))
        for hour, by_label in summary.detections.items():
            grid[days.index(hour[:10]), int(hour[11:13])] += by_label[label]
        height = HEATMAP_MARGIN_IN + HEATMAP_ROW_IN * len(days)
        fig, ax = plt.subplots(figsize=(HEATMAP_WIDTH_IN, height), dpi=DPI)
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("lightgrey")
        image = ax.imshow(np.ma.masked_where(~heard & (grid == 0), grid), cmap=cmap, vmin=0,
                          aspect="auto", interpolation="nearest")  # fmt: skip
        title = f"{label}: detections per hour (grey: no audio)"
        ax.set(xticks=range(0, 24, 2), yticks=range(len(days)), yticklabels=days,
               xlabel="hour (UTC)", title=title)  # fmt: skip
        fig.colorbar(image, ax=ax, label="detections")
        _save(summary, fig, to / f"detections_{_safe(label)}.png")
    per_day = summary.per_day(summary.seconds)
    fig, ax = plt.subplots(figsize=COVERAGE_SIZE_IN, dpi=DPI)
    bottom = np.zeros(len(days))
    for status in ["analysed", "edge", *(f"gap:{r}" for r in summary.gap_reasons())]:
        hours = np.array([per_day[day][status] / 3600 for day in days])
        ax.bar(range(len(days)), hours, bottom=bottom, label=status)
        bottom += hours
    ax.set(xticks=range(len(days)), ylabel="hours", title="coverage per day (UTC)")
    ax.set_xticklabels(days, rotation=45, ha="right")
    ax.legend()
    _save(summary, fig, to / "coverage.png")
    return True


def _save(summary: Summary, fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]  # the size stays; the margins fit the text
    fig.savefig(path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    summary.written.append(path)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", label)
